"""ONNX loader: every op family gets the right kind, fans, units dimension and following
activation; the tensor handed to the analysis is the one the op uses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
from onnx import TensorProto, helper

from initaudit.graph import Activation, OpKind, ParamRole
from initaudit.loaders.onnx_loader import load_onnx
from onnx_models import export, init, mlp_onnx, rng, save, tensor_in


def _one(graph, **match):
    found = [p for p in graph.params.values() if all(getattr(p, k) == v for k, v in match.items())]
    assert len(found) == 1, (match, [(p.name, p.kind, p.role) for p in graph.params.values()])
    return found[0]


# ---- dense layers ---------------------------------------------------------------------------


@pytest.mark.parametrize("trans_b", [1, 0])
def test_gemm_trans_b(tmp_path, trans_b):
    g = load_onnx(mlp_onnx(tmp_path / "m.onnx", depth=3, width=32, d_in=20, d_out=5, trans_b=trans_b))
    w0 = g.params["fc0.weight"]
    assert w0.kind is OpKind.LINEAR and w0.op == "Gemm"
    assert (w0.fan_in, w0.fan_out) == (20, 32)
    assert w0.shape == ((32, 20) if trans_b else (20, 32))
    assert w0.units_dim == (0 if trans_b else 1)
    assert w0.activation == Activation("relu") and w0.activation_source == "onnx"
    assert g.params["fc0.bias"].role is ParamRole.BIAS
    head = g.params["fc2.weight"]
    assert head.is_output and head.activation is None and (head.fan_in, head.fan_out) == (32, 5)
    assert [g.params[f"fc{i}.weight"].is_output for i in range(3)] == [False, False, True]
    assert g.format == "onnx" and g.stage_evidence == [] and g.source_path.endswith("m.onnx")


def test_gemm_alpha_and_trans_a(tmp_path):
    r = rng(1)
    w = r.standard_normal((8, 6)).astype(np.float32)  # W @ x with transA=1: stored (in, out)^T
    nodes = [helper.make_node("Gemm", ["w", "x"], ["y0"], name="g", transA=1, alpha=2.0),
             helper.make_node("Sigmoid", ["y0"], ["y"], name="sig")]
    path = save(tmp_path / "a.onnx", nodes, [tensor_in("x", [8, "n"])], [tensor_in("y", [6, "n"])],
                [init("w", w)])
    g = load_onnx(path)
    p = g.params["w"]
    assert (p.fan_in, p.fan_out, p.units_dim) == (8, 6, 1)
    assert p.activation == Activation("sigmoid")
    assert torch.allclose(g.load_tensor("w"), torch.from_numpy(2 * w))


def test_matmul_weight_right_operand(tmp_path):
    g = load_onnx(mlp_onnx(tmp_path / "m.onnx", depth=3, width=32, d_in=20, op="MatMul", act="Tanh"))
    w = g.params["fc0.weight"]
    assert w.shape == (20, 32) and w.units_dim == 1
    assert (w.fan_in, w.fan_out) == (20, 32)  # true fans: stored (in, out)
    assert (w.init_fan_in, w.init_fan_out) == (32, 20)  # torch's shape-only reading
    assert w.activation == Activation("tanh")
    assert g.params["fc0.bias"].role is ParamRole.BIAS  # MatMul + Add(bias)
    node = next(n for n in g.nodes if n.param == "fc0.weight")
    assert node.bias == "fc0.bias"


def test_matmul_weight_left_operand(tmp_path):
    w = rng().standard_normal((12, 7)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["w", "x"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    g = load_onnx(save(tmp_path / "l.onnx", nodes, [tensor_in("x", [7, "n"])], [tensor_in("y", [12, "n"])],
                       [init("w", w)]))
    p = g.params["w"]
    assert (p.fan_in, p.fan_out, p.units_dim) == (7, 12, 0)
    assert p.activation == Activation("relu")


def test_transpose_fed_weight(tmp_path):
    """x @ Transpose(W) with W stored (out, in), as torch keeps it: analysed as the op uses it."""
    w = rng(2).standard_normal((16, 10)).astype(np.float32)
    nodes = [helper.make_node("Transpose", ["W"], ["Wt"], name="t", perm=[1, 0]),
             helper.make_node("MatMul", ["x", "Wt"], ["h"], name="mm"),
             helper.make_node("LeakyRelu", ["h"], ["y"], name="act", alpha=0.2)]
    g = load_onnx(save(tmp_path / "t.onnx", nodes, [tensor_in("x", ["n", 10])], [tensor_in("y", ["n", 16])],
                       [init("W", w)]))
    p = g.params["W"]
    assert p.shape == (10, 16) and p.units_dim == 1 and (p.fan_in, p.fan_out) == (10, 16)
    assert p.activation == Activation("leaky_relu", 0.2)
    assert torch.equal(g.load_tensor("W"), torch.from_numpy(w.T))
    assert any("transpose" in n for n in p.notes)


def test_cast_reshape_identity_chain(tmp_path):
    w = rng(3).standard_normal((4, 6, 3)).astype(np.float16)
    nodes = [helper.make_node("Identity", ["W"], ["W1"], name="id"),
             helper.make_node("Cast", ["W1"], ["W2"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Reshape", ["W2", "shape"], ["W3"], name="rs"),
             helper.make_node("MatMul", ["x", "W3"], ["y"], name="mm")]
    g = load_onnx(save(tmp_path / "c.onnx", nodes, [tensor_in("x", ["n", 24])], [tensor_in("y", ["n", 3])],
                       [init("W", w), init("shape", np.array([24, 3], np.int64))]))
    p = g.params["W"]
    assert p.shape == (24, 3) and p.dtype == "float16" and (p.fan_in, p.fan_out) == (24, 3)
    assert p.is_output
    assert torch.equal(g.load_tensor("W").float(), torch.from_numpy(w.reshape(24, 3).astype(np.float32)))


def test_dequantize_linear_int8_weight(tmp_path):
    r = rng(4)
    q = r.integers(-127, 128, size=(32, 16)).astype(np.int8)  # per output channel: axis 0
    scale = (r.random(32) * 0.01 + 0.001).astype(np.float32)
    zp = np.zeros(32, np.int8)
    nodes = [helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["W"], name="dq", axis=0),
             helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
             helper.make_node("Relu", ["h"], ["y"], name="relu")]
    g = load_onnx(save(tmp_path / "q.onnx", nodes, [tensor_in("x", ["n", 16])], [tensor_in("y", ["n", 32])],
                       [init("Wq", q), init("s", scale), init("zp", zp)]))
    p = g.params["Wq"]
    assert p.dtype == "int8" and p.kind is OpKind.LINEAR and (p.fan_in, p.fan_out) == (16, 32)
    assert p.activation == Activation("relu")
    t = g.load_tensor("Wq")
    assert t.dtype == torch.float32
    assert torch.allclose(t, torch.from_numpy(q.astype(np.float32) * scale[:, None]))
    assert "s" not in g.params and "zp" not in g.params


# ---- convolutions ---------------------------------------------------------------------------


@pytest.mark.parametrize("groups", [1, 4, 16])
def test_conv_grouped_and_depthwise(tmp_path, groups):
    conv = nn.Conv2d(16, 32, 3, padding=1, groups=groups)
    model = nn.Sequential(conv, nn.ReLU6())
    g = load_onnx(export(model, (torch.randn(1, 16, 8, 8),), tmp_path / "c.onnx"))
    p = _one(g, kind=OpKind.CONV)
    assert p.shape == (32, 16 // groups, 3, 3) and p.units_dim == 0
    assert p.fan_in == (16 // groups) * 9
    assert p.fan_out == 32 * 9  # DESIGN §5: out * prod(k)
    assert p.activation == Activation("relu6")  # Clip(0, 6)


def test_conv_transpose(tmp_path):
    model = nn.Sequential(nn.ConvTranspose2d(8, 6, 4, stride=2, padding=1), nn.Sigmoid())
    g = load_onnx(export(model, (torch.randn(1, 8, 5, 5),), tmp_path / "ct.onnx"))
    p = _one(g, kind=OpKind.CONV_TRANSPOSE)
    assert p.shape == (8, 6, 4, 4) and p.units_dim == 1
    assert p.fan_out == 6 * 16
    assert p.fan_in == 8 * (16 // 4)  # taps landing on one output pixel: k / stride^2
    assert p.activation == Activation("sigmoid")


# ---- recurrent ------------------------------------------------------------------------------


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm(tmp_path, bidirectional):
    model = nn.LSTM(10, 12, batch_first=True, bidirectional=bidirectional)
    g = load_onnx(export(model, (torch.randn(2, 5, 10),), tmp_path / "lstm.onnx"))
    ws = [p for p in g.params.values() if p.kind is OpKind.RECURRENT_INPUT and p.is_weight]
    rs = [p for p in g.params.values() if p.kind is OpKind.RECURRENT_HIDDEN]
    assert len(ws) == len(rs) == (2 if bidirectional else 1)
    for w, r in zip(ws, rs):
        assert w.gates == r.gates == ("i", "o", "f", "c")
        assert w.shape == (48, 10) and r.shape == (48, 12)
        assert (w.fan_in, w.fan_out) == (10, 12) and (r.fan_in, r.fan_out) == (12, 12)
        assert w.activation == Activation("tanh")
        block = g.load_tensor(r.name).chunk(4)[0]
        assert block.shape == (12, 12)  # per-gate blocks stay square
    if bidirectional:
        assert [r.name.endswith(f"[dir{d}]") for d, r in enumerate(rs)] == [True, True]
        raw = torch.stack([g.load_tensor(r.name) for r in rs])
        assert raw.shape == (2, 48, 12)
    biases = [p for p in g.params.values() if p.kind is OpKind.RECURRENT_INPUT and p.role is ParamRole.BIAS]
    assert len(biases) == len(ws) and biases[0].shape == (96,)


def test_gru_gates(tmp_path):
    g = load_onnx(export(nn.GRU(6, 8, batch_first=True), (torch.randn(2, 4, 6),), tmp_path / "gru.onnx"))
    r = _one(g, kind=OpKind.RECURRENT_HIDDEN)
    assert r.gates == ("z", "r", "h") and r.shape == (24, 8)


def test_rnn_relu_activation(tmp_path):
    g = load_onnx(export(nn.RNN(6, 8, nonlinearity="relu"), (torch.randn(4, 2, 6),), tmp_path / "rnn.onnx"))
    w = _one(g, kind=OpKind.RECURRENT_INPUT, role=ParamRole.WEIGHT)
    assert w.gates == () and w.activation == Activation("relu")


# ---- embeddings and normalisation -----------------------------------------------------------


class _EmbLN(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 16)
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 16)

    def forward(self, ids):
        return self.fc(self.ln(self.emb(ids)))


@pytest.mark.parametrize("opset", [16, 17])  # 16: LayerNorm spelled ReduceMean/Sub/Pow/Sqrt/Div
def test_gather_embedding_and_layernorm(tmp_path, opset):
    g = load_onnx(export(_EmbLN(), (torch.randint(0, 50, (2, 7)),), tmp_path / "e.onnx", opset=opset))
    e = g.params["emb.weight"]
    assert e.kind is OpKind.EMBEDDING and (e.fan_in, e.fan_out) == (16, 50) and e.normalized_after
    assert g.params["ln.weight"].role is ParamRole.NORM_SCALE
    assert g.params["ln.bias"].role is ParamRole.NORM_SHIFT
    assert ("LayerNorm" in g.params["ln.weight"].op)
    assert "decomposed" in g.params["ln.weight"].op if opset == 16 else g.params["ln.weight"].op == "LayerNormalization"
    assert [n.kind for n in g.nodes if n.kind == "norm"] == ["norm"]
    assert g.onnx.embedding_inputs == {"input0": 50}
    assert g.family == "transformer"


def test_rms_norm_decomposed(tmp_path):
    d = 8
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Pow", ["h", "two"], ["sq"], name="pow"),
             helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="mean", keepdims=1),
             helper.make_node("Add", ["ms", "eps"], ["mse"], name="addeps"),
             helper.make_node("Sqrt", ["mse"], ["rms"], name="sqrt"),
             helper.make_node("Div", ["h", "rms"], ["n"], name="div"),
             helper.make_node("Mul", ["n", "gamma"], ["y"], name="scale")]
    inits = [init("W", rng().standard_normal((d, d)).astype(np.float32)), init("two", np.array(2.0, np.float32)),
             init("axes", np.array([-1], np.int64)), init("eps", np.array(1e-6, np.float32)),
             init("gamma", np.ones(d, np.float32))]
    g = load_onnx(save(tmp_path / "rms.onnx", nodes, [tensor_in("x", ["n", d])], [tensor_in("y", ["n", d])], inits))
    assert g.params["gamma"].role is ParamRole.NORM_SCALE and "RMSNorm" in g.params["gamma"].op
    assert g.params["W"].normalized_after


def test_rms_norm_with_rsqrt_as_exported(tmp_path):
    """LLaMA's RMSNorm, x * torch.rsqrt(mean(x^2) + eps) * w, as torch.onnx writes it: Sqrt,
    then Div(1, sqrt), then Mul with x (Qwen3, Phi-3, OLMo-2, Gemma-2 exports)."""
    d = 8
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Pow", ["h", "two"], ["sq"], name="pow"),
             helper.make_node("ReduceMean", ["sq", "axes"], ["ms"], name="mean", keepdims=1),
             helper.make_node("Add", ["ms", "eps"], ["mse"], name="addeps"),
             helper.make_node("Sqrt", ["mse"], ["rms"], name="sqrt"),
             helper.make_node("Div", ["one", "rms"], ["inv"], name="inv"),
             helper.make_node("Mul", ["h", "inv"], ["n"], name="mul"),
             helper.make_node("Mul", ["gamma", "n"], ["y"], name="scale")]
    inits = [init("W", rng().standard_normal((d, d)).astype(np.float32)), init("two", np.array(2.0, np.float32)),
             init("axes", np.array([-1], np.int64)), init("eps", np.array(1e-6, np.float32)),
             init("one", np.array(1.0, np.float32)), init("gamma", np.ones(d, np.float32))]
    g = load_onnx(save(tmp_path / "rms.onnx", nodes, [tensor_in("x", ["n", d])], [tensor_in("y", ["n", d])], inits))
    assert [n.kind for n in g.nodes if n.kind in ("norm", "unknown")] == ["norm"]
    assert g.params["gamma"].role is ParamRole.NORM_SCALE and "RMSNorm" in g.params["gamma"].op
    assert g.params["W"].normalized_after


@pytest.mark.parametrize("norm", ["batch", "instance", "group"])
def test_normalization_ops(tmp_path, norm):
    c = 8
    if norm == "batch":
        model = nn.Sequential(nn.Conv2d(3, c, 3), nn.BatchNorm2d(c), nn.ReLU()).train()
        # training-mode export keeps BatchNormalization (eval mode folds it into the Conv)
        path = export(model, (torch.randn(2, 3, 8, 8),), tmp_path / "n.onnx",
                      training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False)
    else:
        layer = nn.InstanceNorm2d(c, affine=True) if norm == "instance" else nn.GroupNorm(2, c)
        path = export(nn.Sequential(nn.Conv2d(3, c, 3), layer, nn.ReLU()), (torch.randn(2, 3, 8, 8),),
                      tmp_path / "n.onnx", opset=18)
    g = load_onnx(path)
    conv = _one(g, kind=OpKind.CONV)
    roles = {p.role for p in g.params.values() if p.kind is OpKind.NORM}
    if norm == "batch":
        # the exporter merged running_var (ones) into the gamma and running_mean (zeros) into
        # the beta: each stored tensor appears once, with its other use noted
        assert {ParamRole.NORM_SCALE, ParamRole.NORM_SHIFT} <= roles
        assert any("BatchNormalization" in n for p in g.params.values() for n in p.notes) or \
            {ParamRole.RUNNING_MEAN, ParamRole.RUNNING_VAR} <= roles
        assert conv.normalized_after
    else:
        assert {ParamRole.NORM_SCALE, ParamRole.NORM_SHIFT} <= roles or conv.normalized_after


def test_batchnorm_helper_roles(tmp_path):
    c = 4
    nodes = [helper.make_node("Conv", ["x", "W"], ["h"], name="conv"),
             helper.make_node("BatchNormalization", ["h", "g", "b", "m", "v"], ["n"], name="bn"),
             helper.make_node("Relu", ["n"], ["y"], name="relu")]
    r = rng()
    inits = [init("W", r.standard_normal((c, 3, 3, 3)).astype(np.float32)), init("g", np.ones(c, np.float32)),
             init("b", np.zeros(c, np.float32)), init("m", np.zeros(c, np.float32)), init("v", np.ones(c, np.float32))]
    g = load_onnx(save(tmp_path / "bn.onnx", nodes, [tensor_in("x", ["n", 3, 8, 8])],
                       [tensor_in("y", ["n", c, 6, 6])], inits))
    assert [g.params[k].role for k in "gbmv"] == [ParamRole.NORM_SCALE, ParamRole.NORM_SHIFT,
                                                  ParamRole.RUNNING_MEAN, ParamRole.RUNNING_VAR]
    assert g.params["W"].normalized_after
    assert g.onnx.unit_dims["bn"] == 1


# ---- activations ----------------------------------------------------------------------------


class _Act(nn.Module):
    def __init__(self, act: nn.Module):
        super().__init__()
        self.a, self.act, self.b = nn.Linear(8, 16), act, nn.Linear(16, 4)

    def forward(self, x):
        return self.b(self.act(self.a(x)))


@pytest.mark.parametrize("act,opset,expected", [
    (nn.GELU(), 20, "gelu"),  # Gelu op
    (nn.GELU(), 17, "gelu"),  # x * 0.5 * (1 + erf(x / sqrt 2))
    (nn.GELU(approximate="tanh"), 17, "gelu"),  # the tanh formula, spelled out
    (nn.SiLU(), 17, "silu"),  # x * sigmoid(x)
    (nn.Mish(), 17, "mish"),  # x * tanh(softplus(x))
    (nn.ReLU6(), 17, "relu6"),  # Clip(0, 6)
    (nn.LeakyReLU(0.2), 17, "leaky_relu"),
    (nn.PReLU(), 17, "prelu"),
    (nn.Hardswish(), 17, "hardswish"),
    (nn.Hardsigmoid(), 17, "hardsigmoid"),
    (nn.ELU(), 17, "elu"),
    (nn.SELU(), 17, "selu"),
    (nn.Softplus(), 17, "softplus"),
    (nn.Tanh(), 17, "tanh"),
])
def test_activation_after_layer(tmp_path, act, opset, expected):
    g = load_onnx(export(_Act(act), (torch.randn(2, 8),), tmp_path / "a.onnx", opset=opset))
    p = g.params["a.weight"]
    assert p.activation is not None and p.activation.name == expected
    if expected == "leaky_relu":
        assert p.activation.param == pytest.approx(0.2)
    if expected == "prelu":
        assert p.activation.param == pytest.approx(0.25)
    assert not p.residual_end and not p.is_output
    assert g.params["b.weight"].is_output
    # the decomposed forms are one act node, not a residual add or a chain of "other"
    assert not any(n.kind == "add" for n in g.nodes)
    assert sum(n.kind == "act" for n in g.nodes) == 1


def test_gelu_erf_pattern_helper(tmp_path):
    """The exporter's Erf spelling with the 0.5 applied to x first."""
    w = rng().standard_normal((6, 6)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
             helper.make_node("Mul", ["h", "half"], ["hh"], name="half_x"),
             helper.make_node("Div", ["h", "sqrt2"], ["hs"], name="div"),
             helper.make_node("Erf", ["hs"], ["e"], name="erf"),
             helper.make_node("Add", ["e", "one"], ["e1"], name="add1"),
             helper.make_node("Mul", ["hh", "e1"], ["y"], name="gelu_out")]
    inits = [init("W", w), init("half", np.array(0.5, np.float32)), init("sqrt2", np.array(math.sqrt(2), np.float32)),
             init("one", np.array(1.0, np.float32))]
    g = load_onnx(save(tmp_path / "erf.onnx", nodes, [tensor_in("x", ["n", 6])], [tensor_in("y", ["n", 6])], inits))
    assert g.params["W"].activation == Activation("gelu")
    assert [n.kind for n in g.nodes] == ["input", "layer", "act", "output"]


