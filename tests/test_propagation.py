"""The static mean-field prediction (initaudit.propagation) against measured float64 forward
passes: MLPs at depth 20 over activations x inits x seeds (mean-shifted weights included),
SwiGLU stacks, ResNet v1 blocks with and without zero-init gamma, CNNs with pooling and pre-LN
transformers; the static and measured correlation rules on the sigmoid stack."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initaudit
from initaudit.propagation import predict
from tests.dataflow import build_graph, predicted, ratios

ACTS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
        "gelu": nn.GELU, "silu": nn.SiLU, "selu": nn.SELU, "elu": nn.ELU}
INITS = ["normal1", "normal001", "xavier", "he", "lecun", "default", "shifted"]


def mlp(act: str, init: str, depth: int = 20, width: int = 100, seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        w = lin.weight
        if init == "normal1":
            nn.init.normal_(w, std=1.0)
        elif init == "normal001":
            nn.init.normal_(w, std=0.01)
        elif init == "xavier":
            nn.init.xavier_normal_(w)
        elif init == "he":
            nn.init.kaiming_normal_(w, nonlinearity="relu")
        elif init == "lecun":
            nn.init.normal_(w, std=1 / math.sqrt(width))
        elif init == "shifted":
            with torch.no_grad():
                w.copy_(torch.rand(w.shape) * 0.1)  # torch.rand * 0.1: mean 0.05
        if init != "default":
            nn.init.zeros_(lin.bias)
        layers += [lin, ACTS[act]()]
    return nn.Sequential(*layers[:-1])


X = torch.randn(256, 100, generator=torch.Generator().manual_seed(1))


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Many tiny ops: a busy shared CPU makes torch's thread pool 10x slower than one thread."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("act", list(ACTS))
def test_mlp_depth_20_within_2x_of_float64_forward(act):
    """Every seed: the dense chain is carried unit by unit through its actual weights
    (initaudit.unitwise), so the draw in hand is predicted, not the typical one."""
    for init in INITS:
        for seed in range(3):
            *_, (_, pred, meas) = ratios(mlp(act, init, seed=seed), X)
            assert 0.5 <= pred / meas <= 2, (act, init, seed, pred, meas)


def test_per_unit_pass_places_the_draw_in_hand():
    """GELU at He gain, width 100, seed 0: the float64 forward is a low draw (0.097 against a
    median of 0.28 over 20 draws); per-tensor statistics predict the typical draw (3.1x off),
    the per-unit pass this one."""
    *_, (_, tensor_pred, meas) = ratios(mlp("gelu", "he", seed=0), X, per_unit=False)
    *_, (_, unit_pred, _) = ratios(mlp("gelu", "he", seed=0), X)
    assert tensor_pred / meas > 2.5 and 0.5 <= unit_pred / meas <= 2


@pytest.mark.parametrize("seed", [0, 1])
def test_static_and_measured_depth_severities_agree_on_the_draw_in_hand(seed):
    """Static (IA109) and measured (IA204) depth severities agree on all 168 depth-20 cases; from
    per-tensor statistics they disagreed on these two (GELU at He gain: static clean, measured
    0.14x and 0.17x, warnings)."""
    report = initaudit.audit(mlp("gelu", "he", seed=seed), inputs=X)
    severity = {f.rule: f.severity.value for f in report.findings}
    assert severity.get("IA109") == severity.get("IA204") == "warning", severity


def test_per_unit_pass_is_size_bounded(monkeypatch):
    """Past UNITWISE_MAX_ELEMENTS (here: after the first 3 of 20 layers) the per-tensor
    prediction stands, layer for layer."""
    from initaudit import unitwise

    model = mlp("gelu", "he", seed=0)
    graph = build_graph(model, X)
    per_tensor = predicted(graph, per_unit=False)
    monkeypatch.setattr(unitwise, "UNITWISE_MAX_ELEMENTS", 3 * 100 * 100)
    bounded = predicted(graph)
    assert [s.predicted_std for s in bounded[3:]] == [s.predicted_std for s in per_tensor[3:]]
    assert bounded[2].predicted_std != per_tensor[2].predicted_std
    assert [s.per_unit for s in bounded] == [True] * 3 + [False] * 17


def test_per_unit_pass_is_mean_field_at_large_width():
    """n -> infinity: the common-mode and energy splits vanish (O(1/n)) and the per-unit moments
    average to the mean-field ones: at width 1500 the per-unit and per-tensor predictions of a
    GELU/He chain agree within 3% at every layer (they differ up to 3x at width 100)."""
    width = 1500
    x = torch.randn(16, width, generator=torch.Generator().manual_seed(1))
    graph = build_graph(mlp("gelu", "he", depth=4, width=width), x)
    for u, t in zip(predicted(graph), predicted(graph, per_unit=False)):
        assert u.predicted_std == pytest.approx(t.predicted_std, rel=0.03), u.param


def test_streamed_checkpoint_keeps_the_per_tensor_prediction(monkeypatch):
    """Tensors a worker pool streams are never read again for the per-unit pass."""
    from initaudit.context import Context
    from initaudit.loaders.torch_module import graph_from_module

    model = mlp("gelu", "he", seed=0)
    graph = graph_from_module(model, "t")
    here = Context(graph, "init").signal
    monkeypatch.setattr(Context, "_pooled", lambda self, params: (list(params), 2))
    streamed = Context(graph, "init").signal
    expected = predict(graph, lambda n: Context(graph, "init").analysis(n).stats)
    assert [s.predicted_std for s in streamed] == [s.predicted_std for s in expected]
    assert [s.predicted_std for s in here] != [s.predicted_std for s in expected]


@pytest.mark.parametrize("width", [100, 64])
@pytest.mark.parametrize("act", ["relu", "gelu", "silu", "selu", "elu"])
def test_finite_width_typical_draw(act, width):
    """Finite width (propagation._energy_fluctuation): each input's pre-activation variance is a
    Markov chain whose per-layer noise (K - 1) / n makes the batch std of a contracting, convex
    map (GELU/SiLU at He gain) larger than the mean-field value: the mean-field prediction was
    0.18-0.46x the median draw for GELU/SiLU at width 64 and 0.30x for GELU at width 100. The
    median over 15 weight draws of pred / measured is within 2x, per activation and width, from
    per-tensor statistics alone (what every layer outside a per-unit chain gets)."""
    x = torch.randn(256, width, generator=torch.Generator().manual_seed(1))
    r = sorted(pred / meas for pred, meas in
               (ratios(mlp(act, "he", width=width, seed=seed), x, per_unit=False)[-1][1:]
                for seed in range(15)))
    assert 0.5 <= r[7] <= 2.0, (act, width, [round(v, 2) for v in r])


def test_gamma_rule_moments():
    from initaudit.quadrature import gamma_rule as _gamma_rule

    for eps in (2 / 64, 0.3, 2.5):
        x, w = (r[0] for r in _gamma_rule(eps))
        assert (x > 0).all() and w.sum() == pytest.approx(1.0)
        # Gamma(1/eps, eps): E X = 1, E X^2 = 1 + eps, E X^3 = (1 + eps)(1 + 2 eps)
        assert [float(w @ x**k) for k in (1, 2, 3)] == pytest.approx([1, 1 + eps, (1 + eps) * (1 + 2 * eps)])


def test_infinite_width_is_the_mean_field_map():
    """As n -> infinity the finite-width split vanishes: a dense layer of a huge fan_in gives the
    mean-field moments; a narrow one splits each component by the three-point Gamma rule."""
    from dataclasses import replace

    from initaudit.analysis import TensorStats
    from initaudit.graph import Activation
    from initaudit.propagation import _layer, _State
    from initaudit.signal_moments import Moments, activation_moments

    def stats(std):
        return TensorStats(mean=0.0, std=std, min=-1.0, max=1.0, nonfinite=0, zero_fraction=0.0, numel=1)

    pre = Moments.gaussian(0.0, 0.5)
    x = _State(activation_moments(Activation("gelu"), pre), 1.0, 1.0, 3, "input", fluct=True)
    n = 1e9
    mf = _layer(replace(x, fluct=False), n, stats(math.sqrt(2 / n)), None, None).m
    wide = _layer(x, n, stats(math.sqrt(2 / n)), None, int(n)).m
    assert wide.var == pytest.approx(mf.var, rel=1e-6) and len(wide.w) == len(mf.w)
    narrow = _layer(x, 64, stats(math.sqrt(2 / 64)), None, 64).m
    assert len(narrow.w) == 3 * len(mf.w)


class SwiGLU(nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.gate, self.up, self.down = nn.Linear(d, hidden), nn.Linear(d, hidden), nn.Linear(hidden, d)

    def forward(self, x):
        return self.down(F.silu(self.gate(x)) * self.up(x))


def _swiglu_stack(init: str, blocks: int = 6, d: int = 100) -> nn.Sequential:
    torch.manual_seed(0)
    model = nn.Sequential(*[SwiGLU(d, 2 * d) for _ in range(blocks)])
    for m in model.modules():
        if isinstance(m, nn.Linear) and init == "he":
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


@pytest.mark.parametrize("init", ["he", "default"])
def test_swiglu_stack_products_of_branches(init):
    """E[(silu(g) u)^2] = E[silu(g)^2] E[u^2]: He explodes, torch's default collapses."""
    rows = ratios(_swiglu_stack(init), X)
    # Each He block squares the scale, so the batch std is soon dominated by the samples with the
    # largest norm (a heavy tail over inputs): within 2x for three blocks, then both explode.
    exact = rows if init == "default" else rows[:9]
    for param, pred, meas in exact:
        assert 0.5 <= pred / meas <= 2, (param, pred, meas)
    pred, meas = rows[-1][1:]
    assert (pred > 1e12 and meas > 1e12) if init == "he" else (pred < 0.1 and meas < 0.1)


class BasicBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class ResNetV1(nn.Module):
    def __init__(self, zero_gamma: bool, blocks: int = 3, c: int = 16):
        super().__init__()
        torch.manual_seed(0)
        self.stem, self.bn, self.relu = nn.Conv2d(3, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU()
        self.blocks = nn.Sequential(*[BasicBlock(c) for _ in range(blocks)])
        self.head = nn.Conv2d(c, 10, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_gamma and isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        return self.head(self.blocks(self.relu(self.bn(self.stem(x)))))


IMAGES = torch.randn(32, 3, 16, 16, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("zero_gamma", [False, True])
def test_resnet_v1_residual_sum_with_non_zero_mean_identity(zero_gamma):
    """relu(bn(x) + x): the identity is a ReLU output with mean > 0; the head after three
    blocks is predicted within 2x (a zero-mean model of the sum was 0.37-0.61x)."""
    for param, pred, meas in ratios(ResNetV1(zero_gamma), IMAGES):
        if meas > 0:
            assert 0.5 <= pred / meas <= 2, (param, pred, meas)


class PoolCNN(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.c1, self.c2, self.c3 = nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1)
        self.act, self.pool, self.gap = nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.pool(self.act(self.c1(x)))
        x = self.pool(self.act(self.c2(x)))
        return self.fc(self.gap(self.act(self.c3(x))).flatten(1))


def test_cnn_with_max_and_global_average_pooling():
    for param, pred, meas in ratios(PoolCNN(), IMAGES):
        assert 0.5 <= pred / meas <= 2, (param, pred, meas)


class PreLNBlock(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.fc1, self.act, self.fc2 = nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d)

    def forward(self, x):
        h = self.ln1(x)
        b, t, d = h.shape
        q = self.q(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        k = self.k(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        v = self.v(h).view(b, t, self.heads, d // self.heads).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v)
        x = x + self.o(a.transpose(1, 2).reshape(b, t, d))
        return x + self.fc2(self.act(self.fc1(self.ln2(x))))


def test_pre_ln_transformer_attention_averages_over_tokens():
    torch.manual_seed(0)
    model = nn.Sequential(*[PreLNBlock(64, 4) for _ in range(4)])
    tokens = torch.randn(8, 32, 64, generator=torch.Generator().manual_seed(3))
    for param, pred, meas in ratios(model, tokens):
        assert 0.5 <= pred / meas <= 2, (param, pred, meas)


def test_unknown_op_is_stated_in_the_profile():
    from initaudit.graph import Node

    graph = build_graph(mlp("relu", "he", depth=3), X)
    nodes = graph.nodes
    i = next(i for i, n in enumerate(nodes) if n.kind == "act")
    nodes[i] = Node(nodes[i].name, "unknown", nodes[i].inputs, op="aten.custom_op")
    profile = predicted(graph)
    assert profile[0].unknown_after is None and math.isfinite(profile[0].predicted_std)
    assert all(s.unknown_after == "aten.custom_op" and math.isnan(s.predicted_std) for s in profile[1:])


def sigmoid_stack(depth: int) -> nn.Sequential:
    return mlp("sigmoid", "xavier", depth=depth, width=100)


@pytest.mark.parametrize("depth", [5, 20])
def test_sigmoid_stack_collapse_caught_statically_and_measured(depth):
    """The element std stays near 0.5 while the part that differs between inputs collapses."""
    model = sigmoid_stack(depth)
    x = torch.randn(128, 100, generator=torch.Generator().manual_seed(0))
    report = initaudit.audit(model, inputs=x)
    by = {f.rule: f for f in report.findings}
    assert {"IA111", "IA210"} <= set(by)
    assert by["IA111"].severity == by["IA210"].severity  # static and measured agree
    assert by["IA111"].severity.value == ("warning" if depth == 5 else "error")
    with torch.no_grad():  # measured independently: the rows of the last layer's output
        h = model.double()(x.double())
        c = torch.corrcoef(h - h.mean())  # sample x sample correlation
        mean_c = float((c.sum() - c.trace()) / (c.shape[0] * (c.shape[0] - 1)))
    model.float()
    assert mean_c > 0.9999 and by["IA210"].evidence["correlation"] == pytest.approx(mean_c, abs=1e-3)
    assert 0.2 < float(h.std()) < 1.0  # no depth rule would see it
    if depth == 5:  # at depth 20 the measured 1 - c is below fp32 resolution
        assert by["IA111"].evidence["ratio"] == pytest.approx(by["IA210"].evidence["ratio"], rel=1.0)


def test_healthy_deep_relu_and_tanh_stacks_are_not_ordered():
    for model in (mlp("relu", "he", width=100), mlp("tanh", "xavier", depth=5, width=100)):
        report = initaudit.audit(model, inputs=torch.randn(128, 100, generator=torch.Generator().manual_seed(0)))
        assert not {"IA111", "IA210"} & {f.rule for f in report.findings}


def test_guessed_dataflow_keeps_static_depth_rules_at_info():
    from initaudit.context import Context
    from initaudit.loaders.torch_module import graph_from_module
    from initaudit.rules.depth import PredictedVanishing

    graph = graph_from_module(mlp("relu", "normal001", depth=6), "t")
    loud = list(PredictedVanishing().check(Context(graph, "init")))
    assert loud and loud[0].severity.value == "error"
    graph.capture = "module-order"  # a chain guessed from registration order
    (f,) = PredictedVanishing().check(Context(graph, "init"))
    assert f.severity.value == "info" and "guessed" in f.message
