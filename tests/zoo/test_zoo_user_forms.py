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

@pytest.mark.parametrize("wrap", [torch.compile, nn.DataParallel], ids=["compile", "DataParallel"])
@pytest.mark.parametrize("form", ["module", "safetensors-model"])
def test_wrapped_module_is_audited_as_the_module_inside(form, wrap, tmp_path):
    """torch.compile(model) renames every parameter ``_orig_mod.*`` (DataParallel: ``module.*``)
    and a compiled forward does not run under the capture's dispatch mode: the audit is of the
    module inside, with its names. Before: whisper's four warnings came back at
    ``_orig_mod.model.encoder.*``."""
    model, inputs = build("whisper")
    eager = _audit(form, model, inputs, tmp_path / "eager")
    wrapped = _audit(form, wrap(model), inputs, tmp_path / "wrapped")
    assert _seen(eager) and _seen(wrapped) == _seen(eager)
    assert any("audited the module inside" in n for n in wrapped.notes) or form != "module"


def test_compiled_planted_defect_fires(tmp_path):
    model, inputs = build("bert")
    report = _audit("module", torch.compile(_zeroed_ffn(model)), inputs, tmp_path)
    assert ZEROED in _seen(report)


# --- LoRA (peft) ---------------------------------------------------------------------------------

LORA_FORMS = ("module", "safetensors-model", "safetensors-bare", "adapter-file")


