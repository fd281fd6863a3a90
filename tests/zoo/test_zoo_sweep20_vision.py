"""False-alarm causes found by the held-out vision sweep of session 20 (benchmarks/sweep/vision.py,
issue 8): each with the forward-pass measurement of what is really there, and a control where
the real defect still fires."""

from __future__ import annotations

import pytest
import torch

import initaudit
from zoo.forms import save_safetensors

timm = pytest.importorskip("timm")


def _of(report, rule, layer="", severities=("error", "warning")):
    return [f for f in report.findings if f.rule == rule and layer in f.layer and f.severity.value in severities]


# --- gMLP's spatial gate: W ~ N(0, 1e-6^2), b = 1, read from a bare checkpoint ------------------------

def _gmlp() -> torch.nn.Module:
    """timm's gmlp_ti16_224 recipe (SpatialGatingBlock + GatedMlp), 2 blocks at 64 x 64."""
    from timm.layers import GatedMlp
    from timm.models.mlp_mixer import MlpMixer, SpatialGatingBlock

    torch.manual_seed(0)
    return MlpMixer(num_classes=10, img_size=64, patch_size=16, num_blocks=2, embed_dim=32, mlp_ratio=6,
                    block_layer=SpatialGatingBlock, mlp_layer=GatedMlp).eval()


def _gate_passes(model) -> float:
    """|SGU(x) - u| / |u| on the first block: the gate is u * (proj(norm(v)) + b)."""
    sgu, seen = model.blocks[0].mlp_channels.gate, {}
    hook = sgu.register_forward_hook(lambda m, i, o: seen.update(x=i[0], out=o))
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    hook.remove()
    u = seen["x"].chunk(2, dim=-1)[0]
    return ((seen["out"] - u).norm() / u.norm()).item()


def test_gmlp_spatial_gate_starts_as_its_constant_bias_in_a_bare_checkpoint(tmp_path):
    model = _gmlp()
    # measured: the gate multiplies u by W v + 1 with W ~ 1e-6, so the unit passes u unchanged
    assert _gate_passes(model) < 1e-4
    report = initaudit.audit(save_safetensors(model, tmp_path / "gmlp.safetensors"))
    assert not _of(report, "IA104", "gate.proj")
    infos = _of(report, "IA104", "gate.proj", ("info",))
    assert len(infos) == 2 and all("constant 1" in f.message for f in infos)
    assert not [f for f in report.findings if f.severity.value in ("error", "warning")]


def test_a_tiny_gate_with_a_zero_bias_still_warns_in_a_bare_checkpoint(tmp_path):
    model = _gmlp()
    with torch.no_grad():
        model.blocks[0].mlp_channels.gate.proj.bias.zero_()
    # measured: the gate now multiplies u by ~1e-5: the channel branch's signal vanishes
    assert _gate_passes(model) > 0.99
    report = initaudit.audit(save_safetensors(model, tmp_path / "gmlp.safetensors"))
    assert [f.layer for f in _of(report, "IA104", "gate.proj")] == ["blocks.0.mlp_channels.gate.proj.weight"]


# --- NF-ResNet: a predicted correlation collapse the probe refutes ----------------------------------

def _corr(z: torch.Tensor) -> float:
    """Mean correlation between two samples' activations (IA210's c: grand mean removed)."""
    z = z.flatten(1)
    z = z - z.mean()
    z = z / z.norm(dim=1, keepdim=True)
    c = z @ z.T
    return ((c.sum() - c.trace()) / (len(z) ** 2 - len(z))).item()


def test_nf_resnet_predicted_correlation_collapse_refuted_by_the_probe_is_info():
    torch.manual_seed(0)
    model = timm.create_model("nf_resnet26", pretrained=False, num_classes=10).eval()
    # measured: weight-standardised convs (row sums 0) carry no shared offset, so samples stay
    # apart through the stages (c < 0.1 before the pool) and the logits keep D ~ 0.2, where the
    # mean-field map, reading the stored weights, predicts 0.01 (c = 0.9999)
    seen = {}
    model.head.fc.register_forward_hook(lambda m, i, o: seen.update(pre=i[0], out=o))
    model.stages[3].register_forward_hook(lambda m, i, o: seen.update(stage=o))
    x = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model.train()(x)
    assert _corr(seen["stage"]) < 0.1 and (1 - _corr(seen["out"])) ** 0.5 > 0.1
    report = initaudit.audit(model.eval())
    assert not _of(report, "IA111") and not _of(report, "IA210")
    # with the applied (standardised) weights the prediction may no longer collapse at all;
    # where it still does, the probe's measurement makes it info
    for info in _of(report, "IA111", severities=("info",)):
        assert "the probe measured" in info.message and info.evidence["measured_ratio"] > 0.1


def test_a_correlation_collapse_the_probe_confirms_still_warns():
    torch.manual_seed(0)
    layers = []
    for _ in range(8):
        layers += [torch.nn.Linear(100, 100), torch.nn.Sigmoid()]
    model = torch.nn.Sequential(*layers)
    for m in model:
        if isinstance(m, torch.nn.Linear):
            torch.nn.init.xavier_normal_(m.weight)
            torch.nn.init.zeros_(m.bias)
    report = initaudit.audit(model)
    assert _of(report, "IA111") and _of(report, "IA210")
