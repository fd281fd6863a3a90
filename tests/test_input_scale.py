"""A forward that scales its input before the first layer (``x / 255`` in the Atari DQN, pixel
bytes to [0, 1]) hands the first layer data of its own scale: the static prediction starts where
the first layer reads, and the probe feeds N(0, 255^2) so that the first layer reads unit spread.
Fed N(0, 1), the first layer would read std 0.004 and its bias alone would make the signal, a
measured collapse that is the probe's, not the model's."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.graph import OpKind, Param, ParamRole
from initaudit.moments import tensor_stats
from initaudit.schemes import fixed_std_conventions


class AtariNet(nn.Module):
    """The Nature DQN as reinforcement-learning code writes it: uint8 frames divided by 255."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                 nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 512),
                                 nn.ReLU(), nn.Linear(512, 6))
        for m in self.net:
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.weight.data.mul_(scale)  # biases keep torch's default U(-1/sqrt(fan_in), ...)

    def forward(self, x):
        return self.net(x / 255.0)


def _depth_findings(report: dict) -> list[tuple[str, str]]:
    return [(f["rule"], f["severity"]) for f in report["findings"]
            if f["rule"] in ("IA109", "IA110", "IA204", "IA205") and f["severity"] in ("warning", "error")]


def _last_hidden_ratio(model: AtariNet) -> float:
    """Measured: the std of the last hidden ReLU's input over the first conv's input, on frames
    whose scaled form has unit spread."""
    seen: dict[str, float] = {}
    hook = model.net[7].register_forward_hook(lambda m, i, o: seen.update(h=o.std().item()))
    with torch.no_grad():
        model(torch.randn(8, 4, 84, 84, generator=torch.Generator().manual_seed(1)) * 255)
    hook.remove()
    return seen["h"]


def test_a_he_initialised_atari_net_dividing_by_255_is_not_called_vanishing():
    torch.manual_seed(0)
    model = AtariNet()
    assert 0.3 < _last_hidden_ratio(model) < 3  # measured: He keeps the spread of what conv1 reads
    report = initaudit.audit(model, probe_batch_size=8).to_json()
    assert _depth_findings(report) == []
    source = report["probe"]["inputs_source"]
    assert "N(0, 255^2)" in source and "0.0039" in source, source
    assert not any(f["severity"] == "error" for f in report["findings"])


def test_fed_unit_spread_the_same_net_would_read_as_growing():
    """The mechanism's reason, measured: fed N(0, 1), conv1 reads std 0.004, its bias makes most
    of the signal, and the spread 'grows' 10x from the bias-sized first map, a finding about the
    probe, not the model."""
    torch.manual_seed(0)
    model = AtariNet()
    first = {}
    hook = model.net[0].register_forward_hook(lambda m, i, o: first.update(std=o.std().item()))
    with torch.no_grad():
        model(torch.randn(8, 4, 84, 84, generator=torch.Generator().manual_seed(1)))
    hook.remove()
    bias_std = model.net[0].bias.std().item()
    assert first["std"] < 1.5 * bias_std  # measured 0.034 against a bias std of 0.035


def test_the_same_net_initialised_100x_too_small_is_still_flagged():
    torch.manual_seed(0)
    model = AtariNet(scale=0.01)
    assert _last_hidden_ratio(model) < 0.05  # measured 0.010: only the biases are left
    rules = {rule for rule, _ in _depth_findings(initaudit.audit(model, probe_batch_size=8).to_json())}
    assert {"IA109", "IA204"} <= rules


def test_an_input_normalised_per_channel_keeps_the_unit_feed():
    """``(x - mean) / std`` inside the forward expects an image in [0, 1]: its scale is not the
    data's, so the probe keeps N(0, 1) and names no rescale."""

    class Normalised(AtariNet):
        def forward(self, x):
            mean = torch.tensor([0.5, 0.4, 0.4, 0.5]).view(1, 4, 1, 1)
            return self.net((x - mean) / torch.tensor([0.2, 0.2, 0.3, 0.2]).view(1, 4, 1, 1))

    torch.manual_seed(0)
    source = initaudit.audit(Normalised(), probe_batch_size=8).to_json()["probe"]["inputs_source"]
    assert source.startswith("N(0, 1)"), source


def _param(name: str, fan_in: int) -> Param:
    return Param(name=name, shape=(64, fan_in), dtype="float32", layer=name.split(".")[0], op="Linear",
                 kind=OpKind.LINEAR, role=ParamRole.WEIGHT, fan_in=fan_in, fan_out=64)


def _stats(std: float, fan_in: int):
    t = torch.randn(64, fan_in, generator=torch.Generator().manual_seed(0))
    return tensor_stats(t * (std / t.std().item()))


@pytest.mark.parametrize(("fans", "shared"), [
    ((512, 576), False),  # PyTorch's default 1/sqrt(3 fan_in) at each: the stds agree by arithmetic
    ((64, 3136), True),  # one 0.02 at fans 49x apart: no fan-dependent scheme gives that
])
def test_a_fixed_std_convention_needs_fans_far_apart(fans, shared):
    params = [_param(f"l{i}.weight", fan) for i, fan in enumerate(fans)]
    # torch default: 0.0255 and 0.0241, within 10% of each other
    stds = [0.02, 0.02] if shared else [1 / math.sqrt(3 * fan) for fan in fans]
    table = {p.name: _stats(s, p.fan_in) for p, s in zip(params, stds)}
    found = fixed_std_conventions(params, table.__getitem__)
    assert bool(found) is shared, found


def test_the_onnx_export_is_fed_the_same_way(tmp_path):
    from onnx_models import export

    torch.manual_seed(0)
    path = export(AtariNet().eval(), (torch.randn(2, 4, 84, 84),), tmp_path / "atari.onnx")
    report = initaudit.audit(path).to_json()
    assert "N(0, 255^2)" in report["probe"]["inputs_source"], report["probe"]["inputs_source"]
    assert _depth_findings(report) == []