# ---- graph structure ------------------------------------------------------------------------


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.inp, self.f1, self.f2, self.out = nn.Linear(8, 16), nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 2)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.f2(torch.relu(self.f1(h)))
        return self.out(h)


def test_residual_add_and_output(tmp_path):
    g = load_onnx(export(_Residual(), (torch.randn(2, 8),), tmp_path / "r.onnx"))
    assert g.params["f2.weight"].residual_end
    assert not g.params["f1.weight"].residual_end and g.params["f1.weight"].activation == Activation("relu")
    assert g.params["out.weight"].is_output
    assert any(n.kind == "add" for n in g.nodes)


def test_dynamo_exporter(tmp_path):
    pytest.importorskip("onnxscript")
    model = _Residual()
    try:
        path = export(model, (torch.randn(2, 8),), tmp_path / "d.onnx", dynamo=True)
    except Exception as exc:  # pragma: no cover - depends on the installed exporter
        pytest.skip(f"dynamo exporter unavailable: {exc}")
    g = load_onnx(path)
    weights = {p.name: p for p in g.weights()}
    assert len(weights) == 4
    by_module = {next((n.split("'")[1] for n in p.notes if "module '" in n), p.name.rsplit(".", 1)[0]): p
                 for p in weights.values()}
    assert by_module["f2"].residual_end and by_module["out"].is_output
    assert by_module["f1"].activation == Activation("relu")


