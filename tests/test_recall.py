"""Recall of textbook initialisation defects in small plain torch.nn stacks, audited as the live
module and as an ONNX export: each case first measures, with a forward or backward pass, that
its defect is real, then asserts that the right rule fires at the right layer with the right
severity. Healthy controls built the same way stay free of warnings and errors."""

from __future__ import annotations

import copy
import functools
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import onnx
import pytest
import torch
from torch import nn

from onnx_models import export
from zoo.forms import audit_form


def _mlp(depth: int, init: Callable[[nn.Linear], None], width: int = 32) -> nn.Sequential:
    """depth x (Linear, ReLU), then a Linear head; indices 0, 2, ... are the Linears."""
    layers: list[nn.Module] = []
    d = 16
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.ReLU()]
        d = width
    model = nn.Sequential(*layers, nn.Linear(d, 4))
    for m in model:
        if isinstance(m, nn.Linear):
            init(m)
    return model


def _he(m: nn.Linear) -> None:
    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    nn.init.zeros_(m.bias)


def _std1(m: nn.Linear) -> None:
    nn.init.normal_(m.weight, std=1.0)
    nn.init.zeros_(m.bias)


def _xavier(m: nn.Linear) -> None:
    nn.init.xavier_normal_(m.weight)
    nn.init.zeros_(m.bias)


def _ln(act: type[nn.Module] = nn.ReLU, zero_bias_before: bool = False) -> nn.Sequential:
    """Linear -> LayerNorm with gamma = 0 -> act -> head."""
    model = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), act(), nn.Linear(32, 4))
    nn.init.zeros_(model[1].weight)
    if zero_bias_before:  # equal to the LN's zero beta and gamma: the exporter stores them once
        nn.init.zeros_(model[0].bias)
    return model


def _conv(bias: float | None = None, scale: float | None = None) -> nn.Sequential:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    with torch.no_grad():
        if bias is not None:
            model[2].bias.fill_(bias)
        if scale is not None:
            model[2].weight.mul_(scale)
    return model


def _edit(build: Callable[[], nn.Module], edit: Callable[[nn.Module], None]) -> Callable[[], nn.Module]:
    def make() -> nn.Module:
        model = build()
        with torch.no_grad():
            edit(model)
        return model
    return make


def _copy_rows(m: nn.Sequential) -> None:
    m[2].weight[16:] = m[2].weight[:16]
    m[2].bias[16:] = m[2].bias[:16]


def _nan(m: nn.Sequential) -> None:
    m[2].weight[0, 0] = float("nan")


# --- measurements: the defect is real ---------------------------------------------------------

