"""A multi-layer output head after the trunk's final norm (DETR's and YOLOS's 3-layer box and
class MLPs, drawn N(0, 0.02) by Hugging Face): with zero biases and ReLU, scaling each head
weight by s scales the output by s^3 and changes nothing else, so the head's shrink only starts
the predictions near 0. The depth rules take it out (no IA109/IA204) and IA104 is info on its
layers; the same MLP from the input, or behind a norm of the raw input, is a deep stack drawn
small and stays a warning."""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit

WIDTH = 64


def _mlp(std: float, depth: int = 3) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(WIDTH, WIDTH if i < depth - 1 else 4)
        nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()] if i < depth - 1 else [lin]
    return nn.Sequential(*layers)


class TrunkThenHead(nn.Module):
    """A He ReLU trunk, its final LayerNorm, then a 3-layer MLP head drawn N(0, ``std``)."""

    def __init__(self, std: float = 0.02, trunk: int = 4):
        super().__init__()
        torch.manual_seed(0)
        layers: list[nn.Module] = []
        for _ in range(trunk):
            lin = nn.Linear(WIDTH, WIDTH)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            layers += [lin, nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = _mlp(std)

    def forward(self, x):
        return self.head(self.norm(self.trunk(x)))


class NormedInputMlp(nn.Module):
    """A tabular model: a LayerNorm of the raw input, then the same MLP (no trunk before it)."""

    def __init__(self, std: float = 0.02):
        super().__init__()
        torch.manual_seed(0)
        self.norm = nn.LayerNorm(WIDTH)
        self.mlp = _mlp(std, depth=4)

    def forward(self, x):
        return self.mlp(self.norm(x))


def _x() -> torch.Tensor:
    return torch.randn(256, WIDTH, generator=torch.Generator().manual_seed(1))


def _alarms(report, rules=("IA109", "IA204")):
    return [f for f in report.findings if f.rule in rules and f.severity.value in ("warning", "error")]


def test_the_head_shrink_only_scales_the_outputs():
    small = TrunkThenHead(std=0.02)
    with torch.no_grad():
        h = small.norm(small.trunk(_x()))
        hidden = small.head[:4](h)
        assert hidden.std() / h.std() < 0.15, "the head's hidden signal really falls"
        out = small.head(h)
        for lin in small.head[::2]:
            lin.weight.mul_(50)  # each layer at 50x: std 1.0
        rescaled = small.head(h)
    assert torch.allclose(rescaled, out * 50 ** 3, rtol=1e-4, atol=1e-4 * float(rescaled.abs().max()))


def test_a_small_head_after_the_trunk_is_not_a_vanishing_signal(tmp_path):
    model = TrunkThenHead(std=0.02)
    report = initaudit.audit(model, inputs=_x())
    assert _alarms(report) == []
    head = [f for f in report.findings if f.rule == "IA104" and f.layer.startswith("head.")]
    assert head and all(f.severity.value == "info" for f in head)
    path = tmp_path / "detr_head.onnx"
    torch.onnx.export(model, (_x()[:2],), str(path), dynamo=False, opset_version=17)
    assert _alarms(initaudit.audit(str(path))) == []


def test_the_same_mlp_from_the_input_still_vanishes():
    mlp = _mlp(0.02, depth=4)
    report = initaudit.audit(mlp, inputs=_x())
    assert any(f.rule == "IA109" for f in _alarms(report))


def test_a_norm_of_the_raw_input_starts_no_head():
    report = initaudit.audit(NormedInputMlp(0.02), inputs=_x())
    assert any(f.rule == "IA109" for f in _alarms(report))


def test_a_trunk_that_collapses_before_the_head_stays_caught():
    class Collapsing(TrunkThenHead):
        def forward(self, x):
            return self.head(self.trunk(x))  # no norm: the trunk's small scale reaches the head

    model = Collapsing(std=0.02)
    for lin in model.trunk[::2]:
        nn.init.normal_(lin.weight, std=0.02)
    report = initaudit.audit(model, inputs=_x())
    assert any(f.rule == "IA109" for f in _alarms(report))


def test_without_the_head_chain_the_small_head_warns(monkeypatch):
    """The healthy case fails without the notion: with no head layers, the head 'vanishes'."""
    import initaudit.heads as heads

    monkeypatch.setattr(heads, "head_layers", lambda *a: set())
    assert _alarms(initaudit.audit(TrunkThenHead(std=0.02), inputs=_x()))
