"""The signal algebra of the mean-field prediction (:mod:`initaudit.propagation`): a
:class:`Moments` record (a mixture over inputs of Gaussian components) and what each kind of node
does to it.

- a Gaussian pre-activation through phi: Gauss-Hermite quadrature per component, and the
  distinct part (1/2) E[(phi(s + t) - phi(s - t))^2], s ~ N(m, v (1 - d/2)), t ~ N(0, v d / 2);
- the max of k draws (pooling): the order-statistic density k F^(k-1) f;
- products of independent branches E[(xy)^2] = E[x^2] E[y^2] (gated units), weighted mixes
  (``cat``), averages over k elements (average pooling, attention) and residual sums.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from initaudit.graph import Activation
from initaudit.quadrature import GH_W, GH_X, SPLIT, activation_numpy, merge_key

_GRID = np.linspace(-9.0, 9.0, 721)  # for order statistics (max pooling)
_MAX_COMPONENTS = 16


@dataclass(frozen=True)
class Moments:
    """Mean-field description of a signal (see the module docstring): a mixture over inputs of
    components k (weight w_k) whose units have mean a_k and variance v_k. The spread of the a_k
    is the common mode: a per-input offset shared by all units, which a mean-shifted weight
    matrix multiplies by mu * n at every layer (its distribution is carried exactly, not as a
    Gaussian: mu * n * relu(a) rectifies it)."""

    w: tuple[float, ...] = (1.0,)
    a: tuple[float, ...] = (0.0,)
    v: tuple[float, ...] = (1.0,)
    distinct: float = 1.0  # fraction of the unit variance that differs between two inputs
    act: Activation | None = None  # set when this is phi(pre) of a Gaussian pre-activation
    pre: Moments | None = None

    @staticmethod
    def gaussian(mean: float, unit: float, common: float = 0.0, distinct: float = 1.0) -> Moments:
        if common > 0 and math.isfinite(common):
            x, w = SPLIT
            return Moments(tuple(w), tuple(mean + math.sqrt(common) * x), (unit,) * 3, distinct)
        return Moments((1.0,), (mean,), (unit,), distinct)

    @property
    def mean(self) -> float:
        return float(np.dot(self.w, self.a))

    @property
    def unit(self) -> float:
        return float(np.dot(self.w, self.v))

    @property
    def common(self) -> float:
        a = np.asarray(self.a)
        return float(np.dot(self.w, (a - self.mean) ** 2))

    @property
    def var(self) -> float:
        """Variance of the elements around the grand mean (what a probe's std measures)."""
        return self.unit + self.common

    @property
    def second(self) -> float:
        return self.var + self.mean * self.mean

    @property
    def distinct_var(self) -> float:
        """Variance of the part that differs between two inputs (the common mode differs too:
        independent inputs have independent common modes)."""
        return self.common + self.unit * self.distinct

    @property
    def finite(self) -> bool:
        return bool(np.isfinite(self.a).all() and np.isfinite(self.v).all())


def mixture(w: np.ndarray, a: np.ndarray, v: np.ndarray, spread: np.ndarray, distinct: float,
             **kw) -> Moments:
    """Components (w, a, v), each widened over inputs by ``spread`` (a variance), merged back to
    at most _MAX_COMPONENTS components with the common-mode variance kept exactly."""
    if np.any(spread > 0):
        x, sw = SPLIT
        w = (w[:, None] * sw[None, :]).ravel()
        a = (a[:, None] + np.sqrt(np.maximum(spread, 0))[:, None] * x[None, :]).ravel()
        v = np.repeat(v, 3)
    if len(w) > _MAX_COMPONENTS and np.isfinite(a).all() and np.isfinite(v).all():
        order = np.argsort(merge_key(w, a, v), kind="stable")
        w, a, v = w[order], a[order], v[order]
        mean = float(np.dot(w, a))
        common = float(np.dot(w, (a - mean) ** 2))
        groups = np.minimum((np.cumsum(w) - w / 2) * _MAX_COMPONENTS, _MAX_COMPONENTS - 1).astype(int)
        gw = np.bincount(groups, w, _MAX_COMPONENTS)
        keep = gw > 0
        ga = np.bincount(groups, w * a, _MAX_COMPONENTS)[keep] / gw[keep]
        gv = np.bincount(groups, w * v, _MAX_COMPONENTS)[keep] / gw[keep]
        gw = gw[keep]
        merged = float(np.dot(gw, (ga - mean) ** 2))
        if merged > 0:
            ga = mean + (ga - mean) * math.sqrt(common / merged)
        w, a, v = gw, ga, gv
    return Moments(tuple(w), tuple(a), tuple(np.maximum(v, 0.0)), min(max(distinct, 0.0), 1.0), **kw)


def activation_moments(act: Activation, pre: Moments) -> Moments:
    """Moments of phi(h) for a Gaussian pre-activation N(a_k, v_k) in each component."""
    phi = activation_numpy(act)
    a, v = np.asarray(pre.a), np.sqrt(np.maximum(pre.v, 0.0))
    y = phi(a[:, None] + v[:, None] * GH_X[None, :])
    g = y @ GH_W
    var = np.maximum((y * y) @ GH_W - g * g, 0.0)
    w = np.asarray(pre.w)
    unit = float(np.dot(w, var))
    d = min(max(pre.distinct, 0.0), 1.0)
    out = dict(act=act, pre=pre)
    if unit <= 0 or d <= 0:
        return Moments(pre.w, tuple(g), tuple(var), 0.0, **out)
    s = a[:, None] + (v * math.sqrt(1 - d / 2))[:, None] * GH_X[None, :]  # (K, nodes)
    if d > 1e-8:
        t = math.sqrt(d / 2) * v[:, None, None] * GH_X[None, None, :]
        diff = phi(s[:, :, None] + t) - phi(s[:, :, None] - t)
        part = 0.5 * np.einsum("kij,i,j->k", diff * diff, GH_W, GH_W)
    else:  # linearised: (1/2) E[(2 t phi'(s))^2] = v d E[phi'(s)^2]
        h = 1e-4 * np.maximum(v, 1e-300)[:, None]
        deriv = (phi(s + h) - phi(s - h)) / (2 * h)
        part = d * v * v * ((deriv * deriv) @ GH_W)
    return Moments(pre.w, tuple(g), tuple(var), min(float(np.dot(w, part)) / unit, 1.0), **out)


def max_moments(x: Moments, k: int) -> Moments:
    """Max of k elements (pooling window) that share the part common to the window (the
    per-input common mode and the per-unit offsets) and differ in their distinct part."""
    pre, act = (x.pre, x.act) if x.pre is not None else (x, Activation("identity"))
    phi = activation_numpy(act)
    d = min(max(pre.distinct, 0.0), 1.0)
    z = _GRID
    cdf = 0.5 * (1 + np.vectorize(math.erf)(z / math.sqrt(2)))
    dens = k * cdf ** (k - 1) * np.exp(-z * z / 2)
    dens = dens / dens.sum()
    a, v = np.asarray(pre.a), np.maximum(pre.v, 0.0)
    base = a[:, None] + np.sqrt(v * (1 - d))[:, None] * GH_X[None, :]  # (K, nodes): shared part
    y = phi(base[:, :, None] + np.sqrt(v * d)[:, None, None] * z[None, None, :])
    g, g2 = y @ dens, (y * y) @ dens  # (K, nodes)
    mean_k = g @ GH_W
    shared = np.maximum((g * g) @ GH_W - mean_k**2, 0.0)  # per-unit offsets, same for all inputs
    within = np.maximum((g2 - g * g) @ GH_W, 0.0)
    w = np.asarray(pre.w)
    unit = shared + within
    tot = float(np.dot(w, unit))
    return Moments(pre.w, tuple(mean_k), tuple(unit), float(np.dot(w, within)) / tot if tot > 0 else 0.0)


def product(ins: list[Moments]) -> Moments:
    """x * y of branches whose unit-specific parts are independent (gate and up projections of
    one input): per component when the branches share their components (E[x^2 y^2] =
    E[x^2] E[y^2] for each input class, so inputs with a larger norm dominate the product)."""
    if len(ins) > 1 and all(x.w == ins[0].w for x in ins):
        a = np.prod([np.asarray(x.a) for x in ins], axis=0)
        second = np.prod([np.asarray(x.v) + np.asarray(x.a) ** 2 for x in ins], axis=0)
        same = np.prod([np.asarray(x.a) ** 2 + np.asarray(x.v) * (1 - x.distinct) for x in ins], axis=0)
        v = np.maximum(second - a * a, 0.0)
        w = np.asarray(ins[0].w)
        unit = float(w @ v)
        dist = float(w @ np.maximum(second - same, 0.0))
        return Moments(ins[0].w, tuple(a), tuple(v), min(dist / unit, 1.0) if unit > 0 else 0.0)
    mean, second, same = 1.0, 1.0, 1.0
    for x in ins:
        mean *= x.mean
        second *= x.second
        same *= x.mean * x.mean + x.unit * (1 - x.distinct)  # E[x_a x_b], independent inputs
    var = max(second - mean * mean, 0.0)
    dist = max(second - same, 0.0)
    return Moments.gaussian(mean, var, 0.0, dist / var if var > 0 else 0.0)


def weighted(ins: list[Moments], w: list[float]) -> Moments:
    total = sum(w)
    w = [x / total for x in w]
    mean = sum(wi * x.mean for wi, x in zip(w, ins))
    second = sum(wi * x.second for wi, x in zip(w, ins))
    common = sum(wi * x.common for wi, x in zip(w, ins))
    dist = sum(wi * x.unit * x.distinct for wi, x in zip(w, ins))
    unit = max(second - mean * mean - common, 0.0)
    return Moments.gaussian(mean, unit, common, dist / unit if unit > 0 else 0.0)


def average(x: Moments, k: float) -> Moments:
    """Mean of k elements that differ only in their distinct part."""
    k = max(k, 1.0)
    d = x.distinct
    v = np.asarray(x.v) * ((1 - d) + d / k)
    unit = x.unit * ((1 - d) + d / k)
    return Moments(x.w, x.a, tuple(v), (x.unit * d / k) / unit if unit > 0 else 0.0)


def residual_sum(ms: list[Moments]) -> Moments:
    """Sum of branches with independent unit-specific parts; the common modes of branches of
    one input move together (component by component when they line up)."""
    unit = sum(x.unit for x in ms)
    dist = sum(x.unit * x.distinct for x in ms)
    d = dist / unit if unit > 0 else 0.0
    if len({len(x.w) for x in ms}) == 1 and all(x.w == ms[0].w for x in ms):
        a = sum(np.asarray(x.a) for x in ms)
        v = sum(np.asarray(x.v) for x in ms)
        return Moments(ms[0].w, tuple(a), tuple(v), d)
    return Moments.gaussian(sum(x.mean for x in ms), unit, sum(x.common for x in ms), d)
