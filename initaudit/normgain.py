"""The gain a normalisation layer really applies, measured on the live module.

A norm computes y = scale(w) * N(x) + shift with N odd (N(-x) = -N(x)); how w enters is the
model's business: plain gamma (y = w * N(x)), Gemma's and some RMSNorms' (1 + w), or any
other parametrisation. Feeding x and -x cancels the shift: (y(x) - y(-x)) / 2 = scale * N(x).
The probe x is a +/-1 checkerboard over every axis, so it is already normalised in every
sense (zero mean and unit variance per row, per channel and per group), N(x) = x and

    gain = rms( (y(x) - y(-x)) * x / 2 ).

Plain gamma = 0 gives 0; Gemma's w = 0 gives 1; BatchNorm in eval mode divides by its running
std (fresh statistics: 1).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn


def _checkerboard(shape: tuple[int, ...]) -> torch.Tensor:
    grids = torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij")
    return 1.0 - 2.0 * (sum(grids) % 2).float()


def _shapes(m: nn.Module, channels: int) -> list[tuple[int, ...]]:
    normalized = getattr(m, "normalized_shape", None)
    if normalized:
        return [(4, *normalized)]
    return [(4, channels, 2, 2), (4, channels), (4, channels, 2), (4, channels, 2, 2, 2), (4, 2, channels)]


def measured_gain(module: nn.Module, layer: str, channels: int) -> float | None:
    """rms gain of the norm module at ``layer`` (None when it cannot be run on its own)."""
    try:
        norm = copy.deepcopy(module.get_submodule(layer)).float().eval()
    except Exception:
        return None
    for shape in _shapes(norm, channels):
        x = _checkerboard(shape)
        try:
            with torch.no_grad():
                pos, neg = norm(x), norm(-x)
        except Exception:
            continue
        if not isinstance(pos, torch.Tensor) or pos.shape != x.shape:
            continue
        gain = ((pos - neg) * x / 2).pow(2).mean().sqrt().item()
        return None if math.isnan(gain) else gain
    return None
