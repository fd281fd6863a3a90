"""Constants before a segment's first layer, and stds that agree by one fan-dependent rule.

A forward that scales its input before the first layer (``x / 255`` in the Atari DQN, pixel
bytes to [0, 1]) hands the first layer data of its own scale: the static prediction starts where
the first layer reads, and the probe feeds N(0, 255^2) so that the first layer reads unit spread.
Fed N(0, 1), the first layer would read std 0.004 and its bias alone would make the signal, a
measured collapse that is the probe's, not the model's. The same for an embedding times
sqrt(d_model): the segment's reference is what its first layer reads."""

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


def _param(name: str, fan_in: int, fan_out: int) -> Param:
    return Param(name=name, shape=(fan_out, fan_in), dtype="float32", layer=name.split(".")[0], op="Linear",
                 kind=OpKind.LINEAR, role=ParamRole.WEIGHT, fan_in=fan_in, fan_out=fan_out)


def _stats(std: float, fan_in: int, fan_out: int):
    t = torch.randn(fan_out, fan_in, generator=torch.Generator().manual_seed(0))
    return tensor_stats(t * (std / t.std().item()))


@pytest.mark.parametrize(("fans", "shared"), [
    (((512, 256), (576, 512)), False),  # PyTorch's default 1/sqrt(3 fan_in) at each: agreeing by arithmetic
    (((64, 256), (3136, 64)), True),  # one 0.02 at fans 49x apart: no fan-dependent scheme gives that
    (((64, 64), (3136, 64)), False),  # He fan-out (torchvision): one fan_out, one std
])
def test_a_fixed_std_convention_needs_fans_far_apart(fans, shared):
    params = [_param(f"l{i}.weight", *fan) for i, fan in enumerate(fans)]
    # torch default: 0.0255 and 0.0241, within 10% of each other
    stds = [0.02, 0.02] if shared or fans[0][1] == fans[1][1] else [1 / math.sqrt(3 * f[0]) for f in fans]
    table = {p.name: _stats(s, p.fan_in, p.fan_out) for p, s in zip(params, stds)}
    found = fixed_std_conventions(params, table.__getitem__)
    assert bool(found) is shared, found


def test_the_onnx_export_is_fed_the_same_way(tmp_path):
    from onnx_models import export

    torch.manual_seed(0)
    path = export(AtariNet().eval(), (torch.randn(2, 4, 84, 84),), tmp_path / "atari.onnx")
    report = initaudit.audit(path).to_json()
    assert "N(0, 255^2)" in report["probe"]["inputs_source"], report["probe"]["inputs_source"]
    assert _depth_findings(report) == []


def test_a_transposed_conv_mirroring_a_conv_is_not_a_shared_fixed_std():
    """ConvTranspose2d(32, 16, 3) stores (32, 16, 3, 3); torch's default reads fan_in 16 * 9 =
    144 from that shape, the true fan_in of the Conv2d(16, 32, 3) it mirrors: both at
    1/sqrt(3 * 144) = 0.048 by one fan-dependent rule, not a std shared across fans."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.Conv2d(16, 32, 3), nn.ReLU(),
                          nn.ConvTranspose2d(32, 16, 3), nn.ReLU(), nn.ConvTranspose2d(16, 1, 3))
    assert abs(model[2].weight.std().item() - model[4].weight.std().item()) < 0.003
    findings = initaudit.audit(model, probe_enabled=False).to_json()["findings"]
    assert not [f["message"] for f in findings if "fixed-std" in f["message"]]
    assert any(f["rule"] == "IA104" and "torch-default" in f["message"] for f in findings)


class ScaledEmbeddingLM(nn.Module):
    """Token embeddings drawn N(0, 1/d) and multiplied by sqrt(d) in forward (Vaswani et al.;
    Gemma, fairseq's embed_scale), then a He-initialised ReLU MLP."""

    def __init__(self, d: int = 64, gain: float = 1.0):
        super().__init__()
        self.d = d
        self.embed = nn.Embedding(100, d)
        nn.init.normal_(self.embed.weight, std=d ** -0.5)
        self.fc1, self.fc2, self.head = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, 100)
        for layer in (self.fc1, self.fc2):
            nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
            nn.init.zeros_(layer.bias)
        self.fc2.weight.data.mul_(gain)

    def forward(self, ids):
        x = self.embed(ids) * math.sqrt(self.d)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def _growth(report: dict) -> list[str]:
    return [f["rule"] for f in report["findings"]
            if f["rule"] in ("IA110", "IA205") and f["severity"] in ("warning", "error")]


def test_an_embedding_scaled_by_sqrt_d_is_where_its_segment_starts():
    """The segment's reference is what its first layer reads: the embedding times sqrt(64) = 8,
    unit spread by design. Measured: fc2's output spread is within 2x of that (He keeps it),
    8x the table's own spread; no growth finding, predicted or measured."""
    torch.manual_seed(0)
    model = ScaledEmbeddingLM()
    ids = torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        scaled = model.embed(ids) * 8
        out = model.fc2(torch.relu(model.fc1(scaled)))
    assert 0.5 < out.std().item() / scaled.std().item() < 2
    assert out.std().item() / model.embed(ids).std().item() > 5
    report = initaudit.audit(model, inputs=ids).to_json()
    assert _growth(report) == []
    (row,) = [s for s in report["signal"] if s["param"] == "fc2.weight"]
    assert row["start_gain"] == pytest.approx(8.0) and 0.5 < row["measured_ratio"] < 2


def test_a_layer_that_really_grows_after_a_scaled_embedding_is_still_found():
    torch.manual_seed(0)
    model = ScaledEmbeddingLM(gain=30.0)
    ids = torch.randint(0, 100, (8, 16), generator=torch.Generator().manual_seed(0))
    assert set(_growth(initaudit.audit(model, inputs=ids).to_json())) >= {"IA110", "IA205"}
