"""Per-unit moments through a dense chain's actual weights (the static pass, size-bounded).

Per-tensor statistics (:mod:`initaudit.propagation`) predict the typical weight draw, not the
one in hand: at width 100 the float64 forward of a GELU MLP at He gain spreads 6.5x between weight
draws, because the per-unit mean m = W E[phi(h)] + b is one fixed direction that every layer
maps through its own matrix. Where a chain of dense layers starts at the model's input and its
weights are in memory, the signal is carried unit by unit instead, as a mixture over inputs of
components k (weight w_k) in which unit i has mean M_ik and variance V_ik, independent across
units given the component. A layer y = W x + b with the input's per-unit moments (E, U) maps a
component to

    M' = W E + b,        V' = (W o W) U            (o: elementwise product)

and an activation integrates each unit under N(M_ik, V_ik) by Gauss-Hermite quadrature (E[phi],
Var[phi] and the fourth central moment C4). Two per-input effects a fixed W adds:

- the common mode: the part beta_i s of (W delta)_i, s = sum_j delta_j (Var s = S = sum_j U_j),
  beta = (W U) / S, is shared by all units of one input (a mean-shifted W multiplies it by
  mu * n at every layer). It is split off by a three-point rule over s, leaving V' - beta^2 S;
- the energy: sum_j delta_j^2 of one input fluctuates with relative variance
  eps = sum_j (C4_j - U_j^2) / S^2 around S, and a convex contracting map (GELU, SiLU at He
  gain) keeps the inputs that draw a large energy: each component's V' is split by the
  three-point Gamma(1/eps, eps) rule (:func:`initaudit.quadrature.gamma_rule`).

Components are merged back to at most ``_MAX_COMPONENTS`` in order along the mixture's principal
axis, in groups of equal share of the second moment (the inputs that carry the signal keep
their resolution), each unit's mean and variance kept exactly. As n -> infinity both splits
vanish (beta^2 S and eps are O(1/n)) and M, V average to the mean-field moments.

Cost: three products of each weight with a K-column matrix (K <= 16), in float64 blocks of
``_BLOCK`` elements. Only chains from the input whose weights the caller hands over are carried
(never tensors a worker pool streams), and only up to ``UNITWISE_MAX_ELEMENTS`` weight elements
per model; past the bound the per-tensor prediction stands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from initaudit.distributed import full_value
from initaudit.graph import Activation, OpKind, Param
from initaudit.quadrature import GH_W, GH_X, SPLIT, activation_numpy, gamma_rule, merge_key

#: Weight elements per model the per-unit pass may read (beyond: the per-tensor prediction).
UNITWISE_MAX_ELEMENTS = 50_000_000
_MAX_COMPONENTS = 16
_BLOCK = 1 << 20  # weight elements converted to float64 at a time
_COMMON_MIN = 1e-3  # a common mode below this share of the unit variance is not split off
_EPS_MIN = 1e-6  # below a 0.1% relative std the energy split changes nothing


@dataclass(frozen=True)
class UnitMoments:
    """A signal unit by unit: mixture weights w (K,), per-unit means and variances (n, K), and
    the fourth central moments (None where each unit is Gaussian given its component)."""

    w: np.ndarray
    mean: np.ndarray
    var: np.ndarray
    c4: np.ndarray | None = None
    offset: np.ndarray | None = None  # a layer's own bias (per unit), which carries no signal

    @staticmethod
    def standard(n: int) -> UnitMoments:
        """The assumed standardised input: every unit N(0, 1)."""
        return UnitMoments(np.ones(1), np.zeros((n, 1)), np.ones((n, 1)))

    @property
    def width(self) -> int:
        return self.mean.shape[0]

    def spread(self, offset: np.ndarray | None = None) -> tuple[float, float]:
        """(grand mean, variance) over units and inputs, ``offset`` (per unit) taken off."""
        m = self.mean if offset is None else self.mean - offset[:, None]
        with np.errstate(all="ignore"):
            first = float(m.mean(axis=0) @ self.w)
            second = float((self.var + m * m).mean(axis=0) @ self.w)
            return first, max(second - first * first, 0.0) if math.isfinite(second) else second


def activation(act: Activation, x: UnitMoments) -> UnitMoments:
    """phi(h) per unit and component, h ~ N(M_ik, V_ik) (KeyError for an unknown activation)."""
    phi = activation_numpy(act)
    with np.errstate(all="ignore"):
        y = phi(x.mean[..., None] + np.sqrt(np.maximum(x.var, 0.0))[..., None] * GH_X)
        e = y @ GH_W
        c = y - e[..., None]
        c2 = c * c
        return UnitMoments(x.w, e, np.maximum(c2 @ GH_W, 0.0), (c2 * c2) @ GH_W)


def _products(weight: torch.Tensor, e: np.ndarray, u: np.ndarray) -> tuple[np.ndarray, ...]:
    """W E, (W o W) U and W U, with W read in float64 row blocks of about ``_BLOCK`` elements
    (on the device that holds W)."""
    rows = max(1, _BLOCK // max(weight.shape[1], 1))
    te, tu = torch.from_numpy(e).to(weight.device), torch.from_numpy(u).to(weight.device)
    out = [[], [], []]
    for start in range(0, weight.shape[0], rows):
        w = weight[start:start + rows].detach().to(torch.float64)
        out[0].append(w @ te)
        out[1].append((w * w) @ tu)
        out[2].append(w @ tu)
    return tuple(torch.cat(o).cpu().numpy() for o in out)


def layer(x: UnitMoments, weight: torch.Tensor, bias: torch.Tensor | None) -> UnitMoments:
    """One dense layer (out, in) on the input's per-unit moments (module docstring)."""
    with np.errstate(all="ignore"):
        m, vd, wu = _products(weight, x.mean, x.var)
        b = bias.detach().to(torch.float64).cpu().numpy() if bias is not None else None
        if b is not None:
            m = m + b[:, None]
        s = x.var.sum(axis=0)  # (K,) variance of sum_j delta_j
        c4 = x.c4 if x.c4 is not None else 3.0 * x.var * x.var
        ok = (s > 0) & np.isfinite(s)
        safe = np.where(ok, s, 1.0)
        eps = np.where(ok, np.maximum(c4 - x.var * x.var, 0.0).sum(axis=0) / (safe * safe), 0.0)
        beta = wu / safe
        common = beta * beta * safe
        split = ok & (common.mean(axis=0) > _COMMON_MIN * vd.mean(axis=0))  # (K,)
        # common mode: 3 children per component (weights 0, 1, 0 where it is not split off)
        nodes, weights = SPLIT
        cw = np.where(split[:, None], weights[None, :], np.array([0.0, 1.0, 0.0]))  # (K, 3)
        cm = m[:, :, None] + np.where(split, beta * np.sqrt(safe), 0.0)[:, :, None] * nodes  # (n, K, 3)
        cv = np.where(split, np.maximum(vd - common, 0.0), vd)[:, :, None]  # (n, K, 1)
        # energy: 3 children of each (the Gamma rule; 1 where eps is negligible)
        grow = (eps > _EPS_MIN) & np.isfinite(eps)
        gn, gw = gamma_rule(np.where(grow, eps, 0.5))
        gn[~grow], gw[~grow] = 1.0, np.array([0.0, 1.0, 0.0])
        shape = (m.shape[0], len(x.w), 3, 3)  # (unit, component, common child, energy child)
        w = (x.w[:, None, None] * cw[:, :, None] * gw[:, None, :]).reshape(-1)
        mm = np.broadcast_to(cm[:, :, :, None], shape).reshape(m.shape[0], -1)
        vv = np.broadcast_to(cv[:, :, :, None] * gn[None, :, None, :], shape).reshape(m.shape[0], -1)
        keep = w > 0
        out = _merge(w[keep], mm[:, keep], np.maximum(vv[:, keep], 0.0))
        return replace(out, offset=b)


