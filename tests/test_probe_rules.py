"""The probe rules (IA201-IA209) on real defective models, and healthy controls that must stay
free of errors and warnings with the probe on."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.testing import assert_healthy_init

_BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_probe.py"
_spec = importlib.util.spec_from_file_location("bench_probe", _BENCH)
zoo = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(zoo)


def findings(model, code=None, **kw):
    report = initaudit.audit(model, **kw)
    assert report.probe.ran, report.probe.skipped_reason
    assert not report.rule_errors, report.rule_errors
    return report, [f for f in report.findings if code is None or f.rule == code]


def seq(*mods):
    torch.manual_seed(0)
    return nn.Sequential(*mods)


# --- healthy controls ------------------------------------------------------------------------

class LSTMNet(nn.Module):
    """LSTM with orthogonal hidden-to-hidden blocks, Xavier input weights, forget bias 1."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lstm = nn.LSTM(32, 64, batch_first=True)
        self.head = nn.Linear(64, 10)
        with torch.no_grad():
            for block in self.lstm.weight_hh_l0.chunk(4):
                nn.init.orthogonal_(block)
            nn.init.xavier_uniform_(self.lstm.weight_ih_l0)
            self.lstm.bias_ih_l0.zero_()
            self.lstm.bias_hh_l0.zero_()
            self.lstm.bias_ih_l0[64:128] = 1.0

    def forward(self, x):
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def he_mlp(depth=20, width=100):
    torch.manual_seed(0)
    layers = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(width, 10))
    for m in model[:-1]:
        if isinstance(m, nn.Linear):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return model