def test_shared_initializers_appear_once(tmp_path):
    """A weight used by two layers is one Param; a zero bias merged by the exporter and used by
    three layers is one bias, never judged as a weight."""
    r = rng(5)
    w = (r.standard_normal((16, 16)) * math.sqrt(2 / 16)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "W", "zero"], ["h1"], name="l1", transB=1),
             helper.make_node("Relu", ["h1"], ["a1"], name="r1"),
             helper.make_node("Gemm", ["a1", "W", "zero"], ["h2"], name="l2", transB=1),
             helper.make_node("Relu", ["h2"], ["a2"], name="r2"),
             helper.make_node("Gemm", ["a2", "V", "zero"], ["y"], name="l3", transB=1)]
    inits = [init("W", w), init("V", (r.standard_normal((16, 16)) * 0.25).astype(np.float32)),
             init("zero", np.zeros(16, np.float32))]
    path = save(tmp_path / "s.onnx", nodes, [tensor_in("x", ["n", 16])], [tensor_in("y", ["n", 16])], inits)
    g = load_onnx(path)
    assert set(g.params) == {"W", "V", "zero"}
    assert g.params["zero"].role is ParamRole.BIAS
    assert any("l2" in n for n in g.params["W"].notes)
    assert [n.param for n in g.nodes if n.kind == "layer"] == ["W", "W", "V"]
    import initaudit

    report = initaudit.audit(path, **_no_probe())
    assert not [f for f in report.findings if f.layer == "zero"]
    assert report.summary()["errors"] == 0


