"""IA208 where the probe's input cannot tell units apart: units whose weights differ but read
so few input values on the probe (fan_in x samples) that all of them are zero by chance (a
ReLU output is 0 about half the time) copy each other with zero gradient. That says nothing
about the weights (info, with the count); a dead input that starves every unit of a layer, or
units whose weights are copies, stay errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initaudit


def _ia208(report):
    return [f for f in report.findings if f.rule == "IA208"]


def test_mobileone_depthwise_branch_on_a_one_pixel_map():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("mobileone_s0", pretrained=False, num_classes=10).eval()
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = _ia208(initaudit.audit(model, inputs=x))
    assert got and all(f.severity.value == "info" for f in got)  # was 1 error
    f = next(f for f in got if f.layer == "stages.3.0.conv_scale.conv")
    assert f.evidence["values_read"] == 4 and f.evidence["chance_copies"] == 16  # 256 units * 2^-4
    # the measurement: the 1x1 stride-2 branch reads one pixel of its 2x2 input per sample; the
    # copied units' input channels are zero there on all 4 samples, not elsewhere on the map
    conv = model.stages[3][0].conv_scale.conv
    seen = {}
    hook = conv.register_forward_hook(lambda m, a, o: seen.update(x=a[0], y=o))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.train()
    with torch.no_grad():
        model(x)
    hook.remove()
    units = f.evidence["example"]
    assert seen["y"].shape[-2:] == (1, 1) and (seen["y"][:, units] == 0).all()
    assert (seen["x"][:, units, 0, 0] == 0).all() and (seen["x"][:, units].abs().sum() > 0)
    rows = conv.weight.detach().reshape(conv.out_channels, -1)[units]
    assert len(set(rows.flatten().tolist())) == len(units)  # the weights are not copies


def test_a_dead_input_that_starves_every_unit_stays_an_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    nn.init.constant_(model[0].bias, -10.0)  # every unit of the first ReLU is dead
    nn.init.zeros_(model[2].bias)  # so every unit of layer 2 outputs 0: copies, 32 x 4 values read
    got = _ia208(initaudit.audit(model, inputs=torch.randn(4, 16)))
    assert [(f.layer, f.severity.value) for f in got if f.layer == "2"] == [("2", "error")]
