"""The weight a custom layer really applies, and the norm parametrisation and bare-file causes
of the session-20 sweep (issue 8): each cause with the measurement that shows the alarm false,
and a control where the real defect still fires."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
from torch import nn

import initaudit

timm = pytest.importorskip("timm")


def _of(report, rule, layer="", severities=("error", "warning")):
    return [f for f in report.findings if f.rule == rule and layer in f.layer and f.severity.value in severities]


# --- weight standardisation (NFNet's ScaledStdConv2d, BiT's StdConv2d) ----------------------------------

SILU_GAMMA = 1.7868  # timm's _nonlin_gamma["silu"]: 1 / std(silu(z)), z ~ N(0, 1)


def _nf_chain(depth: int = 10, width: int = 32) -> nn.Module:
    """An NFNet-style chain: ScaledStdConv2d (w' = gain gamma (w - mean) / (std sqrt(fan_in))
    per output channel) then SiLU, stored weights kaiming_normal(linear) as timm's NFNet draws."""
    from timm.layers import ScaledStdConv2d

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        conv = ScaledStdConv2d(3 if i == 0 else width, width, 3, padding=1, gamma=SILU_GAMMA)
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="linear")
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.SiLU()]
    return nn.Sequential(*layers).eval()


def _applied(conv) -> torch.Tensor:
    return nn.functional.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None,
                                    weight=(conv.gain * conv.scale).reshape(-1), training=True,
                                    momentum=0.0, eps=conv.eps).reshape_as(conv.weight)


def _ratio(model: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float(model[:-1](x).std() / x.std())  # the last conv's output over the input


def test_weight_standardised_convs_are_judged_as_applied_and_not_a_false_vanish():
    model, x = _nf_chain(), torch.randn(8, 3, 16, 16)
    conv = model[2]
    # measured: the applied weight is gamma / sqrt(fan_in) per channel, 1.78x the stored spread,
    # and every row sums to zero (the input mean cancels)
    with torch.no_grad():
        applied = _applied(conv)
    assert 1.7 < float(applied.std() / conv.weight.std()) < 1.85
    assert float(applied.reshape(32, -1).sum(1).abs().max()) < 1e-4
    real = _ratio(model, x)
    assert 0.5 < real < 4  # healthy: about 1.05x per layer (silu at this spread) over 10 layers
    report = initaudit.audit(model, inputs=x)
    assert not _of(report, "IA109") and not _of(report, "IA110") and not _of(report, "IA104")
    row = next(r for r in report.to_json()["layers"] if r["param"] == "2.weight")
    assert abs(row["applied_stats"]["std"] - float(applied.std())) < 1e-3 * float(applied.std())
    assert row["stats"]["std"] == pytest.approx(float(conv.weight.std()), rel=1e-4)  # reported as stored
    last = next(r for r in report.to_json()["layers"] if r["param"] == "18.weight")
    # the prediction (rows summing to zero: Var(phi), not E[phi^2]) against the forward pass
    assert abs(math.log(last["predicted_std"] / real)) < math.log(1.3)


def test_a_weight_standardised_chain_with_a_small_gain_still_vanishes():
    model, x = _nf_chain(), torch.randn(8, 3, 16, 16)
    with torch.no_grad():
        for m in model:
            if hasattr(m, "gain"):
                m.gain.mul_(0.3)  # the applied spread 0.3x: a real collapse
    assert _ratio(model, x) < 1e-3  # measured
    report = initaudit.audit(model, inputs=x)
    assert [f.severity.value for f in _of(report, "IA109")] == ["error"]


def _tiny_bit() -> nn.Module:
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    torch.manual_seed(0)
    return ResNetV2(layers=[2, 2], channels=(32, 64), stem_chs=16, conv_layer=partial(StdConv2d, eps=1e-8),
                    norm_layer=partial(GroupNormAct, num_groups=8), num_classes=10).eval()


def test_bit_std_conv_spread_is_set_by_the_layer_not_the_init_so_init_scale_is_info():
    model, x = _tiny_bit(), torch.randn(8, 3, 32, 32)
    with torch.no_grad():
        before = model(x)
        conv = model.stages[0].blocks[0].conv2
        conv.weight.mul_(10.0)  # another init scale of the stored weight
        after = model(x)
        conv.weight.div_(10.0)
        features = model.forward_head(model.forward_features(x), pre_logits=True)
    # measured: the applied weight (w - mean) / std per channel does not depend on the init's scale
    assert torch.allclose(before, after, atol=1e-5)
    assert 0.1 < float(features.std()) < 10  # the head reads a healthy, normalised signal
    report = initaudit.audit(model, inputs=x)
    infos = _of(report, "IA104", "conv", severities=("info",))
    assert any("standardises each output channel" in f.message for f in infos)
    assert not _of(report, "IA104") and not _of(report, "IA109") and not _of(report, "IA110")


# --- x * (1 + w) norms in module form (RecurrentGemma) ---------------------------------------------------

def _recurrent_gemma():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.RecurrentGemmaConfig(num_hidden_layers=3, vocab_size=96, hidden_size=32, intermediate_size=64,
                                               num_attention_heads=4, num_key_value_heads=1, lru_width=32,
                                               attention_window_size=16, conv1d_width=4, logits_soft_cap=30.0,
                                               block_types=["recurrent", "recurrent", "attention"])
    config._attn_implementation = "eager"
    return transformers.RecurrentGemmaForCausalLM(config).eval()


def test_recurrent_gemma_one_plus_w_norms_are_read_in_module_form():
    model = _recurrent_gemma()
    norm = model.model.layers[0].temporal_pre_norm
    x = torch.randn(4, 32)
    assert float(norm.weight.abs().max()) == 0.0
    with torch.no_grad():
        assert float(norm(x).pow(2).mean().sqrt()) == pytest.approx(1.0, rel=1e-3)  # measured gain 1
    rows = {r["param"]: r for r in initaudit.audit(model).to_json()["layers"]}
    # the prediction after each norm was 0 (gain w = 0), so every depth ratio was nan; now it
    # follows the probe's measured spread
    for name in ("model.layers.0.temporal_block.linear_y.weight", "model.layers.2.mlp_block.gate_proj.weight"):
        pred, probe = rows[name]["predicted_std"], rows[name]["probe"]["std"]
        assert pred and abs(math.log(pred / probe)) < math.log(1.2), (name, pred, probe)


class PlainRMSNorm(nn.Module):
    def __init__(self, d: int, one_plus: bool):
        super().__init__()
        self.weight, self.one_plus = nn.Parameter(torch.zeros(d)), one_plus

    def forward(self, x):
        y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)
        return y * (1 + self.weight) if self.one_plus else y * self.weight