def test_tied_embedding_head_once(tmp_path):
    """Embedding and LM head sharing one table (Gather + MatMul(Transpose)): one Param, an
    embedding; the head is not a second copy."""
    r = rng(6)
    table = (r.standard_normal((40, 8)) * 0.02).astype(np.float32)
    nodes = [helper.make_node("Gather", ["wte", "ids"], ["e"], name="embed"),
             helper.make_node("Transpose", ["wte"], ["wt"], name="t"),
             helper.make_node("MatMul", ["e", "wt"], ["logits"], name="lm_head")]
    path = save(tmp_path / "tied.onnx", nodes, [tensor_in("ids", ["n", 5], TensorProto.INT64)],
                [tensor_in("logits", ["n", 5, 40])], [init("wte", table)])
    g = load_onnx(path)
    assert list(g.params) == ["wte"] and g.params["wte"].kind is OpKind.EMBEDDING
    assert "lm_head" in g.params["wte"].aliases
    assert g.parameter_count == 40 * 8


@pytest.mark.parametrize("dynamo", [False, True])
def test_tied_head_stored_twice_by_the_exporter(tmp_path, dynamo):
    """Both exporters store a tied LM head as the table plus a transposed copy: one Param."""
    from onnx_models import TinyGPT

    if dynamo:
        pytest.importorskip("onnxscript")
    model = TinyGPT(vocab=96, d=32, layers=1, heads=2)
    model.lm_head.weight = model.wte.weight
    try:
        path = export(model, (torch.randint(0, 96, (2, 8)),), tmp_path / "tied.onnx", input_names=["ids"],
                      dynamo=dynamo)
    except Exception as exc:  # pragma: no cover
        pytest.skip(f"exporter unavailable: {exc}")
    import onnx

    tables = [t for t in onnx.load(str(path)).graph.initializer if sorted(t.dims) == [32, 96]]
    assert len(tables) == 2  # what the file holds
    g = load_onnx(path)
    ours = [p for p in g.params.values() if sorted(p.shape) == [32, 96]]
    assert len(ours) == 1 and ours[0].kind is OpKind.EMBEDDING and len(ours[0].aliases) == 1
    untied = sum(p.numel() for p in TinyGPT(vocab=96, d=32, layers=1, heads=2).parameters())
    assert g.parameter_count <= untied - 96 * 32