def zero_head_mlp():
    model = seq(nn.Linear(32, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    for m in (model[0], model[2]):
        nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        nn.init.zeros_(m.bias)
    nn.init.zeros_(model[4].weight)
    nn.init.zeros_(model[4].bias)
    return model


@pytest.mark.parametrize("build", [
    lambda: zoo.gpt2(small=True), lambda: zoo.resnet18(small=True), LSTMNet, he_mlp, zero_head_mlp,
], ids=["gpt2-preln-0.02", "resnet-zero-gamma", "lstm-orthogonal", "he-relu-20", "zero-head"])
def test_healthy_controls_have_no_warning_with_the_probe(build):
    report = assert_healthy_init(build())
    assert report.probe.ran, report.probe.skipped_reason
    assert report.probe.grads, "the backward pass ran"
    assert {"IA201", "IA202", "IA203", "IA204", "IA205", "IA206", "IA207", "IA208", "IA209"} <= set(report.rules_run)


def test_healthy_controls_measured_figures():
    report, _ = findings(he_mlp())
    layers = [s for s in report.probe.sites if s.kind == "layer"][:-1]
    assert all(1.0 < s.std < 1.9 for s in layers)  # He keeps sqrt(2) through 20 layers
    assert max(s.dead_fraction for s in layers) < 0.5  # deep ReLU stacks lose some units
    report, _ = findings(zoo.resnet18(small=True))
    convs = {s.param: s for s in report.probe.sites if s.kind == "layer"}
    grads = report.probe.grads
    # zero-init last BN gamma: the branch convs get exactly zero gradient, legitimately
    assert grads["layers.0.0.conv2.weight"].norm == 0 and grads["layers.0.0.conv2.weight"].received
    assert grads["conv1.weight"].norm > 0 and convs["conv1.weight"].units == 16
    # one ReLU module called twice per block: keyed by call site
    assert {"layers.0.0.relu", "layers.0.0.relu#1"} & {s.name for s in report.probe.sites}


# --- IA201 nonfinite -------------------------------------------------------------------------

class LogLayer(nn.Module):
    def forward(self, x):
        return torch.log(x)


def test_nonfinite_reports_the_first_site():
    model = seq(nn.Linear(16, 16), LogLayer(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    report, got = findings(model, "IA201")
    assert len(got) == 1 and got[0].severity.value == "error"
    assert got[0].layer == "2"  # log(negative) = NaN enters layer 2's output first
    assert got[0].evidence["sites_affected"] >= 2
    first = next(s for s in report.probe.sites if s.name == "2")
    assert 0 < first.nonfinite <= first.units * first.samples


def test_nonfinite_from_overflowing_weights():
    model = seq(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for layer in (model[0], model[2], model[4]):
            layer.weight.normal_(std=1e15)
    _, got = findings(model, "IA201")
    assert got and got[0].layer == "4"  # 1e16 -> 1e32 -> inf


# --- IA202 saturation ------------------------------------------------------------------------

def test_saturation_after_batchnorm_with_a_large_gamma():
    model = seq(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.Sigmoid(), nn.Linear(32, 4))
    nn.init.constant_(model[1].weight, 10.0)
    report, got = findings(model, "IA202")
    assert [f.layer for f in got] == ["1"]  # the norm site, read before the sigmoid
    assert got[0].evidence["saturated_fraction"] == pytest.approx(
        2 * (1 - 0.5 * (1 + math.erf(4.595 / 10 / math.sqrt(2)))), abs=0.05)


def test_saturation_of_a_functional_tanh():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(100, 50)
            self.out = nn.Linear(50, 2)

        def forward(self, x):
            return self.out(torch.tanh(self.fc(x)))

    torch.manual_seed(0)
    net = Net()
    nn.init.normal_(net.fc.weight, std=1.0)
    _, got = findings(net, "IA202")
    assert [f.layer for f in got] == ["fc"] and got[0].severity.value == "error"


# --- IA203 dead units ------------------------------------------------------------------------

def test_dead_units_from_a_negative_bias_get_no_gradient():
    model = seq(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.constant_(model[0].bias, -5.0)
    report, got = findings(model, "IA203")
    assert len(got) == 1 and got[0].severity.value == "error"
    assert got[0].evidence["dead_units"] == 64
    assert report.probe.grads["0.weight"].zero_rows == 64
    assert "cannot recover" in got[0].message


def test_dead_units_after_a_residual_add_use_the_activation_site():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(32, 32)
            self.b = nn.Linear(32, 32)
            self.act = nn.ReLU()

        def forward(self, x):
            return self.act(self.a(x) + self.b(x))

    torch.manual_seed(0)
    block = Block()
    nn.init.constant_(block.a.bias, -4.0)
    nn.init.constant_(block.b.bias, -4.0)
    _, got = findings(nn.Sequential(block, nn.Linear(32, 4)), "IA203")
    assert [f.layer for f in got] == ["0.act"]


def test_partly_dead_layer_warns():
    model = seq(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].bias[:40] = -6.0
        model[0].bias[40:] = 0.0
    _, got = findings(model, "IA203")
    assert got[0].severity.value == "warning" and got[0].evidence["dead_fraction"] == pytest.approx(40 / 64)
    _, none = findings(model, "IA203", rule_options={"IA203": {"warn_fraction": 0.7}})
    assert not none


# --- IA206 / IA207 gradients -----------------------------------------------------------------

def sigmoid_stack(depth=10):
    model = seq(*[m for _ in range(depth) for m in (nn.Linear(100, 100), nn.Sigmoid())])
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def test_gradient_vanishing_in_a_deep_sigmoid_stack():
    report, got = findings(sigmoid_stack(), "IA206")
    assert len(got) == 1 and got[0].layer == "0.weight"
    rel = got[0].evidence["ratio"]
    # sigmoid' <= 1/4 per layer: window values 4 layers apart (4^-4), carried over 8 layers
    assert rel < 1e-3 and got[0].severity.value == ("error" if rel < 1e-4 else "warning")
    profile = dict(got[0].evidence["profile"])
    assert profile["16.weight"] < profile["18.weight"] and profile["0.weight"] < 1e-3
    assert got[0].evidence["window"] == ["0.weight", "2.weight", "4.weight", "6.weight"]
    g = report.probe.grads["0.weight"]
    assert g.ratio == pytest.approx(g.norm / g.weight_norm)


def test_gradient_exploding_in_a_saturated_tanh_stack():
    model = seq(*[m for _ in range(10) for m in (nn.Linear(100, 100), nn.Tanh())])
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0)
            nn.init.zeros_(m.bias)
    _, got = findings(model, "IA207")
    assert got and got[0].evidence["ratio"] > 100


def tanh_stack_with_batchnorm(at: int, depth: int = 10):
    """The saturated N(0, 1) tanh stack above with a BatchNorm1d after the ``at``-th tanh (-1:
    on the input)."""
    mods = [nn.BatchNorm1d(100)] if at < 0 else []
    for i in range(depth):
        mods += [nn.Linear(100, 100), nn.Tanh()] + ([nn.BatchNorm1d(100)] if i == at else [])
    model = seq(*mods)
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=1.0)
            nn.init.zeros_(m.bias)
    return model


def test_gradient_depth_is_not_judged_across_a_batchnorm_of_too_few_values():
    def x(batch):
        return torch.randn(batch, 100, generator=torch.Generator().manual_seed(0))

    model = tanh_stack_with_batchnorm(at=3)
    # 64 values per channel: the explosion is measured and reported
    report, got = findings(model, "IA207", inputs=x(64))
    assert got and got[0].severity.value in ("warning", "error") and not got[0].evidence["thin_norms"]
    (bn,) = [s for s in report.probe.sites if s.kind == "norm"]
    assert bn.norm_population == 64
    # 4 values per channel between the judged window and the reference: information, naming it
    report, got = findings(model, "IA207", inputs=x(4))
    assert [s.norm_population for s in report.probe.sites if s.kind == "norm"] == [4]
    assert [f.severity.value for f in got] == ["info"] and got[0].evidence["thin_norms"] == ["8"]
    assert "fewer than 8 values per channel" in got[0].message
    # the same norm on the input, which no error passes on its way to a layer: still reported
    _, got = findings(tanh_stack_with_batchnorm(at=-1), "IA207", inputs=x(4))
    assert got and got[0].severity.value in ("warning", "error") and not got[0].evidence["thin_norms"]


# --- IA208 symmetry --------------------------------------------------------------------------

def zero_hidden(act):
    model = seq(nn.Linear(32, 64), act(), nn.Linear(64, 10))
    nn.init.zeros_(model[0].weight)
    nn.init.zeros_(model[0].bias)
    return model


def test_zero_hidden_layer_relu_and_tanh_are_told_apart():
    relu_report, relu = findings(zero_hidden(nn.ReLU), "IA208")
    tanh_report, tanh = findings(zero_hidden(nn.Tanh), "IA208")
    # before ReLU: identical, dead, no gradient at all: permanent
    assert relu[0].severity.value == "error"
    assert relu[0].evidence["zero_gradient_rows"] == 64 and relu[0].evidence["distinct_gradient_rows"] == 1
    assert "no gradient" in relu[0].message
    assert relu_report.probe.grads["0.weight"].norm == 0
    assert any(f.rule == "IA203" and f.severity.value == "error" for f in relu_report.findings)
    # before tanh: identical now, but every unit gets its own gradient: the first step breaks it
    assert tanh[0].severity.value == "warning"
    assert tanh[0].evidence["zero_gradient_rows"] == 0 and tanh[0].evidence["distinct_gradient_rows"] == 64
    assert "breaks the symmetry" in tanh[0].message
    assert tanh_report.probe.grads["0.weight"].norm > 0
    assert not any(f.rule == "IA203" for f in tanh_report.findings)


def test_identical_gradients_keep_the_symmetry():
    model = seq(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 1))
    for m in (model[0], model[2]):
        nn.init.constant_(m.weight, 0.1)
        nn.init.zeros_(m.bias)
    _, got = findings(model, "IA208")
    assert got[0].severity.value == "error" and "identical gradients" in got[0].message
    assert got[0].evidence["identical_units"] == 31


def test_zero_init_head_is_information_only():
    _, got = findings(zero_head_mlp(), "IA208")
    assert [f.severity.value for f in got] == ["info"] and "output layer" in got[0].message


# --- IA209 unused ----------------------------------------------------------------------------

def test_unused_module_is_reported_once_and_frozen_ones_are_not():
    model = seq(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    model[2].projection = nn.Linear(32, 32)
    model[0].frozen_extra = nn.Linear(4, 4).requires_grad_(False)
    report, got = findings(model, "IA209")
    assert [f.layer for f in got] == ["2.projection"]
    assert got[0].evidence["params"] == ["2.projection.weight", "2.projection.bias"]
    assert got[0].evidence["values"] == 32 * 32 + 32
    assert set(report.probe.frozen) == {"0.frozen_extra.weight", "0.frozen_extra.bias"}


def test_branch_that_does_not_reach_the_output_is_unused():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.main = nn.Linear(8, 2)
            self.aux = nn.Linear(8, 3)

        def forward(self, x):
            self.aux(x)  # computed, thrown away
            return self.main(x)

    torch.manual_seed(0)
    _, got = findings(Net(), "IA209")
    assert [f.layer for f in got] == ["aux"]


# --- options and selection -------------------------------------------------------------------

def test_thresholds_are_options():
    model = seq(nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 10))
    nn.init.normal_(model[0].weight, std=0.3)  # std 3: P(|x| > 2.65) = 0.38
    _, got = findings(model, "IA202")
    assert got[0].severity.value == "warning" and 0.3 < got[0].evidence["saturated_fraction"] < 0.45
    _, got = findings(model, "IA202", rule_options={"IA202": {"error_fraction": 0.3}})
    assert got[0].severity.value == "error"


def test_no_probe_skips_the_probe_rules_and_says_why():
    model = zero_hidden(nn.ReLU)
    report = initaudit.audit(model, probe_enabled=False)
    assert not report.probe.ran and report.probe.skipped_reason == "disabled (--no-probe)"
    assert not [f for f in report.findings if f.rule.startswith("IA2")]
    assert any(f.rule == "IA102" for f in report.findings)  # the static audit still reports
