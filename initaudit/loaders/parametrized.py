"""Weights behind a torch parametrisation, judged as the layer applies them.

``torch.nn.utils.parametrizations.weight_norm`` (w = g v / |v|), ``spectral_norm`` (W / sigma)
and ``orthogonal`` store their originals under ``<layer>.parametrizations.weight.original*``
and compute ``<layer>.weight`` on every access. The originals are no layer's weight (a magnitude
vector, a direction whose scale is divided away, an unnormalised matrix); the computed tensor is
what multiplies the signal. It is evaluated once here (the parametrisation in eval mode, so
spectral norm's power iteration does not step) and becomes the layer's weight param, with the
layer's own fans; the originals stay in the report as parameters that are not judged as weights.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from initaudit.graph import Param, ParamRole


def applied_weights(module: nn.Module) -> Iterator[tuple[str, nn.Module, str, torch.Tensor]]:
    """(layer prefix, layer, name of the applied weight, its value) for every layer whose
    ``weight`` is parametrised."""
    for prefix, m in module.named_modules():
        if not parametrize.is_parametrized(m, "weight"):
            continue
        plist = m.parametrizations["weight"]
        modes = [(p, p.training) for p in plist.modules()]
        plist.eval()
        try:
            with torch.no_grad():
                value = m.weight.detach().clone()
        finally:
            for p, mode in modes:
                p.training = mode
        yield prefix, m, f"{prefix}.weight" if prefix else "weight", value


SPECTRAL = "spectral normalisation (W / sigma_max(W))"


def scale_set_by(m: nn.Module) -> str | None:
    """What fixes the applied spread of ``m.weight`` whatever its initialisation: spectral
    normalisation, as a parametrisation or as the older forward pre-hook (``weight_orig``)."""
    if parametrize.is_parametrized(m, "weight") and any(
            type(p).__name__ == "_SpectralNorm" for p in m.parametrizations["weight"]):
        return SPECTRAL
    if any(type(h).__name__ == "SpectralNorm" for h in m._forward_pre_hooks.values()):
        return SPECTRAL
    return None


def _originals_stem(prefix: str) -> str:
    return f"{prefix}.parametrizations.weight.original" if prefix else "parametrizations.weight.original"


def computed_from(p: Param, names: set[str]) -> bool:
    """``p`` is a parametrised weight computed from originals among ``names`` (a checkpoint
    stores the originals, never the computed ``<layer>.weight``)."""
    stem = _originals_stem(p.layer)
    return p.is_weight and p.name == (f"{p.layer}.weight" if p.layer else "weight") \
        and any(n.startswith(stem) for n in names)


def mark_originals(params: dict[str, Param], prefix: str) -> None:
    """The stored originals of ``prefix``'s parametrised weight: not judged as weights."""
    stem = _originals_stem(prefix)
    for p in params.values():
        if p.name.startswith(stem):
            p.role = ParamRole.OTHER
            p.notes.append(f"the stored original of a parametrised weight: {prefix or 'the model'}.weight, "
                           "computed from it, is judged as the layer applies it")
