"""Depth rules (IA109 predicted, IA204 measured) on side branches: residual branches, gates and
attention scores are small by design, since the trunk they add to or scale carries the signal
past them; the same layers on the main path, or a gate that really closes, stay caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initaudit
from initaudit.graph import Node, merge_trunks, side_branch_nodes

TOKENS, WIDTH = 8, 64


class Attention(nn.Module):
    """Single-head attention with value and output projections at ``std``."""

    def __init__(self, std: float):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(WIDTH, WIDTH, bias=False) for _ in range(4))
        for lin in (self.q, self.k):
            nn.init.xavier_normal_(lin.weight)
        for lin in (self.v, self.o):
            nn.init.normal_(lin.weight, std=std)

    def forward(self, x):
        return self.o(F.scaled_dot_product_attention(self.q(x), self.k(x), self.v(x)))


class AttentionStack(nn.Module):
    """An input projection at N(0, 0.02) (ALBERT's and ELECTRA's embedding projection), then
    post-norm blocks ``norm(x + attn(x))`` (``residual``) or a plain chain ``attn(attn(x))``."""

    def __init__(self, std: float, residual: bool, blocks: int = 3):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(WIDTH, WIDTH, bias=False)
        nn.init.normal_(self.inp.weight, std=0.02)
        self.blocks = nn.ModuleList(Attention(std) for _ in range(blocks))
        self.norms = nn.ModuleList(nn.LayerNorm(WIDTH) for _ in range(blocks))
        self.residual = residual

    def forward(self, x):
        x = self.inp(x)
        for attn, norm in zip(self.blocks, self.norms):
            x = norm(x + attn(x)) if self.residual else attn(x)
        return x


class SqueezeExcite(nn.Module):
    """x * sigmoid(expand(relu(reduce(mean(x))))), expand at N(0, 0.01): the gate starts near
    sigmoid(0) = 1/2 for every input, unless its bias closes it."""

    def __init__(self, channels: int, gate_bias: float):
        super().__init__()
        self.reduce = nn.Conv2d(channels, channels // 4, 1)
        self.expand = nn.Conv2d(channels // 4, channels, 1)
        nn.init.kaiming_normal_(self.reduce.weight, nonlinearity="relu")
        nn.init.zeros_(self.reduce.bias)
        nn.init.normal_(self.expand.weight, std=0.01)
        nn.init.constant_(self.expand.bias, gate_bias)

    def forward(self, x):
        g = self.expand(F.relu(self.reduce(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(g)


class SENet(nn.Module):
    """conv-BN-ReLU, a squeeze-excite gate, then a 1x1 conv and a head (He init)."""

    def __init__(self, gate_bias: float):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU())
        self.se = SqueezeExcite(32, gate_bias)
        self.pw = nn.Conv2d(32, 32, 1)
        self.head = nn.Linear(32, 10)
        for m in (self.stem[0], self.pw, self.head):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x = F.relu(self.pw(self.se(self.stem(x))))
        return self.head(x.mean((2, 3)))


def depth_findings(model, x):
    report = initaudit.audit(model, inputs=x, config=False)
    assert report.probe.ran, report.probe.skipped_reason
    return {f.rule: f for f in report.findings if f.rule in ("IA109", "IA204")
            and f.severity.value != "info"}


def tokens():
    return torch.randn(16, TOKENS, WIDTH, generator=torch.Generator().manual_seed(0))


def images():
    return torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _spread(module, model, x):
    got = []
    h = module.register_forward_hook(lambda m, a, out: got.append(out.std().item()))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        h.remove()
    return got[0] / x.std().item()


def test_small_values_on_the_main_path_of_an_attention_chain_are_caught():
    """No skip: each block's v and o (std 0.01, fan_in 64) multiply the spread by 0.08 and
    attention averages it over the tokens: the signal is gone by the second block."""
    model = AttentionStack(0.01, residual=False)
    x = tokens()
    measured = _spread(model.blocks[1].v, model, x)
    assert measured < 1e-3  # the defect is real
    found = depth_findings(model, x)
    assert found["IA109"].severity.value == "error" and found["IA204"].severity.value == "error"
    assert found["IA204"].evidence["ratio"] < 0.01


def test_the_same_values_inside_residual_branches_are_by_design():
    """With the skip, the stream keeps its spread (LayerNorm after each add): the small v and o
    only make each branch's contribution small at init, as BERT's 0.02 does at small width."""
    model = AttentionStack(0.01, residual=True)
    x = tokens()
    assert _spread(model.blocks[0].v, model, x) < 0.02  # small inside the branch, measured
    assert _spread(model.norms[2], model, x) > 0.5  # the stream itself is intact
    assert depth_findings(model, x) == {}


def test_a_squeeze_excite_gate_at_one_half_is_healthy():
    model = SENet(gate_bias=0.0)
    x = images()
    assert _spread(model.se.expand, model, x) < 0.05  # the gate's input is small, measured
    assert _spread(model.pw, model, x) > 0.2  # the trunk is not
    assert depth_findings(model, x) == {}


def test_a_closed_squeeze_excite_gate_collapses_the_trunk_and_is_caught():
    """expand.bias = -10: sigmoid(-10) = 4.5e-5 multiplies every channel of the trunk."""
    model = SENet(gate_bias=-10.0)
    x = images()
    assert _spread(model.pw, model, x) < 1e-3  # the defect is real
    found = depth_findings(model, x)
    assert found["IA109"].severity.value == "error" and found["IA109"].layer == "pw"
    assert found["IA204"].severity.value == "error" and found["IA204"].evidence["param"] == "pw.weight"


def _node(name, kind, *inputs):
    return Node(name, kind, list(inputs))


def test_trunks_are_the_input_the_others_descend_from():
    nodes = [_node("x", "input"), _node("f", "layer", "x"), _node("g", "layer", "x"),
             _node("res", "add", "x", "f"), _node("par", "mul", "f", "g"), _node("out", "output", "res", "par")]
    assert merge_trunks(nodes) == {"res": "x"}  # f(x) * g(x): parallel branches, no trunk


@pytest.mark.parametrize("attention_input,side", [(0, True), (2, False)])
def test_attention_scores_are_a_side_branch_and_values_are_not(attention_input, side):
    nodes = [_node("x", "input"), _node("q", "layer", "x"), _node("k", "layer", "x"),
             _node("v", "layer", "x"), _node("attn", "attention", "q", "k", "v"), _node("out", "output", "attn")]
    name = nodes[1 + attention_input].name
    assert (name in side_branch_nodes(nodes)) is side
