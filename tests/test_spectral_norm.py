"""IA104 on spectrally normalised layers: W / sigma_max(W) has std ~ 1 / (sqrt(fan_in) +
sqrt(fan_out)) whatever W was drawn from, so no initialisation changes the applied spread and a
scale finding there has no fix: info, naming the cause. The same applied weights stored plainly
(no parametrisation) are still a warning, and the depth rules still judge the signal."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initaudit


def _stack(sn) -> nn.Sequential:
    torch.manual_seed(0)
    layers = []
    for _ in range(6):
        layers += [sn(nn.Linear(64, 64)), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers, nn.Linear(64, 1))


NEW = nn.utils.parametrizations.spectral_norm
OLD = nn.utils.spectral_norm
X = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))


def _scale(report, severities=("warning", "error")):
    return [f for f in report.findings if f.rule == "IA104" and f.severity.value in severities]


@pytest.mark.parametrize("sn", [NEW, OLD], ids=["parametrization", "hook"])
def test_spectral_norm_sets_the_scale_no_init_changes(sn):
    model = _stack(sn).train()
    with torch.no_grad():
        for _ in range(20):  # the hook's power iteration settles as in training's first steps
            model(X)
        model.eval()
        applied = model[0].weight
        # measured: sigma_max 1, so std ~ 1 / (2 sqrt(64)) = 0.0625, half He's 0.18 before leaky_relu
        assert torch.linalg.matrix_norm(applied, ord=2) == pytest.approx(1.0, rel=0.05)
        assert applied.std() < 0.1
    report = initaudit.audit(model, inputs=X)
    assert not _scale(report)
    infos = [f for f in _scale(report, ("info",)) if "spectral normalisation" in f.message]
    assert len(infos) >= 5


def test_the_same_weights_stored_plainly_are_still_a_warning():
    model = _stack(NEW).eval()
    plain = _stack(lambda m: m).eval()
    with torch.no_grad():
        for a, b in zip(model, plain):
            if isinstance(a, nn.Linear):
                b.weight.copy_(a.weight)
                b.bias.copy_(a.bias)
    assert _scale(initaudit.audit(plain, inputs=X))
