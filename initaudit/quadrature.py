"""Gauss rules and mixture helpers shared by the per-tensor (:mod:`initaudit.propagation`) and the
per-unit (:mod:`initaudit.unitwise`) signal predictions: Gauss-Hermite nodes for moments of an
activation under a Gaussian pre-activation, the three-point rules that split a mixture component
over inputs, and the key along which components are merged back."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from initaudit.graph import Activation
from initaudit.schemes import activation_fn

#: Probabilists' Gauss-Hermite rule, weights normalised: E[f(z)] = sum GH_W f(GH_X), z ~ N(0, 1).
GH_X, GH_W = np.polynomial.hermite_e.hermegauss(40)
GH_W = GH_W / GH_W.sum()
#: Three-point Gauss rule for N(0, 1) (exact to degree 5): nodes, weights.
SPLIT = (np.array([-math.sqrt(3.0), 0.0, math.sqrt(3.0)]), np.array([1 / 6, 2 / 3, 1 / 6]))


def activation_numpy(act: Activation) -> Callable[[np.ndarray], np.ndarray]:
    """The elementwise function for ``act`` on float64 numpy arrays (KeyError when unknown)."""
    f = activation_fn(act)
    return lambda x: f(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))).numpy()


def gamma_rule(eps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Three-point Gauss rules (nodes, weights), one row per entry of ``eps``, for X ~ Gamma(shape
    1/eps, scale eps): mean 1, variance eps, exact for polynomials up to degree 5 and positive
    nodes at any eps (a chi-square over n units divided by n is eps = 2/n). Golub-Welsch on
    the generalised Laguerre recurrence (alpha = 1/eps - 1): diagonal 2i + alpha + 1,
    off-diagonal sqrt(i (i + alpha))."""
    eps = np.atleast_1d(np.asarray(eps, dtype=np.float64))
    alpha = 1.0 / eps - 1.0
    jac = np.zeros((len(eps), 3, 3))
    for i in range(3):
        jac[:, i, i] = 2 * i + alpha + 1
    for i in (1, 2):
        jac[:, i, i - 1] = jac[:, i - 1, i] = np.sqrt(i * (i + alpha))
    nodes, vec = np.linalg.eigh(jac)
    return nodes * eps[:, None], vec[:, 0, :] ** 2


def merge_key(w: np.ndarray, a: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Position of each component along the principal axis of (a / sqrt(mean v), log(v) / 2):
    the common mode in units of the typical unit std and the relative change of the unit std,
    so components are merged with their neighbours along the direction in which the mixture
    actually spreads (the common mode for mean-shifted weights, the per-input variance for
    zero-mean ones)."""
    vbar = float(np.dot(w, v))
    if not vbar > 0:
        return a
    z = np.stack([a / math.sqrt(vbar), 0.5 * np.log(np.maximum(v / vbar, 1e-300))], axis=1)
    z = z - w @ z
    _, vec = np.linalg.eigh((z * w[:, None]).T @ z)
    return z @ vec[:, -1]
