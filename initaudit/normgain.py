"""The gain a normalisation layer really applies, measured on the live module.

A norm computes y = scale(w) * N(x) + shift with N odd (N(-x) = -N(x)); how w enters is the
model's business: plain gamma (y = w * N(x)), Gemma's and some RMSNorms' (1 + w), or any
other parametrisation. Feeding x and -x cancels the shift: (y(x) - y(-x)) / 2 = scale * N(x).
The probe x is a +/-1 checkerboard over every axis, so it is already normalised in every
sense (zero mean and unit variance per row, per channel and per group), N(x) = x and

    gain = rms( (y(x) - y(-x)) * x / 2 ).

Plain gamma = 0 gives 0; Gemma's w = 0 gives 1; BatchNorm in eval mode divides by its running
std (fresh statistics: 1).

:func:`mark_norm_offsets` gives the recorded dataflow that parametrisation: a custom norm
module whose measured gain is not its stored scale's rms applies ``w + c`` (``c = 1`` for
``x * (1 + w)``), and the propagation reads the scale as stored plus ``c`` (the ONNX exporter
folds ``1 + w`` into the initializer, so an ONNX graph already stores ``w + c``).
"""

from __future__ import annotations

import copy
import math
import torch
from torch import nn

from initaudit.graph import ModelGraph, ParamRole
from initaudit.moments import tensor_stats


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


_STOCK_NORMS = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
                *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))


def scale_offset(gain: float, mean: float, var: float) -> float:
    """The ``c`` of a norm that applies ``w + c`` per unit: with the stored scale's mean m and
    variance v, rms(w + c)^2 = (m + c)^2 + v = gain^2, so c = sqrt(gain^2 - v) - m (the root
    that keeps the applied scale's sign with the gain's)."""
    return math.sqrt(max(gain * gain - var, 0.0)) - mean


def mark_norm_offsets(graph: ModelGraph) -> None:
    """Every norm node of a live module's recorded dataflow whose module is no torch norm (whose
    parametrisation is plain gamma) gets ``attrs["offset"] = c`` where its measured gain says it
    applies its scale as ``w + c`` (Gemma's and RecurrentGemma's RMSNorm ``x * (1 + w)``, w = 0:
    gain 1, c = 1); plain gamma, and a gain within 1e-3 of the stored rms, set nothing."""
    if graph.module is None:
        return
    seen: dict[str, float | None] = {}
    for node in graph.nodes:
        scale = next((n for n in node.norm_params if n in graph.params
                      and graph.params[n].role is ParamRole.NORM_SCALE), None)
        if node.kind != "norm" or scale is None:
            continue
        if scale not in seen:
            seen[scale] = None
            p = graph.params[scale]
            try:
                m = graph.module.get_submodule(p.layer)
            except AttributeError:
                continue
            if isinstance(m, _STOCK_NORMS) or not p.shape:
                continue
            gain = measured_gain(graph.module, p.layer, p.shape[0])
            st = tensor_stats(graph.load_tensor(scale))
            if gain is None or st.nonfinite:
                continue
            c = scale_offset(gain, st.mean, st.std ** 2)
            if abs(c) > 1e-3 * max(gain, 1.0):
                seen[scale] = c
        if seen[scale] is not None:
            node.attrs["offset"] = seen[scale]