def test_fake_quantised_float_weight(tmp_path):
    """QuantizeLinear -> DequantizeLinear on a float weight: the float weight is judged."""
    w = (rng(8).standard_normal((8, 4)) * 0.1).astype(np.float32)
    nodes = [helper.make_node("QuantizeLinear", ["W", "s", "zp"], ["Wq"], name="q"),
             helper.make_node("DequantizeLinear", ["Wq", "s", "zp"], ["Wd"], name="dq"),
             helper.make_node("MatMul", ["x", "Wd"], ["y"], name="mm")]
    g = load_onnx(save(tmp_path / "fq.onnx", nodes, [tensor_in("x", ["n", 8])], [tensor_in("y", ["n", 4])],
                       [init("W", w), init("s", np.array(0.01, np.float32)), init("zp", np.array(0, np.int8))]))
    assert set(g.params) == {"W"} and g.params["W"].kind is OpKind.LINEAR
    assert torch.equal(g.load_tensor("W"), torch.from_numpy(w))


def test_constant_node_weights_and_unknown_initializers(tmp_path):
    w = rng(7).standard_normal((4, 4)).astype(np.float32)
    const = helper.make_node("Constant", [], ["Wc"], name="c",
                             value=helper.make_tensor("v", TensorProto.FLOAT, [4, 4], w.reshape(-1).tolist()))
    nodes = [const, helper.make_node("MatMul", ["x", "Wc"], ["h"], name="mm"),
             helper.make_node("Mul", ["h", "gate"], ["y"], name="gate_mul")]
    g = load_onnx(save(tmp_path / "k.onnx", nodes, [tensor_in("x", ["n", 4])], [tensor_in("y", ["n", 4])],
                       [init("gate", np.ones((1, 4), np.float32))]))
    assert g.params["Wc"].kind is OpKind.LINEAR
    other = g.params["gate"]
    assert other.role is ParamRole.OTHER and any("gate_mul" in n for n in other.notes)