def _merge(w: np.ndarray, m: np.ndarray, v: np.ndarray) -> UnitMoments:
    """At most ``_MAX_COMPONENTS`` components, grouped along the principal axis
    (:func:`initaudit.quadrature.merge_key` of the unit-averaged means and variances) in equal
    shares of the second moment; each unit's mean and variance are kept (the spread of the group
    means is rescaled to the spread of the components' means, unit by unit)."""
    if len(w) <= _MAX_COMPONENTS or not (np.isfinite(m).all() and np.isfinite(v).all()):
        return UnitMoments(w, m, v)
    order = np.argsort(merge_key(w, m.mean(axis=0), v.mean(axis=0)), kind="stable")
    w, m, v = w[order], m[:, order], v[:, order]
    energy = (v + m * m).mean(axis=0) * w
    share = energy / energy.sum() if energy.sum() > 0 else w
    groups = np.minimum((np.cumsum(share) - share / 2) * _MAX_COMPONENTS, _MAX_COMPONENTS - 1).astype(int)
    g = np.zeros((len(w), _MAX_COMPONENTS))
    g[np.arange(len(w)), groups] = w
    g = g[:, g.sum(axis=0) > 0]
    gw = g.sum(axis=0)
    gm, gv = (m @ g) / gw, (v @ g) / gw
    centre = m @ w
    before = ((m - centre[:, None]) ** 2) @ w
    after = ((gm - centre[:, None]) ** 2) @ gw
    scale = np.sqrt(np.divide(before, after, out=np.ones_like(before), where=after > 0))
    return UnitMoments(gw, centre[:, None] + (gm - centre[:, None]) * scale[:, None], gv)


def dense_matrix(param: Param, tensor: torch.Tensor | None) -> torch.Tensor | None:
    """The (out, in) matrix of a dense layer's weight, or None when the per-unit pass does not
    apply to it (not a plain linear map, gate blocks, a higher-rank or missing tensor). A
    DTensor is gathered whole (a collective: every rank walks the same chains under the same
    element budget, so the gathers line up, and the sharded audit predicts what the unsharded
    one does)."""
    if tensor is None or param.kind is not OpKind.LINEAR or param.gates or tensor.dim() != 2:
        return None
    if tensor.is_meta or not tensor.dtype.is_floating_point:
        return None
    tensor = full_value(tensor)
    return tensor.t() if param.units_dim == 1 else tensor


#: The assumed standardised input before its width is known (read at the first layer).
STANDARD = UnitMoments(np.ones(1), np.zeros((0, 1)), np.ones((0, 1)))


def chain_layer(x: UnitMoments | None, param: Param, weight: str, bias: str | None,
                tensors: Callable[[str], torch.Tensor | None] | None,
                budget: list[int]) -> UnitMoments | None:
    """The next link of a per-unit chain, or None where the chain ends: no chain reaches this
    layer, it is no plain dense layer, its input width differs (a reshape on the way), a tensor
    is not at hand, or ``budget`` (weight elements left, decremented) is spent."""
    if x is None or tensors is None or param.kind is not OpKind.LINEAR or param.numel > budget[0]:
        return None
    w = dense_matrix(param, tensors(weight))
    if w is None or (x.width and w.shape[1] != x.width):
        return None
    budget[0] -= param.numel
    b = tensors(bias) if bias else None
    b = full_value(b) if b is not None else None
    if b is not None and tuple(b.shape) != (w.shape[0],):
        return None
    return layer(x if x.width else UnitMoments.standard(w.shape[1]), w, b)
