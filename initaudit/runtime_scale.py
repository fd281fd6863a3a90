"""Weights a layer multiplies by a constant at run time, measured from the recorded forward pass.

The NTK parametrisation (Jacot et al. 2018) stores N(0, 1) weights and computes
``F.linear(x, w * gain / sqrt(fan_in))``; StyleGAN's equalised learning rate (Karras et al. 2018)
stores N(0, 1/lr_mul) and multiplies by ``lr_mul * sqrt(2 / fan_in)``. The stored spread is then
not the spread the signal sees: the effective weight is ``s * w``. Nothing in the weights or the
module type says so; the forward pass does. While the capture records a custom leaf module (one
whose own ``forward`` applies its weight), the stored weight is applied to the same input the
stock way and the output regressed on it: when the two agree up to one factor (correlation above
``_MIN_CORRELATION``, after removing each channel's mean, which a bias shifts), that factor is the
runtime multiplier. A module that does anything else with its weight (masks it, normalises it,
adds a nonlinearity) does not fit one factor and is left as stored.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from initaudit.graph import ModelGraph, _consumers

_MIN_CORRELATION = 0.999
_PERIODIC = frozenset({"sin"})
_STOCK_FORWARDS = {nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}


def _stock(m: nn.Module, x: torch.Tensor, w: torch.Tensor) -> tuple[torch.Tensor, int] | None:
    """The stored weight applied to ``x`` as a plain linear or convolution (no bias), and the
    output's channel dimension; None where the module's shape fits neither."""
    if isinstance(m, nn.modules.conv._ConvNd) and not m.transposed and x.dim() == w.dim():
        try:
            return m._conv_forward(x, w, None), 1
        except RuntimeError:  # the module pads or reshapes its input itself
            return None
    if w.dim() == 2 and x.dim() >= 2 and x.shape[-1] == w.shape[1]:
        return F.linear(x, w), -1
    return None


def runtime_multiplier(m: nn.Module, args: tuple, out: Any) -> float | None:
    """The factor ``s`` by which module ``m`` scales its stored ``weight`` at run time (its output
    is ``stock(x, s * w) + b``), measured on the recorded call; None for stock torch layers,
    parametrised weights, modules whose output is not one factor times the stock one, and
    factors within 1% of 1."""
    w = getattr(m, "weight", None)
    if type(m).forward in _STOCK_FORWARDS or not isinstance(w, nn.Parameter) or w.dim() < 2 \
            or torch.nn.utils.parametrize.is_parametrized(m):
        return None
    x = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    if x is None or not isinstance(out, torch.Tensor) or x.dtype != w.dtype:
        return None
    made = _stock(m, x, w)
    if made is None or made[0].shape != out.shape:
        return None
    y0, channel = made
    dims = [d for d in range(out.dim()) if d != channel % out.dim()]
    a = (out - out.mean(dims, keepdim=True)).double().flatten()
    b = (y0 - y0.mean(dims, keepdim=True)).double().flatten()
    bb, ab = float(b @ b), float(a @ b)
    if bb <= 0 or ab <= 0:
        return None
    if ab / (bb * float(a @ a)) ** 0.5 < _MIN_CORRELATION:
        return None
    s = ab / bb
    return s if abs(s - 1) > 0.01 else None


def fold_preactivation_scales(graph: ModelGraph) -> None:
    """A constant multiplier between a layer and its activation, ``phi(c * (W x + b))`` (SIREN's
    ``sin(w0 * x)``, Sitzmann et al. 2020), is part of the weight as applied: the activation sees
    ``c W`` and ``c b``. The ``mul`` node is dropped, the layer's outputs go straight to the
    activation, and ``c`` joins the weight's and bias's ``runtime_scale`` (and ``output_scale``,
    which the probe's measurement of the layer's own output is scaled by); the prediction then
    reads the scaled statistics once (``AuditContext.applied_stats``), as for NTK layers."""
    users = _consumers(graph.nodes)
    dropped: dict[str, str] = {}  # mul node -> the layer it scaled
    for node in graph.nodes:
        outs = users.get(node.name, [])
        if node.kind != "layer" or node.param not in graph.params or len(outs) != 1:
            continue
        mul = outs[0]
        after = users.get(mul.name, [])
        if mul.kind != "mul" or len(mul.inputs) != 1 or mul.param is not None or "scale" not in mul.attrs \
                or "shift" in mul.attrs \
                or not after or any(u.kind != "act" for u in after):
            continue
        c = float(mul.attrs["scale"])
        for name in (node.param, node.bias):
            if name in graph.params:
                graph.params[name].runtime_scale *= c
                graph.params[name].output_scale *= c
        dropped[mul.name] = node.name
    if dropped:
        graph.nodes = [n for n in graph.nodes if n.name not in dropped]
        for n in graph.nodes:
            n.inputs = [dropped.get(i, i) for i in n.inputs]
    _periodic_encodings_unmodelled(graph)


def _periodic_encodings_unmodelled(graph: ModelGraph) -> None:
    """A periodic function of anything but a layer's output (a diffusion model's
    ``sin(t * freqs)`` timestep embedding, NeRF's ``sin(2^k x)``) is a feature encoding, not an
    activation of a layer: its ~0.7 spread is no scaled copy of the input's, so it stays an op
    the prediction does not model, as before sin was recognised (SIREN's follows its layer)."""
    kinds = {n.name: n.kind for n in graph.nodes}
    for n in graph.nodes:
        if n.kind == "act" and n.activation is not None and n.activation.name in _PERIODIC \
                and any(kinds.get(i) != "layer" for i in n.inputs):
            n.kind, n.activation, n.op = "unknown", None, n.activation.name
