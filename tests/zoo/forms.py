"""The four forms a zoo model is audited in: the live module, a .safetensors file with the
architecture (``--model``), a bare .safetensors file, and an ONNX export."""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

import initaudit

FORMS = ("module", "safetensors-model", "safetensors-bare", "onnx")


def call(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, dict):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def save_safetensors(model: nn.Module, path: Path) -> Path:
    from safetensors.torch import save_model

    save_model(model, str(path))  # drops tied duplicates, as transformers' save_pretrained does
    return path


class _Positional(nn.Module):
    """Keyword inputs as positional ones, for the exporter."""

    def __init__(self, model: nn.Module, keys: list[str]):
        super().__init__()
        self.model, self.keys = model, keys

    def forward(self, *args):
        out = self.model(**dict(zip(self.keys, args)))
        if isinstance(out, dict):
            return tuple(v for v in out.values() if isinstance(v, torch.Tensor))
        return out


def export_onnx(model: nn.Module, inputs: Any, path: Path) -> Path:
    """The legacy TorchScript exporter in eval mode (what most deployed ONNX files come from)."""
    model = copy.deepcopy(model).eval()
    if isinstance(inputs, dict):
        keys = list(inputs)
        wrapped, args, names = _Positional(model, keys), tuple(inputs.values()), keys
    else:
        wrapped, args = model, inputs if isinstance(inputs, tuple) else (inputs,)
        names = [f"input_{i}" for i in range(len(args))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, args, str(path), dynamo=False, input_names=names, opset_version=17)
    return path


def audit_form(form: str, model: nn.Module, inputs: Any, tmp: Path, **kw) -> initaudit.Report:
    """Audit ``model`` in ``form``; the probe gets the zoo's inputs wherever it can run."""
    if form == "module":
        return initaudit.audit(model, inputs=inputs, **kw)
    if form == "safetensors-model":
        path = save_safetensors(model, tmp / "model.safetensors")
        return initaudit.audit(path, model=model, inputs=inputs, **kw)
    if form == "safetensors-bare":
        path = save_safetensors(model, tmp / "model.safetensors")
        return initaudit.audit(path, **kw)
    if form == "onnx":
        path = export_onnx(model, inputs, tmp / "model.onnx")
        feeds = tuple(inputs.values()) if isinstance(inputs, dict) else inputs
        return initaudit.audit(path, inputs=feeds, **kw)
    raise ValueError(form)


def findings(report: initaudit.Report, severities=("error", "warning")) -> list[tuple[str, str, str, str]]:
    """(severity, rule, layer, message) of the findings at the given severities."""
    return [(f.severity.value, f.rule, f.layer, f.message) for f in report.findings
            if f.severity.value in severities]
