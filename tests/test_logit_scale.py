"""The attention logits' scale is read from the graph, not assumed to be 1/sqrt(d): T5 divides
by nothing and folds the scale into its query's init ((d_model d_kv)^-1/2), so its logits are
at the schemes' spread; the same unscaled attention with queries and keys at the usual init
saturates the softmax and is caught, in the torch forms and in ONNX."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initaudit
from initaudit.engine import Settings
from initaudit.attention_scores import attention_logit_scales
from initaudit.loaders.target import load_target
from initaudit.probe import ProbeOptions, capture_graph

D, T, B = 64, 16, 8  # one head: d = 64, sqrt(d) = 8


class Block(nn.Module):
    """LN -> single-head self-attention (``scaling``: how Q K^T is scaled) -> residual add."""

    def __init__(self, scaling: str, q_std: float, k_std: float):
        super().__init__()
        self.scaling = scaling
        self.norm = nn.LayerNorm(D)
        self.q, self.k, self.v, self.o = (nn.Linear(D, D, bias=False) for _ in range(4))
        for lin, std in ((self.q, q_std), (self.k, k_std), (self.v, D ** -0.5), (self.o, D ** -0.5)):
            nn.init.normal_(lin.weight, std=std)
        self.last = None

    def forward(self, x):
        h = self.norm(x)
        q, k, v = self.q(h), self.k(h), self.v(h)
        if self.scaling == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v)
        else:
            if self.scaling == "q":
                q = q * D ** -0.5
            scores = q @ k.transpose(-1, -2)
            if self.scaling == "div":
                scores = scores / math.sqrt(D)
            self.last = scores.softmax(-1)
            a = self.last @ v
        return x + self.o(a)


class Model(nn.Module):
    def __init__(self, scaling: str, q_std: float = D ** -0.5, k_std: float = D ** -0.5, blocks: int = 2):
        super().__init__()
        torch.manual_seed(0)
        self.blocks = nn.ModuleList(Block(scaling, q_std, k_std) for _ in range(blocks))
        self.head = nn.Linear(D, 10)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.head(x)


def inputs() -> torch.Tensor:
    return torch.randn(B, T, D, generator=torch.Generator().manual_seed(0))


T5_QUERY = (D * D) ** -0.5  # (d_model d_kv)^-1/2 with d_kv = d_model = 64


def scores_findings(target) -> dict:
    kw = {"inputs": inputs()} if isinstance(target, nn.Module) else {}
    report = initaudit.audit(target, settings=Settings(probe_enabled=False, select=["IA104"]), **kw)
    return {f.layer: f for f in report.findings if "attention_logits_factor" in f.evidence}


def _max_attention(model) -> float:
    with torch.no_grad():
        model.eval()(inputs())
    return model.blocks[0].last.max(-1).values.mean().item()


@pytest.mark.parametrize("scaling, expected", [("div", 1.0), ("q", 1.0), ("sdpa", 1.0), ("none", 8.0)])
def test_the_scale_is_read_from_the_graph(scaling, expected):
    graph, _ = load_target(Model(scaling))
    capture_graph(graph, ProbeOptions(inputs=inputs()))
    assert graph.capture == "trace"
    scales = attention_logit_scales(graph)
    assert scales and all(s == pytest.approx(expected, rel=1e-3) for s in scales.values())


def test_t5_folded_scale_is_at_the_schemes_spread_and_info():
    model = Model("none", q_std=T5_QUERY)
    found = scores_findings(model)
    q = found["blocks.0.q.weight"]
    assert q.severity.value == "info"
    assert q.evidence["ratio"] == pytest.approx(1 / 8, rel=0.1)  # 1/sqrt(d) below LeCun
    assert q.evidence["attention_logits_factor"] == pytest.approx(1.0, rel=0.1)  # not 1/8
    assert q.evidence["attention_logit_scale"] == pytest.approx(8.0, rel=1e-3)
    assert _max_attention(model) < 0.3  # measured: the softmax starts spread out (16 tokens)


def test_unscaled_attention_at_the_usual_init_saturates_and_is_caught():
    """Planted: T5's unscaled Q K^T with the query at LeCun (the folded scale forgotten): q and k
    each fit their scheme, but the logits are at sqrt(d) = 8x the schemes' spread, and the
    measured softmax is near one-hot."""
    model = Model("none")
    found = scores_findings(model)
    assert {"blocks.0.q.weight", "blocks.0.k.weight", "blocks.1.q.weight"} <= set(found)
    for f in found.values():
        assert f.severity.value == "warning" and "softmax starts sharper" in f.message
        assert f.evidence["attention_logits_factor"] == pytest.approx(8.0, rel=0.15)
    assert _max_attention(model) > 0.5


def test_scaled_attention_at_the_usual_init_is_clean():
    for scaling in ("div", "q", "sdpa"):
        assert scores_findings(Model(scaling)) == {}, scaling


def test_onnx_reads_the_same_scale(tmp_path):
    for scaling, expected in (("div", 1.0), ("none", 8.0)):
        path = tmp_path / f"{scaling}.onnx"
        torch.onnx.export(Model(scaling).eval(), (inputs(),), str(path), dynamo=False, opset_version=17)
        graph, _ = load_target(path)
        scales = attention_logit_scales(graph)
        assert scales and all(s == pytest.approx(expected, rel=1e-3) for s in scales.values()), scaling
    path = tmp_path / "t5.onnx"
    torch.onnx.export(Model("none", q_std=T5_QUERY).eval(), (inputs(),), str(path), dynamo=False, opset_version=17)
    q = [f for f in scores_findings(path).values() if f.evidence["attention_logit_scale"] > 7]
    assert q and all(f.severity.value == "info" and f.evidence["attention_logits_factor"] < 1.2 for f in q)