def _no_probe() -> dict:
    return {"probe_enabled": False}


def test_initializer_used_only_in_a_subgraph(tmp_path):
    w = rng(9).standard_normal((4, 4)).astype(np.float32)
    then = helper.make_graph([helper.make_node("MatMul", ["x", "Wsub"], ["t_out"], name="inner")], "then", [],
                             [tensor_in("t_out", ["n", 4])])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["e_out"], name="inner2")], "else", [],
                              [tensor_in("e_out", ["n", 4])])
    nodes = [helper.make_node("Gemm", ["x", "W"], ["h"], name="fc", transB=1),
             helper.make_node("If", ["cond"], ["y"], name="branch", then_branch=then, else_branch=other)]
    path = save(tmp_path / "if.onnx", nodes, [tensor_in("x", ["n", 4]), tensor_in("cond", [], TensorProto.BOOL)],
                [tensor_in("y", ["n", 4])], [init("W", w), init("Wsub", w.copy())], check=False)
    g = load_onnx(path)
    assert g.params["W"].kind is OpKind.LINEAR and "Wsub" not in g.params
    assert any(name == "Wsub" and "subgraph" in why for name, why in g.skipped)


def test_folded_batchnorm_seen_when_its_zero_bias_was_merged_into_another(tmp_path):
    """A fresh BatchNorm folds to a zero bias; the classic exporter merges equal initializers, so
    that bias reaches the Conv as Identity(another layer's zero bias) (timm's MobileNetV3 export).
    The Conv still reads it by the created name (onnx::Conv_N): the fold is still seen."""
    import onnx

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 1),
                          nn.Conv2d(8, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
    nn.init.zeros_(model[3].bias)
    path = export(model.eval(), (torch.randn(1, 3, 16, 16),), tmp_path / "merged.onnx")
    nodes = onnx.load(str(path)).graph.node
    merged = {n.output[0] for n in nodes if n.op_type == "Identity" and n.input[0] == "3.bias"}
    assert merged & {n.input[2] for n in nodes if n.op_type == "Conv"}  # the case is real
    graph = load_onnx(path)
    folded = {p.name for p in graph.weights() if p.normalized_after}
    assert len(folded) == 2 and "3.weight" not in folded