def _audit_lora(form, wrapped, inputs, tmp_path):
    """``adapter-file``: what peft's save_pretrained writes (the factors only, no base weight)."""
    if form != "adapter-file":
        return _audit(form, wrapped, inputs, tmp_path)
    import initaudit

    wrapped.save_pretrained(str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return initaudit.audit(tmp_path / "adapter_model.safetensors")


def _lora(name: str, zero_a: bool = False):
    peft = pytest.importorskip("peft", reason="peft is not installed (pip install -e '.[test]')")
    model, inputs = build(name)
    torch.manual_seed(0)
    wrapped = peft.get_peft_model(copy.deepcopy(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    if zero_a:
        for n, p in wrapped.named_parameters():
            if "lora_A" in n:
                nn.init.zeros_(p)
    return model, wrapped, inputs


def _lora_grads(wrapped, inputs) -> dict[str, float]:
    """Gradient norm of every LoRA factor after one backward of sum(logits * r)."""
    wrapped.zero_grad()
    out = wrapped(**inputs).logits
    (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(1))).sum().backward()
    return {n: p.grad.norm().item() for n, p in wrapped.named_parameters() if "lora_" in n}


@pytest.mark.parametrize("form", LORA_FORMS)
@pytest.mark.parametrize("name", ["llama", "bert"])
def test_lora_adapter_at_init_is_healthy(name, form, tmp_path):
    """lora_B = 0 by design: measured, the wrapped model's logits equal the base model's
    (the adapter starts as the identity) and every B gets a gradient (A is Kaiming-uniform). The
    frozen base weights (requires_grad=False) are not unused or dead. Before: the bare
    safetensors form and the adapter file warned IA102 on every lora_B (14 on LLaMA, 13 on
    BERT)."""
    base, wrapped, inputs = _lora(name)
    with torch.no_grad():
        assert torch.equal(wrapped(**inputs).logits, base(**inputs).logits)
    grads = _lora_grads(wrapped, inputs)
    assert all(g > 0 for n, g in grads.items() if "lora_B" in n)
    report = _audit_lora(form, wrapped, inputs, tmp_path)
    assert _seen(report) == []


@pytest.mark.parametrize("form", LORA_FORMS)
def test_lora_with_zero_a_never_learns(form, tmp_path):
    """A = 0 and B = 0: measured, every factor's gradient is exactly 0 (dL/dA = B^T g x^T,
    dL/dB = g (A x)^T), so the adapter never learns: an error on every A in every form."""
    _, wrapped, inputs = _lora("llama", zero_a=True)
    grads = _lora_grads(wrapped, inputs)
    assert grads and all(g == 0 for g in grads.values())
    report = _audit_lora(form, wrapped, inputs, tmp_path)
    zero_a = [f for f in report.findings if f.rule == "IA102" and "lora_A" in f.layer]
    assert len(zero_a) == sum("lora_A" in n for n in grads) and all(f.severity.value == "error" for f in zero_a)


# --- transformers' default attention (sdpa) against eager -----------------------------------------

@pytest.mark.parametrize("name,form", [("llama", "module"), ("whisper", "safetensors-model"),
                                       ("bert", "onnx"), ("clip", "module")])
def test_default_attention_gives_the_eager_findings(zoo_report, name, form, tmp_path):
    """The zoo builds with transformers' own choice (sdpa where the architecture has it); the
    same model switched to eager attention gives the same findings (measured on every
    transformers entry in the module, safetensors-model and ONNX forms: identical)."""
    model, inputs = build(name)
    assert model.config._attn_implementation == "sdpa"
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    default = zoo_report(name, form)
    assert default.probe.ran, default.probe.skipped_reason
    assert _seen(_audit(form, eager, inputs, tmp_path)) == _seen(default)


def test_training_mode_and_gradient_checkpointing_change_nothing(zoo_report, tmp_path):
    """A model handed over in train() mode with gradient checkpointing on: the audit runs it as
    it runs any model (eval mode, restored afterwards) and finds what it finds in the eval build
    (measured on LLaMA, GPT-2, BERT, T5, Whisper, ViT, CLIP, Mistral, Qwen2: identical)."""
    model, inputs = build("whisper")
    model = copy.deepcopy(model)
    model.gradient_checkpointing_enable()
    model.train()
    report = _audit("module", model, inputs, tmp_path)
    assert model.training and model.is_gradient_checkpointing
    assert _seen(report) == _seen(zoo_report("whisper", "module"))


# --- checkpoints behind a wrapper's prefix -------------------------------------------------------

def _names(report) -> list[str]:
    return sorted(r["param"] for r in report.layers)


@pytest.mark.parametrize("wrap", ["_orig_mod.", "module._orig_mod.", "module."])
def test_wrapped_state_dict_keeps_the_model_names(wrap, tmp_path):
    """torch.save(torch.compile(model).state_dict()) names every tensor ``_orig_mod.*`` (DDP
    around it: ``module._orig_mod.*``): a bare checkpoint is audited under the model's own names,
    the same findings as the plain state_dict. Before: ``_orig_mod.`` stayed in every name."""
    import initaudit

    model, _ = build("whisper")
    sd = model.state_dict()
    plain, wrapped = tmp_path / "plain.pt", tmp_path / "wrapped.pt"
    torch.save(sd, plain)
    torch.save({"state_dict": {wrap + k: v for k, v in sd.items()}, "epoch": 0}, wrapped)
    want, got = initaudit.audit(plain), initaudit.audit(wrapped)
    assert _names(got) == _names(want) and _seen(got) == _seen(want)


def test_compiled_safetensors_keeps_the_model_names(tmp_path):
    """save_file(torch.compile(model).state_dict()): a bare .safetensors under ``_orig_mod.*``
    is read under the model's names, lazily (the tensors are read as stored)."""
    import initaudit
    from safetensors.torch import save_file

    model, _ = build("whisper")
    sd = {k: v.contiguous() for k, v in model.state_dict().items() if "proj_out" not in k}  # untied
    save_file(sd, str(tmp_path / "plain.safetensors"))
    save_file({"_orig_mod." + k: v for k, v in sd.items()}, str(tmp_path / "compiled.safetensors"))
    want, got = initaudit.audit(tmp_path / "plain.safetensors"), initaudit.audit(tmp_path / "compiled.safetensors")
    assert _names(got) == _names(want) and _seen(got) == _seen(want)
