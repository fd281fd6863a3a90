"""Findings of the held-out sweeps of session 22 (benchmarks/sweep/text.py, vision.py, plain.py;
issue 8) that are true: each pinned with the forward-pass measurement that proves it."""

from __future__ import annotations

import pytest
import torch

import initaudit
from zoo.forms import save_safetensors

transformers = pytest.importorskip("transformers")


def _of(report, rule, layer="", severities=("error", "warning")):
    return [f for f in report.findings if f.rule == rule and layer in f.layer and f.severity.value in severities]


# --- OWL-ViT's box head as transformers 5.x builds it: N(0, 1) Linears ----------------------------------

def _owlvit() -> torch.nn.Module:
    """OwlViTForObjectDetection at the sweep's small config (width 32, 2 + 2 layers, 32 px images)."""
    torch.manual_seed(0)
    config = transformers.OwlViTConfig(
        text_config=dict(vocab_size=128, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4), projection_dim=32)
    return transformers.OwlViTForObjectDetection(config).eval()


def _inputs():
    g = torch.Generator().manual_seed(0)
    return {"pixel_values": torch.randn(2, 3, 32, 32, generator=g),
            "input_ids": torch.randint(0, 128, (2, 16), generator=g),
            "attention_mask": torch.ones(2, 16, dtype=torch.long)}


def test_owlvit_box_head_is_drawn_at_unit_std_and_saturates_its_sigmoid(tmp_path):
    """OwlViTPreTrainedModel._init_weights draws no special init for the box head, so its three
    Linears get the base N(0, initializer_factor = 1) draw: each multiplies the spread by about
    sqrt(fan_in) (GELU between), and the box logits (plus box_bias) saturate the sigmoid. The
    findings are true: a model trained from this init starts with every box pinned at 0 or 1
    and sigmoid' ~ 0 on the L1/GIoU box losses. ``visual_projection`` and ``logit_scale`` feed
    only OwlViTModel's image-text logits, which the detection outputs never read."""
    model = _owlvit()
    head = model.box_head
    assert all(abs(float(m.weight.std()) - 1.0) < 0.1 for m in (head.dense0, head.dense1, head.dense2))
    seen = {}
    hooks = [head.register_forward_hook(lambda m, i, o: seen.update(x=i[0], y=o))]
    model.train()
    out = model(**_inputs())
    hooks[0].remove()
    logits = seen["y"] + model.box_bias
    assert float(logits.std()) > 50 * float(seen["x"].std())  # the head multiplies its input's spread > 50x
    assert float((logits.abs() > 4.6).float().mean()) > 0.9  # sigmoid < 0.01 or > 0.99
    (out.pred_boxes.sum() + out.logits.sum()).backward()
    unreached = {n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()}
    assert unreached == {"owlvit.logit_scale", "owlvit.visual_projection.weight"}
    model.zero_grad(set_to_none=True)
    model.eval()

    for report in (initaudit.audit(model),
                   initaudit.audit(str(save_safetensors(model, tmp_path / "owlvit.safetensors")), model=model)):
        (growth,) = _of(report, "IA110", "box_head.dense2")
        (measured,) = _of(report, "IA205", "box_head.dense2")
        assert growth.severity.value == measured.severity.value == "error"
        assert _of(report, "IA202", "box_head.dense2")
        unused = {n for f in _of(report, "IA209") for n in f.evidence.get("params", [])}
        assert unused == {"owlvit.logit_scale", "owlvit.visual_projection.weight"}
        errors = [f for f in report.findings if f.severity.value == "error"]
        assert {f.layer for f in errors} == {"box_head.dense2"}
