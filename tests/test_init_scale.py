"""IA104 on the textbook cases (issue 9): every affected layer of a deep stack is a warning that
names the scheme found, the one expected and the torch.nn.init fix; shallow networks at torch's
defaults stay at info."""

from __future__ import annotations


import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.engine import Settings

ACTS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "selu": nn.SELU, "tanh": nn.Tanh}


def stack(act: str, init: str, depth: int, width: int = 100) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(width, width)
        if init == "xavier":
            nn.init.xavier_normal_(lin.weight)
        elif init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        elif init == "normal1":
            nn.init.normal_(lin.weight, std=1.0)
        elif init == "normal001":
            nn.init.normal_(lin.weight, std=0.01)
        if init != "default":
            nn.init.zeros_(lin.bias)
        layers += [lin, ACTS[act]()]
    return nn.Sequential(*layers[:-1])


def ia104(model):
    report = initaudit.audit(model, settings=Settings(probe_enabled=False, select=["IA104"]))
    return {f.layer: f for f in report.findings}


def hidden(model) -> list[str]:
    names = [f"{i}.weight" for i, m in enumerate(model) if isinstance(m, nn.Linear)]
    return names[:-1]


@pytest.mark.parametrize("act, init, depth, found, fix", [
    ("relu", "xavier", 20, "xavier", "kaiming_normal_(w, nonlinearity='relu')"),
    ("sigmoid", "he", 10, "he(relu)", "xavier_normal_(w, gain=torch.nn.init.calculate_gain('sigmoid'))"),
    ("selu", "he", 16, "he(relu)", "LeCun normal"),
    ("relu", "default", 30, "torch-default", "kaiming_normal_(w, nonlinearity='relu')"),
])
def test_textbook_mismatch_warns_on_every_affected_layer_with_the_fix(act, init, depth, found, fix):
    model = stack(act, init, depth)
    findings = ia104(model)
    for name in hidden(model):
        f = findings[name]
        assert f.severity.value == "warning", f.message
        assert found in f.message and fix in f.fix
        assert f.evidence["scheme"] == {"relu": "he", "sigmoid": "xavier", "selu": "lecun"}[act]
        assert f.evidence["stack_factor"] < 0.2 or f.evidence["stack_factor"] > 5


@pytest.mark.parametrize("act", list(ACTS))
@pytest.mark.parametrize("init", ["normal1", "normal001"])
def test_n01_and_n001_warn_with_every_activation(act, init):
    model = stack(act, init, 5)
    findings = ia104(model)
    assert all(findings[n].severity.value == "warning" for n in hidden(model))


def test_classic_five_layer_xavier_relu_is_info_with_the_he_fix():
    findings = ia104(stack("relu", "xavier", 5))
    assert {f.severity.value for f in findings.values()} == {"info"}
    f = findings["0.weight"]
    assert f.fix == "torch.nn.init.kaiming_normal_(w, nonlinearity='relu')"
    assert f.evidence["stack_factor"] == pytest.approx(2 ** -1.5, rel=0.1)  # 3 layers after the first


def test_shallow_torch_default_models_get_no_warning():
    torch.manual_seed(0)
    tutorial = nn.Sequential(nn.Flatten(), nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                             nn.Linear(512, 10))
    two = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    for model in (tutorial, two):
        findings = ia104(model)
        assert findings and {f.severity.value for f in findings.values()} == {"info"}  # named, at info


def test_correct_schemes_stay_quiet():
    assert ia104(stack("relu", "he", 20)) == {}
    assert ia104(stack("tanh", "xavier", 10)) == {}


def test_fixed_std_convention_is_named_and_judged_by_its_consequence():
    """VGG-style N(0, 0.01) linears of different fans: named as a fixed-std convention; a stack
    whose signal holds up stays at info."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4096, 1024), nn.ReLU(), nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)
    findings = ia104(model)
    assert "fixed-std" in findings["2.weight"].message
    assert {f.severity.value for f in findings.values()} == {"info"}
