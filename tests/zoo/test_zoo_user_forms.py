"""The forms users really hand models over in (issue 8): a bf16/fp16 model, a torch.compile'd
one, a checkpoint behind a wrapper's prefix, a LoRA-wrapped model. Each gives the findings of the
plain fp32 module (same rule, severity and layer), and a planted defect still fires in it."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn

from zoo.conftest import build
from zoo.forms import audit_form


def _audit(form, model, inputs, tmp_path, **kw):
    tmp_path.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return audit_form(form, model, inputs, tmp_path, **kw)


def _seen(report) -> list[tuple[str, str, str]]:
    return sorted((f.severity.value, f.rule, f.layer) for f in report.findings if f.severity.value != "info")


def _zeroed_ffn(model: nn.Module) -> nn.Module:
    model = copy.deepcopy(model)
    nn.init.zeros_(model.bert.encoder.layer[0].intermediate.dense.weight)
    return model


ZEROED = ("error", "IA102", "bert.encoder.layer.0.intermediate.dense.weight")


# --- bf16 / fp16 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("name", ["whisper", "resnet18_tv"])
def test_half_precision_model_with_float32_inputs(name, dtype, tmp_path):
    """The zoo's float32 inputs (what a .npy file holds: numpy has no bfloat16) reach a bf16/fp16
    model in its dtype, as ``x.to(model.dtype)`` in the user's code: the probe runs and finds
    what it finds in float32 (whisper's stem warnings, measured in test_zoo_healthy)."""
    model, inputs = build(name)
    fp32 = _audit("module", model, inputs, tmp_path / "fp32")
    half = _audit("module", copy.deepcopy(model).to(dtype), inputs, tmp_path / "half")
    assert half.probe.ran, half.probe.skipped_reason
    assert "cast to the model's" in half.probe.inputs_source
    assert _seen(half) == _seen(fp32)


def test_half_precision_planted_defect_fires(tmp_path):
    model, inputs = build("bert")
    report = _audit("module", _zeroed_ffn(model).to(torch.bfloat16), inputs, tmp_path)
    assert ZEROED in _seen(report)


# --- torch.compile -------------------------------------------------------------------------------

@pytest.mark.parametrize("form", ["module", "safetensors-model"])
def test_compiled_module_is_audited_as_the_module_inside(form, tmp_path):
    """torch.compile(model) renames every parameter ``_orig_mod.*`` and its compiled forward does
    not run under the capture's dispatch mode: the audit is of ``_orig_mod``, with its names.
    Before: whisper's four warnings came back at ``_orig_mod.model.encoder.*``."""
    model, inputs = build("whisper")
    eager = _audit(form, model, inputs, tmp_path / "eager")
    compiled = _audit(form, torch.compile(model), inputs, tmp_path / "compiled")
    assert _seen(eager) and _seen(compiled) == _seen(eager)
    assert any("OptimizedModule" in n for n in compiled.notes) or form != "module"


def test_compiled_planted_defect_fires(tmp_path):
    model, inputs = build("bert")
    report = _audit("module", torch.compile(_zeroed_ffn(model)), inputs, tmp_path)
    assert ZEROED in _seen(report)
