"""The static rules on ONNX files, through ``initaudit.audit(path)``: real defects are found,
healthy controls (DESIGN section 6) stay free of errors and warnings, and an exported model
gets the same findings as the module it came from."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.rule import Severity
from onnx_models import TinyGPT, TinyResNet, export, mlp_onnx, rng, torch_mlp


def audit(target, probe: bool = False):
    return initaudit.audit(target, probe_enabled=probe)


def _alarms(report):
    return [(f.rule, f.severity.value, f.layer, f.message) for f in report.findings
            if f.severity in (Severity.ERROR, Severity.WARNING)]


def _codes(report, severity=None):
    return {f.rule for f in report.findings if severity is None or f.severity.value == severity}


# ---- defects --------------------------------------------------------------------------------


def test_zero_hidden_weight(tmp_path):
    r = audit(mlp_onnx(tmp_path / "z.onnx", depth=4, width=64, weights={1: np.zeros((64, 64))}))
    hits = [f for f in r.findings if f.rule == "IA102"]
    assert [(f.layer, f.severity) for f in hits] == [("fc1.weight", Severity.ERROR)]
    assert "relu" in hits[0].message
    assert r.exit_code == 1


def test_zero_output_head_is_legitimate(tmp_path):
    r = audit(mlp_onnx(tmp_path / "h.onnx", depth=4, width=64, d_out=10, weights={3: np.zeros((10, 64))}))
    assert not _alarms(r)
    assert [(f.rule, f.severity) for f in r.findings if f.layer == "fc3.weight"] == [("IA102", Severity.INFO)]


def test_zero_output_head_is_legitimate_with_the_forward_only_probe(tmp_path):
    r = audit(mlp_onnx(tmp_path / "h.onnx", depth=4, width=64, d_out=10, weights={3: np.zeros((10, 64))}),
              probe=True)
    assert r.probe.ran and r.probe.grads is None  # ONNX: no backward pass
    assert not _alarms(r)
    ia208 = [f for f in r.findings if f.rule == "IA208"]
    assert ia208 and {f.severity for f in ia208} == {Severity.INFO}  # copies, but legitimately so


def test_deep_relu_with_unit_normal_weights(tmp_path):
    r = audit(mlp_onnx(tmp_path / "n.onnx", depth=6, width=100, std=1.0))
    assert "IA110" in _codes(r, "error")
    scale = [f for f in r.findings if f.rule == "IA104"]
    assert {f.layer for f in scale} >= {f"fc{i}.weight" for i in range(5)}
    assert all(f.evidence["expected_std"] == pytest.approx(math.sqrt(2 / 100)) for f in scale[:5])


def test_duplicated_rows(tmp_path):
    w = rng(3).standard_normal((64, 64)) * math.sqrt(2 / 64)
    w[32:] = w[:32]
    r = audit(mlp_onnx(tmp_path / "d.onnx", depth=4, width=64, weights={1: w}))
    hits = [f for f in r.findings if f.rule == "IA103"]
    assert [f.layer for f in hits] == ["fc1.weight"] and hits[0].evidence["duplicate_rows"] == 32


def test_duplicated_rows_matmul_in_out_layout(tmp_path):
    """Units are columns of an (in, out) MatMul weight: copies must be found there."""
    w = rng(4).standard_normal((64, 64)) * math.sqrt(2 / 64)
    w[16:32] = w[:16]  # (out, in) rows -> stored transposed as columns
    r = audit(mlp_onnx(tmp_path / "d.onnx", depth=3, width=64, op="MatMul", weights={1: w}))
    hits = [f for f in r.findings if f.rule == "IA103"]
    assert [f.layer for f in hits] == ["fc1.weight"] and hits[0].evidence["duplicate_rows"] == 16


def test_nan_weight(tmp_path):
    w = rng(5).standard_normal((64, 64)) * math.sqrt(2 / 64)
    w[3, 4] = np.nan
    r = audit(mlp_onnx(tmp_path / "nan.onnx", depth=3, width=64, weights={1: w}))
    assert [(f.rule, f.layer) for f in r.findings if f.rule == "IA101"] == [("IA101", "fc1.weight")]
    assert r.exit_code == 1


def test_nan_in_external_data(tmp_path):
    w = rng(6).standard_normal((64, 64)) * math.sqrt(2 / 64)
    w[0, 0] = np.inf
    r = audit(mlp_onnx(tmp_path / "ext.onnx", depth=3, width=64, weights={2: w}, external=True))
    assert [(f.rule, f.layer) for f in r.findings if f.rule == "IA101"] == [("IA101", "fc2.weight")]


def test_tanh_small_init_vanishes(tmp_path):
    r = audit(mlp_onnx(tmp_path / "t.onnx", depth=5, width=100, act="Tanh", std=0.01))
    assert "IA109" in _codes(r) and "IA104" in _codes(r)


def test_quantised_weight_judged_after_dequantisation(tmp_path):
    """An int8 weight whose dequantised values are constant is still caught."""
    from onnx import helper

    from onnx_models import init, save, tensor_in

    q = np.full((32, 16), 7, np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s"], ["W"], name="dq"),
             helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["a"], name="relu"),
             helper.make_node("Gemm", ["a", "W2"], ["y"], name="out", transB=1)]
    path = save(tmp_path / "q.onnx", nodes, [tensor_in("x", ["n", 16])], [tensor_in("y", ["n", 4])],
                [init("Wq", q), init("s", np.array(0.01, np.float32)),
                 init("W2", (rng().standard_normal((4, 32)) * 0.2).astype(np.float32))])
    r = audit(path)
    hits = [f for f in r.findings if f.rule == "IA102"]
    assert [f.layer for f in hits] == ["Wq"] and hits[0].evidence["value"] == pytest.approx(0.07)


# ---- healthy controls -----------------------------------------------------------------------


def test_he_relu_mlp_is_clean(tmp_path):
    r = audit(mlp_onnx(tmp_path / "he.onnx", depth=6, width=100))
    assert not _alarms(r), _alarms(r)


@pytest.mark.parametrize("opset", [17, 16])  # 16: LayerNorm and GELU spelled out in primitives
def test_gpt2_style_transformer_is_clean(tmp_path, opset):
    model = TinyGPT()
    path = export(model, (torch.randint(0, 96, (2, 16)),), tmp_path / "gpt.onnx", input_names=["ids"], opset=opset)
    r = audit(path)
    assert r.format == "onnx"
    assert not _alarms(r), _alarms(r)
    from initaudit.loaders.onnx_loader import load_onnx

    g = load_onnx(path)
    assert g.family == "transformer"
    assert sum(n.kind == "norm" for n in g.nodes) == 2 * 4 + 1  # LayerNorm op or decomposed
    # equal-valued gammas (all ones) may be merged by the exporter: one stored tensor, once
    assert 1 <= sum(p.role.value == "norm-scale" for p in g.params.values()) <= 9


def test_gpt2_style_transformer_dynamo_is_clean(tmp_path):
    pytest.importorskip("onnxscript")
    try:
        path = export(TinyGPT(), (torch.randint(0, 96, (2, 16)),), tmp_path / "gptd.onnx",
                      input_names=["ids"], dynamo=True)
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"dynamo exporter unavailable: {exc}")
    r = audit(path)
    assert not _alarms(r), _alarms(r)


@pytest.mark.parametrize("form", ["folded", "unfolded"])
@pytest.mark.parametrize("zero_init_residual", [False, True])
def test_resnet_with_batchnorm_is_clean(tmp_path, form, zero_init_residual):
    model = TinyResNet(zero_init_residual=zero_init_residual)
    x = torch.randn(2, 3, 16, 16)
    if form == "folded":  # eval mode: the exporter folds each BatchNorm into its Conv
        path = export(model.eval(), (x,), tmp_path / "rn.onnx")
    else:
        path = export(model.train(), (x,), tmp_path / "rn.onnx", training=torch.onnx.TrainingMode.PRESERVE,
                      do_constant_folding=False)
    import onnx

    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert ("BatchNormalization" in ops) == (form == "unfolded")
    r = audit(path)
    assert not _alarms(r), _alarms(r)
    if zero_init_residual and form == "folded":  # the zeroed conv2 weights: legitimate, info
        assert {f.rule for f in r.findings} == {"IA102"}


def test_resnet_folded_by_dynamo_is_clean(tmp_path):
    pytest.importorskip("onnxscript")
    try:
        path = export(TinyResNet().eval(), (torch.randn(2, 3, 16, 16),), tmp_path / "rnd.onnx", dynamo=True)
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"dynamo exporter unavailable: {exc}")
    r = audit(path)
    assert not _alarms(r), _alarms(r)


# ---- same model, module vs ONNX -------------------------------------------------------------


def _module_name(layer: str, notes_by_param: dict[str, list[str]]) -> str:
    """An ONNX finding's layer as the torch module path: kept initializer names as they are,
    renamed ones through the exporter's module note, node names (/a/b.0/Gemm) by their scope."""
    for note in notes_by_param.get(layer, []):
        m = re.search(r"module '([^']+)'", note)
        if m:
            return m.group(1) + ".weight"
    if layer.startswith("/"):
        parts = layer.strip("/").split("/")
        return parts[-2] if len(parts) >= 2 else parts[0]
    return layer