def test_a_zero_plain_gamma_norm_still_collapses_the_prediction():
    torch.manual_seed(0)
    for one_plus in (True, False):
        model = nn.Sequential(nn.Linear(16, 32), PlainRMSNorm(32, one_plus), nn.Linear(32, 32, bias=False), nn.ReLU(),
                              nn.Linear(32, 4))
        rows = {r["param"]: r for r in initaudit.audit(model, inputs=torch.randn(8, 16)).to_json()["layers"]}
        pred = rows["2.weight"]["predicted_std"]
        assert (pred > 0.1) if one_plus else (pred == 0.0), (one_plus, pred)


# --- EnCodec's codebook buffers in a bare file -------------------------------------------------------------


def test_encodec_zero_codebook_tables_in_a_bare_file_are_warnings_that_say_the_file_cannot_tell(tmp_path):
    from zoo.forms import save_safetensors
    from zoo.test_zoo_onnx_causes import _encodec

    model, x = _encodec(), torch.randn(4, 1, 8 * 64)
    book = model.quantizer.layers[0].codebook
    with torch.no_grad():
        out = model(x).audio_values
        # measured: forward never reads embed_avg (NaN there changes nothing) ...
        book.embed_avg.fill_(float("nan"))
        assert torch.equal(model(x).audio_values, out)
        book.embed_avg.zero_()
        # ... and reads embed: zero, every frame gets code 0 and the output ignores the input
        assert model.encode(x).audio_codes.unique().tolist() == [0]
        assert float(out.std(0).max()) == 0.0
    report = initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors"))
    found = _of(report, "IA102", "codebook")
    assert len(found) == 4 and all(f.severity.value == "warning" and "cannot tell" in f.message for f in found)


def test_a_zero_table_beside_non_zero_peers_stays_an_error_in_a_bare_file(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tensors = {f"layers.{i}.embed_tokens.weight": torch.randn(64, 32) for i in range(3)}
    tensors["layers.1.embed_tokens.weight"] = torch.zeros(64, 32)
    save_file(tensors, str(tmp_path / "t.safetensors"))
    found = _of(initaudit.audit(tmp_path / "t.safetensors"), "IA102")
    assert [(f.layer, f.severity.value) for f in found] == [("layers.1.embed_tokens.weight", "error")]