def _outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The output of every top-level module of a Sequential."""
    outs, h = [], x
    with torch.no_grad():
        for m in model:
            h = m(h)
            outs.append(h)
    return outs


def _grad_norm(model: nn.Module, x: torch.Tensor, name: str) -> float:
    """||dL/dw|| for L = sum(r * y), r ~ N(0, 1) (the probe's loss)."""
    model = copy.deepcopy(model)
    y = model(x)
    (y * torch.randn(y.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    return float(dict(model.named_parameters())[name].grad.norm())


def _ln_cut_for_good(m, x) -> bool:
    """gamma = 0 before ReLU: the ReLU output is 0 on every sample and gamma's gradient is 0."""
    return float(_outputs(m, x)[2].abs().max()) == 0.0 and _grad_norm(m, x, "1.weight") == 0.0


def _ln_recovers(m, x) -> bool:
    """gamma = 0 before tanh: the layer outputs tanh(beta) = 0, yet gamma gets a gradient."""
    return float(_outputs(m, x)[2].abs().max()) == 0.0 and _grad_norm(m, x, "1.weight") > 0.1


def _zero_layer(m, x) -> bool:
    """The zero hidden layer outputs its (zero) bias on every sample; its weight gets no gradient."""
    return float(_outputs(m, x)[2].std(0).max()) == 0.0 and _grad_norm(m, x, "2.weight") == 0.0


def _explodes(m, x) -> bool:
    return float(_outputs(m, x)[-1].std()) > 1e4 * float(x.std())


def _vanishes(m, x) -> bool:
    """Xavier before ReLU halves the second moment at every layer: 2^-(depth/2) of the spread."""
    outs = _outputs(m, x)
    return float(outs[-2].std()) < 0.1 * float(outs[1].std())


def _copies(m, x) -> bool:
    y = _outputs(m, x)[2]
    return torch.equal(y[:, 16:], y[:, :16])


def _nonfinite(m, x) -> bool:
    return bool(torch.isnan(_outputs(m, x)[-1]).any())


def _conv_dead(m, x) -> bool:
    return float(_outputs(m, x)[3].abs().max()) == 0.0


def _conv_grows(m, x) -> bool:
    outs = _outputs(m, x)
    return float(outs[2].std()) > 10 * float(outs[0].std())


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    measure: Callable[[nn.Module, torch.Tensor], bool]
    rule: str
    layer: str  # module index (probe rules) or parameter name (static rules)
    severity: str
    image: bool = False


CASES = {
    "ln-gamma-zero-before-relu": Case(_ln, _ln_cut_for_good, "IA108", "1.weight", "error"),
    "ln-gamma-zero-before-tanh": Case(lambda: _ln(nn.Tanh), _ln_recovers, "IA108", "1.weight", "warning"),
    "ln-gamma-zero-merged-with-a-bias": Case(lambda: _ln(zero_bias_before=True), _ln_cut_for_good,
                                             "IA108", "1.weight", "error"),
    "zeroed-hidden-weight": Case(_edit(lambda: _mlp(3, _he), lambda m: nn.init.zeros_(m[2].weight)),
                                 _zero_layer, "IA102", "2.weight", "error"),
    "normal-1-deep-relu": Case(lambda: _mlp(8, _std1), _explodes, "IA110", "16", "error"),
    "xavier-before-relu-deep": Case(lambda: _mlp(12, _xavier), _vanishes, "IA104", "2.weight", "warning"),
    "copied-rows": Case(_edit(lambda: _mlp(3, _he), _copy_rows), _copies, "IA103", "2.weight", "error"),
    "nan-weight": Case(_edit(lambda: _mlp(3, _he), _nan), _nonfinite, "IA101", "2.weight", "error"),
    "conv-bias-minus-10-before-relu": Case(lambda: _conv(bias=-10.0), _conv_dead, "IA203", "2", "error", True),
    "conv-weight-x30": Case(lambda: _conv(scale=30.0), _conv_grows, "IA110", "2", "warning", True),
}

HEALTHY = {
    "he-mlp": lambda: _mlp(6, _he),
    "layernorm-mlp": lambda: nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 4)),
    "conv-net": _conv,
}


def _inputs(image: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.randn((8, 3, 8, 8) if image else (8, 16), generator=g)


@functools.cache
def _model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return (CASES[name].build if name in CASES else HEALTHY[name])()


def _audit(form: str, model: nn.Module, x: torch.Tensor, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit_form(form, model, x, tmp_path)


def _named(layer: str, expected: str) -> bool:
    """A finding's layer is the module's path, or on ONNX the exporter's node ``/i/Op``."""
    return layer == expected or layer.startswith(f"/{expected}/")


@pytest.mark.parametrize("form", ["module", "onnx"])
@pytest.mark.parametrize("name", list(CASES))
def test_textbook_defect_found(name, form, tmp_path):
    case = CASES[name]
    model, x = _model(name), _inputs(case.image)
    assert case.measure(model, x), f"{name}: the defect is not real"
    report = _audit(form, model, x, tmp_path)
    got = [(f.severity.value, f.rule, f.layer) for f in report.findings]
    hits = [f for f in report.findings if f.rule == case.rule and _named(f.layer, case.layer)]
    assert hits, f"{name} ({form}): no {case.rule} at {case.layer}: {got}"
    assert hits[0].severity.value == case.severity, f"{name} ({form}): {got}"


@pytest.mark.parametrize("form", ["module", "onnx"])
@pytest.mark.parametrize("name", list(HEALTHY))
def test_healthy_control_clean(name, form, tmp_path):
    model = _model(name)
    report = _audit(form, model, _inputs(name == "conv-net"), tmp_path)
    bad = [(f.severity.value, f.rule, f.layer, f.message) for f in report.findings
           if f.severity.value in ("error", "warning")]
    assert not bad, bad


def test_zero_gamma_gradient_evidence(tmp_path):
    """IA108's split: measured by the backward probe on the module; derived on ONNX (no backward
    pass) from relu'(beta) = 0 on every unit. Both agree with torch's own gradient."""
    for name, zero in (("ln-gamma-zero-before-relu", True), ("ln-gamma-zero-before-tanh", False)):
        model, x = _model(name), _inputs(False)
        assert (_grad_norm(model, x, "1.weight") == 0.0) is zero
        for form, source in (("module", "||dL/dgamma||"), ("onnx", "derived")):
            f = next(f for f in _audit(form, model, x, tmp_path).findings if f.rule == "IA108")
            assert f.evidence["gamma_gradient_zero"] is zero, (form, f.evidence)
            assert f.evidence["gamma_gradient_source"].startswith(source), (form, f.evidence)


class _NormBeforeItsBias(nn.Module):
    """The Linear whose zero bias the zero gamma is merged into is defined first, so the
    exporter keeps its name for the stored tensor, but runs after the norm."""

    def __init__(self):
        super().__init__()
        self.proj, self.inp, self.norm, self.head = nn.Linear(32, 32), nn.Linear(16, 32), nn.LayerNorm(32), \
            nn.Linear(32, 4)
        nn.init.zeros_(self.proj.bias)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x):
        return self.head(torch.relu(self.proj(torch.relu(self.norm(self.inp(x))))))


@pytest.mark.parametrize("opset", [13, 17])  # decomposed LayerNorm / LayerNormalization
@pytest.mark.parametrize("order", ["bias-first", "norm-first"])
def test_merged_initializer_keeps_norm_role(order, opset, tmp_path):
    """The exporter stores equal-valued tensors once: the zero gamma and beta become Identity
    outputs of the zero Linear bias (or that bias an Identity of the kept tensor). The norm's
    scale keeps its role and its own name (IA108 fires there, as on the module) and the
    Linear's bias is not reported in its place."""
    torch.manual_seed(0)
    if order == "bias-first":
        model, gamma = _model("ln-gamma-zero-merged-with-a-bias"), "1.weight"
    else:
        model, gamma = _NormBeforeItsBias(), "norm.weight"
    x = _inputs(False)
    assert _grad_norm(model, x, gamma) == 0.0
    path = export(copy.deepcopy(model), (x,), tmp_path / "m.onnx", opset=opset)
    graph = onnx.load(str(path)).graph
    assert gamma not in {t.name for t in graph.initializer}
    assert any(n.op_type == "Identity" and n.output[0] == gamma for n in graph.node)
    import initaudit

    for report in (initaudit.audit(path, inputs=(x,)), _audit("module", model, x, tmp_path)):
        ia108 = [f for f in report.findings if f.rule == "IA108"]
        assert [(f.layer, f.severity.value) for f in ia108] == [(gamma, "error")], report.findings


def test_unused_layer_not_in_onnx(tmp_path):
    """A layer forward never calls: IA209 on the module; the exporter drops it from the ONNX
    file, so there is nothing to report there (README, 'What it reads')."""
    class Spare(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b, self.spare = nn.Linear(16, 32), nn.Linear(32, 4), nn.Linear(32, 32)

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    torch.manual_seed(0)
    model, x = Spare(), _inputs(False)
    assert [f.layer for f in _audit("module", model, x, tmp_path).findings if f.rule == "IA209"] == ["spare"]
    path = export(copy.deepcopy(model), (x,), tmp_path / "m.onnx")
    assert not [t.name for t in onnx.load(str(path)).graph.initializer if t.name.startswith("spare")]


def test_zero_gamma_with_a_second_consumer_is_not_derived_dead(tmp_path):
    """gamma = 0 before ReLU, but the norm's output also feeds a Linear directly: that path
    carries a gradient to gamma (measured), so it is a warning on every form; the ONNX
    derivation from relu'(beta) does not apply to a norm with another consumer."""
    class TwoPaths(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.ln, self.b, self.c = nn.Linear(16, 32), nn.LayerNorm(32), nn.Linear(32, 4), nn.Linear(32, 4)
            nn.init.zeros_(self.ln.weight)

        def forward(self, x):
            h = self.ln(self.a(x))
            return self.b(torch.relu(h)) + self.c(h)

    torch.manual_seed(0)
    model, x = TwoPaths(), _inputs(False)
    assert _grad_norm(model, x, "ln.weight") > 0.1
    for form in ("module", "onnx"):
        (f,) = [f for f in _audit(form, model, x, tmp_path).findings if f.rule == "IA108"]
        assert f.severity.value == "warning", (form, f.message)
        assert f.evidence["gamma_gradient_zero"] is (False if form == "module" else None), (form, f.evidence)