class _Deep(nn.Module):
    """Five defects in one model, on 3-D input so the exporter renames the weights (MatMul)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(32, 64)
        self.hidden = nn.ModuleList(nn.Linear(64, 64) for _ in range(6))
        self.out = nn.Linear(64, 8)
        for m in [self.inp, *self.hidden]:
            nn.init.normal_(m.weight, std=1.0)  # N(0, 1) before ReLU: explodes
            nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.hidden[1].weight[32:] = self.hidden[1].weight[:32]  # copied units
            self.hidden[3].weight.zero_()  # a dead hidden layer
            self.hidden[4].weight[0, 0] = float("nan")

    def forward(self, x):
        x = torch.relu(self.inp(x))
        for m in self.hidden:
            x = torch.relu(m(x))
        return self.out(x)


@pytest.mark.parametrize("three_d", [False, True])
def test_module_and_onnx_agree(tmp_path, three_d):
    model = _Deep().eval()
    x = torch.randn(2, 5, 32) if three_d else torch.randn(2, 32)
    path = export(model, (x,), tmp_path / "deep.onnx")
    from initaudit.loaders.onnx_loader import load_onnx

    g = load_onnx(path)
    notes = {p.name: p.notes for p in g.params.values()}
    if three_d:
        assert any(n.startswith("onnx::MatMul") for n in notes)  # renamed: mapped via the notes
    r_mod, r_onnx = audit(model), audit(path)
    weight_rules = {"IA101", "IA102", "IA103", "IA104", "IA105", "IA106"}
    mod = {(f.category, f.layer, f.severity.value) for f in r_mod.findings if f.rule in weight_rules}
    onx = {(f.category, _module_name(f.layer, notes), f.severity.value) for f in r_onnx.findings
           if f.rule in weight_rules}
    assert mod == onx
    assert {c for c, _, _ in mod} >= {"nonfinite", "constant", "symmetry", "scale"}
    # depth rules: same category; the module path maps to the node's scope
    mod_depth = {(f.category, f.layer) for f in r_mod.findings if f.rule not in weight_rules}
    onx_depth = {(f.category, _module_name(f.layer, notes)) for f in r_onnx.findings if f.rule not in weight_rules}
    assert mod_depth == onx_depth


def test_module_and_onnx_agree_healthy(tmp_path):
    model = torch_mlp(depth=5, width=64, act=nn.Tanh, std="xavier_tanh")
    path = export(model, (torch.randn(2, 64),), tmp_path / "ok.onnx")
    assert not _alarms(audit(model)) and not _alarms(audit(path))
