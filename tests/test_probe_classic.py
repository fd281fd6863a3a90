"""The classic initialisation experiments, measured by the probe and flagged by its rules.

5-layer, 100-unit MLP and 10-layer, 500-unit tanh MLP on N(0, 1) inputs (Glorot & Bengio 2010;
the CS231n experiment): N(0, 1) weights saturate sigmoid/tanh, N(0, 0.01^2) weights collapse the
activation std towards zero, Xavier keeps tanh healthy and lets ReLU decay, He keeps ReLU healthy.
Assertions are on the measured figures, not only on which rules fire.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import initaudit

INITS = {
    "normal1": lambda w: nn.init.normal_(w, std=1.0),
    "normal0.01": lambda w: nn.init.normal_(w, std=0.01),
    "xavier": nn.init.xavier_normal_,
    "he": lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"),
}


def mlp(act: type[nn.Module], init: str, depth: int, width: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), act()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            INITS[init](m.weight)
            nn.init.zeros_(m.bias)
    return model


def run(model):
    report = initaudit.audit(model)
    assert report.probe.ran, report.probe.skipped_reason
    layers = [s for s in report.probe.sites if s.kind == "layer"]
    rules = {(f.rule, f.severity.value) for f in report.findings if f.rule.startswith("IA2")}
    return report, layers, rules


def test_normal1_saturates_tanh():
    report, layers, rules = run(mlp(nn.Tanh, "normal1", 5, 100))
    # pre-activation std ~ sqrt(100) * 1 = 10 in the first layer, ~ 10 * sqrt(E[tanh^2]) after;
    # P(|N(0, 10^2)| > 2.65) = 0.79
    for s in layers:
        assert 8.5 < s.std < 11.5
        assert 0.72 < s.saturated_fraction < 0.85
    assert ("IA202", "error") in rules
    assert report.probe.input_std == pytest.approx(1.0, abs=0.03)


def test_normal1_saturates_sigmoid():
    _, layers, rules = run(mlp(nn.Sigmoid, "normal1", 5, 100))
    assert 8.5 < layers[0].std < 11.5 and layers[0].saturated_fraction > 0.6  # P(|N(0,100)|>4.6)=0.65
    assert all(s.saturated_fraction > 0.35 for s in layers)
    assert ("IA202", "error") in rules


def test_small_weights_collapse_tanh_std():
    _, layers, rules = run(mlp(nn.Tanh, "normal0.01", 5, 100))
    stds = [s.std for s in layers]
    # each layer multiplies the std by 0.01 * sqrt(100) = 0.1 (tanh is linear near 0)
    for a, b in zip(stds, stds[1:]):
        assert 0.085 < b / a < 0.115
    assert stds[-1] < 2e-4
    assert all(s.saturated_fraction == 0 for s in layers)
    assert ("IA204", "error") in rules


def test_xavier_keeps_tanh_healthy():
    _, layers, rules = run(mlp(nn.Tanh, "xavier", 5, 100))
    stds = [s.std for s in layers]
    assert stds[0] == pytest.approx(1.0, abs=0.05)
    assert all(0.3 < s < 1.1 for s in stds)  # a slow decline, no collapse
    assert all(s.saturated_fraction < 0.02 for s in layers)
    assert not rules


def test_xavier_lets_relu_decay_and_he_keeps_it():
    _, xavier, x_rules = run(mlp(nn.ReLU, "xavier", 5, 100))
    stds = [s.std for s in xavier]
    ratios = [b / a for a, b in zip(stds, stds[1:])]
    # relu halves the second moment; Xavier (fan_in = fan_out) does not make up for it: 1/sqrt(2)
    assert all(0.55 < r < 0.85 for r in ratios)
    assert 0.2 < stds[-1] / stds[0] < 0.3  # (1/sqrt(2))^4 = 0.25
    _, he, h_rules = run(mlp(nn.ReLU, "he", 5, 100))
    assert all(1.2 < s.std < 1.65 for s in he)  # sqrt(2) at every depth
    assert not h_rules
    assert ("IA204", "warning") not in x_rules  # 0.25x over 5 layers is above warn_ratio 0.2


def test_deep_tanh_500_units_classic_picture():
    big, small, xavier = (run(mlp(nn.Tanh, init, 10, 500)) for init in ("normal1", "normal0.01", "xavier"))
    # N(0, 1): std sqrt(500) = 22 at every layer, ~88% saturated (|N(0, 22^2)| > 2.65)
    assert all(20 < s.std < 25 and s.saturated_fraction > 0.85 for s in big[1])
    assert ("IA202", "error") in big[2]
    # the saturated stack passes gradients that grow towards the input
    assert ("IA207", "error") in big[2] or ("IA207", "warning") in big[2]
    # N(0, 0.01^2): 0.01 * sqrt(500) = 0.224 per layer, 0.224^9 = 1.4e-6 of the first layer's std
    stds = [s.std for s in small[1]]
    assert all(0.2 < b / a < 0.25 for a, b in zip(stds, stds[1:]))
    assert stds[-1] / stds[0] < 3e-6
    vanishing = [f for f in small[0].findings if f.rule == "IA204"]
    assert vanishing and vanishing[0].severity.value == "error"
    assert vanishing[0].evidence["ratio"] < 1e-5
    assert vanishing[0].evidence["predicted_ratio"] == pytest.approx(vanishing[0].evidence["ratio"], rel=0.5)
    # Xavier: a slow decline (1.0 -> ~0.25), never saturating, no finding
    xs = [s.std for s in xavier[1]]
    assert xs[0] == pytest.approx(1.0, abs=0.05) and 0.2 < xs[-1] < 0.35
    assert max(s.saturated_fraction for s in xavier[1]) < 0.02
    assert not xavier[2]


def test_deep_relu_he_stays_healthy_and_xavier_decays_to_a_warning():
    _, he, he_rules = run(mlp(nn.ReLU, "he", 10, 500))
    assert all(1.25 < s.std < 1.6 for s in he)
    assert not he_rules
    report, xavier, _ = run(mlp(nn.ReLU, "xavier", 10, 500))
    assert xavier[-1].std / xavier[0].std == pytest.approx(math.sqrt(0.5) ** 9, rel=0.35)  # 0.044
    finding = next(f for f in report.findings if f.rule == "IA204")
    # the last hidden layer feeds only the last (output) layer: its own 0.71x only scales the
    # output and is taken out, so the fall judged is 0.71^7 = 0.088 (0.71^8 before it)
    assert finding.severity.value == "warning" and 0.05 < finding.evidence["ratio"] < 0.12


def test_depth_profile_shows_static_and_measured_side_by_side():
    report, layers, _ = run(mlp(nn.Tanh, "normal0.01", 5, 100))
    rows = report.signal
    assert [r["param"] for r in rows] == [s.param for s in layers]
    for row, site in zip(rows, layers):
        assert row["measured_std"] == site.std
        assert row["measured_ratio"] == pytest.approx(row["ratio"], rel=0.3)  # static agrees here
    first = report.layers[0]
    assert first["probe"]["std"] == layers[0].std and first["probe"]["grad_norm"] > 0
