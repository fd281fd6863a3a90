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

Where the module passes a tensor derived from its weight to ``F.linear``/``F.conv*``
(:class:`AppliedWeights` follows what is computed from the parameter inside the module), that
tensor is the weight as applied and is read directly. Weight standardisation (Qiao et al. 2019;
NFNets, Brock et al. 2021; BiT's StdConv) applies ``w'_c = g_c * gamma * (w_c - mean(w_c)) /
(std(w_c) * sqrt(fan_in))`` per output channel c, which no single factor fits: the applied
weight is an affine map of the stored one per output row, ``w'_c = a_c w_c + b_c``
(:func:`row_affine`), and that map is kept (``Param.runtime_rows``) so the rules read the
weight as applied. One factor on every row and no shift is the scalar case above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.weak import WeakTensorKeyDictionary

from initaudit.graph import ModelGraph, _consumers
from initaudit.moments import TensorStats, tensor_stats

_MIN_CORRELATION = 0.999
_PERIODIC = frozenset({"sin"})
_STOCK_FORWARDS = {nn.Linear.forward, nn.Conv1d.forward, nn.Conv2d.forward, nn.Conv3d.forward}
_WEIGHT_OPS = frozenset({"linear", "conv1d", "conv2d", "conv3d"})  # weight: argument 1 or keyword


def _own_weight(m: nn.Module) -> nn.Parameter | None:
    """The weight a custom module applies in its own forward: a stored ``weight`` Parameter of
    two or more dimensions, on a module whose forward is not torch's and that no torch
    parametrisation computes (those are judged as computed, initaudit.loaders.parametrized)."""
    w = getattr(m, "weight", None)
    if type(m).forward in _STOCK_FORWARDS or not isinstance(w, nn.Parameter) or w.dim() < 2 \
            or torch.nn.utils.parametrize.is_parametrized(m):
        return None
    return w


class AppliedWeights:
    """The tensor a custom leaf module really passes as the weight of its linear or convolution.

    The capture's recorder calls :meth:`enter` when a recorded leaf module starts, :meth:`op`
    for every torch function that runs inside it and :meth:`leave` when it ends. Inside, every
    value computed from the module's ``weight`` (a reshape, ``F.batch_norm`` over it, a product
    with a gain) is followed by identity; the first such value passed as the weight of
    ``F.linear``/``F.conv*`` is the weight as applied. The parameter itself passed there is the
    stock case and records nothing."""

    def __init__(self) -> None:
        self._weight: nn.Parameter | None = None
        self._derived: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self._applied: torch.Tensor | None = None

    def enter(self, m: nn.Module) -> None:
        self._weight, self._applied = _own_weight(m), None
        self._derived = WeakTensorKeyDictionary()

    @property
    def following(self) -> bool:
        """A custom module's weight is being followed and its applied value not yet seen."""
        return self._weight is not None and self._applied is None

    def op(self, name: str, ins: list[torch.Tensor], weight: Any, outs: list[torch.Tensor]) -> None:
        """One torch function ``name`` inside the module: its tensor inputs, the tensor given
        as its ``weight`` argument where it has one, its tensor outputs."""
        w = self._weight
        if not self.following or not any(t is w or t in self._derived for t in ins):
            return
        if name in _WEIGHT_OPS and isinstance(weight, torch.Tensor) and weight is not w \
                and weight in self._derived and weight.shape == w.shape:
            self._applied = weight.detach().clone()
            return
        for t in outs:
            self._derived[t] = True

    def leave(self) -> torch.Tensor | None:
        """The weight as applied in the call that ends (None where the module applied its
        parameter as stored or applied nothing derived from it)."""
        applied, self._weight, self._applied = self._applied, None, None
        self._derived = WeakTensorKeyDictionary()
        return applied


@dataclass(frozen=True)
class RowMap:
    """A per-output-row affine map of a stored weight, ``w'_c = a_c w_c + b_c`` (float64 ``a``,
    ``b`` of one value per row). ``standardised``: every applied row has the same spread while
    the factors differ, ``|a_c| std(w_c)`` equal across rows: each row divided by its own spread
    (weight standardisation), so no initialisation of the stored weight changes the applied
    spread; the layer's constants (gamma, a gain parameter) set it."""

    a: torch.Tensor
    b: torch.Tensor
    standardised: bool

    def apply(self, w: torch.Tensor) -> torch.Tensor:
        """The weight as applied from the stored one: ``a_c * w_c + b_c``."""
        view = (-1,) + (1,) * (w.dim() - 1)
        return (w.double() * self.a.reshape(view) + self.b.reshape(view)).to(torch.float32)


def row_affine(w: torch.Tensor, applied: torch.Tensor) -> RowMap | None:
    """Per output row c (dimension 0) the least-squares ``applied_c = a_c * w_c + b_c``:
    ``a_c = cov(w_c, applied_c) / var(w_c)``, ``b_c = mean(applied_c) - a_c mean(w_c)``, in
    float64. None unless every row fits (correlation above ``_MIN_CORRELATION``, or an applied
    row that is one value: ``a_c = 0``, a zero gain); a mask or any other change of the weight's
    pattern is no per-row affine map."""
    x = w.detach().double().reshape(w.shape[0], -1)
    y = applied.detach().double().reshape(w.shape[0], -1)
    if x.shape[1] < 2 or not torch.isfinite(x).all() or not torch.isfinite(y).all():
        return None
    xc, yc = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    sxx, syy, sxy = (xc * xc).sum(1), (yc * yc).sum(1), (xc * yc).sum(1)
    flat = syy <= 1e-24 * (y * y).sum(1).clamp_min(1e-300)  # a row of one value
    if bool(((sxx <= 0) & ~flat).any()):
        return None
    corr = sxy.abs() / (sxx * syy).clamp_min(1e-300).sqrt()
    if bool((~flat & (corr < _MIN_CORRELATION)).any()):
        return None
    a = torch.where(flat, torch.zeros_like(sxy), sxy / sxx.clamp_min(1e-300))
    b = y.mean(1) - a * x.mean(1)
    spread, mid = syy.sqrt(), float(syy.sqrt().median())  # per-row spread as applied (x sqrt(m))
    varied = bool(((a - a.mean()).abs() > 1e-4 * float(a.abs().max())).any())
    same = mid > 0 and bool(((spread - mid).abs() <= 1e-3 * mid).all())
    return RowMap(a, b, varied and same)


def applied_tensor_stats(t: torch.Tensor) -> TensorStats:
    """The statistics of a weight as applied, with ``row_sums`` measured: Var_c(sum_i t_ci) /
    (m * std^2) over the output rows c of length m (1 for i.i.d. entries, 0 for rows that sum
    to zero, as standardised rows do)."""
    st = tensor_stats(t)
    if t.dim() < 2 or t.shape[0] < 2 or not st.std > 0 or st.nonfinite:
        return st
    sums = t.detach().double().reshape(t.shape[0], -1).sum(1)
    m = t.numel() // t.shape[0]
    return replace(st, row_sums=float(sums.var(unbiased=False)) / (m * st.std ** 2))


def applied_factors(m: nn.Module, args: tuple, out: Any, applied: torch.Tensor | None) -> dict[str, Any]:
    """What module ``m``'s recorded call does to its stored weight: ``{"runtime_scale": s}`` for
    one factor, ``{"runtime_rows": RowMap}`` for a per-row affine map (:func:`row_affine`), ``{}``
    where it applies the weight as stored or does something no such map describes."""
    w = _own_weight(m)
    if w is not None and applied is not None:
        rows = row_affine(w, applied)
        if rows is None:
            return {}
        scale = float(rows.a.mean())
        bound = 1e-6 * float(applied.double().abs().max().clamp_min(1e-30))
        if bool(((rows.a - scale).abs() <= 1e-4 * abs(scale)).all()) and bool((rows.b.abs() <= bound).all()):
            return {"runtime_scale": scale} if abs(scale - 1) > 0.01 else {}
        return {"runtime_rows": rows}
    scale = runtime_multiplier(m, args, out)
    return {} if scale is None else {"runtime_scale": scale}


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
    w = _own_weight(m)
    if w is None:
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
