"""Written-out hardswish and hardsigmoid (``x * relu6(x + 3) / 6``, ``relu6(x + 3) / 6``, as
MobileNetV3 code writes them) and L2 normalisation (``x / x.norm(dim=-1, keepdim=True)``, CLIP's
normalised embeddings) are recognised by the one recogniser (initaudit.patterns), in the torch
recorded dataflow and in ONNX exports alike; near misses are not."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initaudit
from initaudit.engine import Settings

WIDTH = 32


def _write(form: str, h: torch.Tensor, relu6: nn.Module) -> torch.Tensor:
    if form == "hardswish":
        return h * F.relu6(h + 3) / 6
    if form == "hardswish-module":
        return h * relu6(h + 3.0) / 6.0
    if form == "hardswish-inner":
        return h * (F.relu6(h + 3) / 6)
    if form == "hardsigmoid":
        return F.relu6(h + 3) / 6
    if form == "hardsigmoid-hardtanh":
        return F.hardtanh(h + 3, 0.0, 6.0) * (1 / 6)
    if form == "l2":
        return h / h.norm(dim=-1, keepdim=True)
    if form == "l2-eps":
        return h / h.norm(p=2, dim=-1, keepdim=True).clamp_min(1e-6)
    if form == "normalize":
        return F.normalize(h, dim=-1)
    if form == "l2-clip":  # transformers' CLIP: _get_vector_norm
        return h / torch.pow(torch.sum(torch.pow(h, 2), dim=-1, keepdim=True), 0.5)
    if form == "l2-rsqrt":
        return h * torch.rsqrt((h * h).sum(-1, keepdim=True) + 1e-6)
    if form == "l1":  # near misses: not the patterns
        return h / h.norm(p=1, dim=-1, keepdim=True)
    if form == "relu6-shift2":
        return F.relu6(h + 2) / 6
    raise ValueError(form)


class Written(nn.Module):
    """``depth`` Linear layers, each followed by ``form`` written out; a Linear head."""

    def __init__(self, form: str, std: float | None = None, depth: int = 1):
        super().__init__()
        torch.manual_seed(0)
        self.form = form
        self.layers = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(depth))
        self.head = nn.Linear(WIDTH, 4)
        self.relu6 = nn.ReLU6()
        for lin in self.layers:
            if std is not None:
                nn.init.normal_(lin.weight, std=std)
                nn.init.zeros_(lin.bias)

    def forward(self, x):
        for lin in self.layers:
            x = _write(self.form, lin(x), self.relu6)
        return self.head(x)


def inputs() -> torch.Tensor:
    return torch.randn(16, WIDTH, generator=torch.Generator().manual_seed(0))


def rows(model: nn.Module, form: str, tmp_path) -> dict:
    if form == "onnx":
        path = tmp_path / "m.onnx"
        torch.onnx.export(model, (inputs(),), str(path), dynamo=False, opset_version=17)
        report = initaudit.audit(path, settings=Settings(probe_enabled=False))
        return report.layers[0]
    return initaudit.audit(model, inputs=inputs(), settings=Settings(probe_enabled=False)).layers[0]


ACTS = {"hardswish": "hardswish", "hardswish-module": "hardswish", "hardswish-inner": "hardswish",
        "hardsigmoid": "hardsigmoid", "hardsigmoid-hardtanh": "hardsigmoid"}


@pytest.mark.parametrize("target", ["torch", "onnx"])
@pytest.mark.parametrize("form", list(ACTS))
def test_written_out_hard_activations(form, target, tmp_path):
    row = rows(Written(form), target, tmp_path)
    assert row["activation"] == ACTS[form] and not row["normalized_after"]


@pytest.mark.parametrize("target", ["torch", "onnx"])
@pytest.mark.parametrize("form", ["l2", "l2-eps", "normalize", "l2-clip", "l2-rsqrt"])
def test_l2_normalisation_is_a_normalisation(form, target, tmp_path):
    row = rows(Written(form), target, tmp_path)
    assert row["normalized_after"] and row["follows_unknown_op"] is None and row["activation"] is None


@pytest.mark.parametrize("target", ["torch", "onnx"])
def test_near_misses_are_not_the_patterns(target, tmp_path):
    l1 = rows(Written("l1"), target, tmp_path)
    assert not l1["normalized_after"] and l1["follows_unknown_op"]  # an L1 norm is modelled by nothing
    shifted = rows(Written("relu6-shift2"), target, tmp_path)
    assert shifted["activation"] == "relu6"  # relu6(x + 2) / 6 is no hardsigmoid


def _ia104(model) -> dict:
    report = initaudit.audit(model, inputs=inputs(), settings=Settings(probe_enabled=False, select=["IA104"]))
    return {f.layer: f.severity.value for f in report.findings}


def test_a_small_init_before_a_written_hardswish_is_caught_and_he_is_clean():
    """N(0, 0.01) in a 10-layer written-out hardswish stack: every layer before the head input
    warns (He with a ReLU-family gain is expected); kaiming_normal_ (relu) stays quiet."""
    small = _ia104(Written("hardswish", std=0.01, depth=10))
    assert all(small[f"layers.{i}.weight"] == "warning" for i in range(10))
    he = Written("hardswish", depth=10)
    for lin in he.layers:
        nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
    assert [s for s in _ia104(he).values() if s != "info"] == []


def test_what_follows_an_l2_normalisation_is_judged_as_normalised():
    """A projection at N(0, 0.01) before ``x / ||x||`` (CLIP's image and text projections): the
    normalisation removes its forward scale, so the mismatch is info, where before an unknown op
    it is judged as outside every scheme."""
    normed = _ia104(Written("l2", std=0.01))
    assert normed["layers.0.weight"] == "info"
