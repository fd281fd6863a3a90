"""One observed activation tensor -> :class:`SiteStats`. Format-neutral: the torch probe calls
it from forward hooks, the ONNX probe with ``torch.from_numpy(...)`` on each intermediate output.

Definitions (per call site; "units" are the features of a Linear/Embedding output or the
channels of a Conv/BatchNorm output; every other dimension - batch, sequence positions,
spatial positions - counts as samples of a unit):

- ``mean``, ``std``: over every finite element.
- ``unit_std``: sqrt(mean over units of each unit's variance over its samples).
- ``signal_std``: the std of the output with the layer's own bias taken off (``bias`` given):
  the spread the weights produce. A bias moves units apart without carrying any signal, so a
  collapsed layer with random biases still has a sizeable ``std``; depth ratios use this.
- ``dead_fraction``: units that are zero on every sample. Computed on the pre-activation of a
  ReLU-family activation (relu and relu6: x <= 0; hardswish: x <= -3 on every sample), or on the
  output of a ReLU-family activation (exactly 0 on every sample).
- ``saturated_fraction``: elements in the flat region of a bounded activation, read on its
  input (pre-activation) or, equivalently, on its output (:data:`SATURATION`).
- ``nonfinite``: NaN/Inf elements (a finite sum proves there are none: the common case is free).
- ``identical_groups``: units whose columns (their values on all samples) are copies of each
  other, up to a relative 1e-5 of the column's magnitude (matrix-product rounding differs by
  column) and 1% of its range (constant columns must be exactly equal). Found by random-projection fingerprints, one
  matrix product, then checked column against column.
- ``constant_units``: units with the same value on every sample (no spread at all).
- ``correlation`` (layer and input sites): the mean correlation between two samples'
  activations, c = mean over pairs a != b of <x_a - m, x_b - m> / (|x_a - m| |x_b - m|), with
  x_a the whole activation of sample a (all units and positions) and m the grand mean; close
  to 1 when different inputs have become indistinguishable (the ordered phase). From row sums,
  row norms and one weighted row sum: (|S|^2 - B) / (B (B - 1)), S = sum_a (x_a - m) / |x_a - m|.

Costs (DESIGN section 8): per-unit sums and fingerprints are one matrix product with a small
random matrix whose first row is all ones, sums of squares one fused row-norm (or a reused
scratch buffer), an ``amax`` only where dead units are possible (see :func:`_passes`); the
per-unit arithmetic after that runs on small float64 vectors in numpy (many tiny torch ops
stall on a busy thread pool); units whose fp32 variance cannot be trusted (mean >> spread,
e.g. constant units) are recomputed exactly on their own; no per-unit Python loop.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from initaudit.graph import Activation
from initaudit.probe.result import SiteStats
from initaudit.schemes import BOUNDED, RELU_FAMILY, activation_fn

# Flat region of each bounded activation, as (lo, hi) on the pre-activation x: saturated when
# x <= lo or x >= hi. tanh: |tanh x| > 0.99 <=> |x| > atanh(0.99) = 2.647 (tanh' < 0.02);
# sigmoid: s(x) < 0.01 or > 0.99 <=> |x| > logit(0.99) = 4.595 (s' < 0.0099); hardtanh(-1, 1)
# and hardsigmoid (|x| >= 3) have a derivative of exactly 0 there; softsign |y| > 0.99 <=> |x| > 99.
SATURATION: dict[str, tuple[float, float]] = {
    "tanh": (-math.atanh(0.99), math.atanh(0.99)),
    "sigmoid": (-math.log(99.0), math.log(99.0)),
    "hardtanh": (-1.0, 1.0),
    "hardsigmoid": (-3.0, 3.0),
    "softsign": (-99.0, 99.0),
}
# The same regions on the activation's output.
SATURATION_OUT: dict[str, tuple[float, float]] = {
    "tanh": (-0.99, 0.99), "sigmoid": (0.01, 0.99), "hardtanh": (-1.0, 1.0),
    "hardsigmoid": (0.0, 1.0), "softsign": (-0.99, 0.99),
}
# Pre-activation at or below which a ReLU-family activation outputs exactly zero.
DEAD_BELOW: dict[str, float] = {"relu": 0.0, "relu6": 0.0, "hardswish": -3.0}
assert set(SATURATION) == BOUNDED and set(DEAD_BELOW) == RELU_FAMILY

IDENTICAL_RTOL = 1e-5
MAX_GROUPS = 32  # identical groups kept per site (counts are exact; the lists are examples)
_FINGERPRINTS = 2
_proj_cache: dict[tuple, torch.Tensor] = {}


def _projection(n: int, like: torch.Tensor) -> torch.Tensor:
    """(1 + k, n): a row of ones (per-unit sums) and k fixed random rows (fingerprints)."""
    key = (n, like.device, like.dtype)
    r = _proj_cache.get(key)
    if r is None:
        gen = torch.Generator().manual_seed(0x1A2B)
        r = torch.cat([torch.ones(1, n), torch.randn(_FINGERPRINTS, n, generator=gen)])
        r = r.to(device=like.device, dtype=like.dtype)
        if len(_proj_cache) > 256:
            _proj_cache.clear()
        _proj_cache[key] = r
    return r


def as_units(x: torch.Tensor, unit_dim: int = 1) -> torch.Tensor:
    """A 3-D (A, U, P) view: U units; A * P samples per unit (leading and trailing dims)."""
    if x.dim() == 0:
        return x.reshape(1, 1, 1)
    if x.dim() == 1:
        return x.reshape(-1, 1, 1)
    d = unit_dim % x.dim()
    shape = x.shape
    return x.reshape(math.prod(shape[:d]), shape[d], math.prod(shape[d + 1:]))


def site_stats(x: torch.Tensor, *, name: str, kind: str, unit_dim: int = 1,
               param: str | None = None, activation: Activation | None = None,
               pre_activation: bool = True, depth: int = 0, histogram_bins: int = 0,
               identical: bool = True, bias: torch.Tensor | None = None) -> SiteStats:
    """Statistics of one observed tensor of shape (batch, units, ...) (``unit_dim`` says where
    the units are: 1 for NCHW, -1 for (batch, seq, features)).

    ``activation`` is the activation that consumes ``x`` when ``pre_activation`` (dead and
    saturated fractions are read on its input; a histogram shows phi(x), what the activation
    outputs), or the one that produced ``x`` otherwise. ``histogram_bins`` > 0 adds a histogram
    (and, where an activation follows, ``pre_histogram`` of ``x`` itself).
    ``bias`` (one value per unit) is the bias the layer added: it is taken off for ``signal_std``.
    """
    with torch.no_grad():
        return _site_stats(x.detach(), name, kind, unit_dim, param, activation, pre_activation,
                           depth, histogram_bins, identical, bias)


def _site_stats(x, name, kind, unit_dim, param, activation, pre_activation, depth, bins, identical,
                bias=None):
    if not x.is_floating_point():
        x = x.abs() if x.is_complex() else x
        x = x.float()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    x3 = as_units(x, unit_dim)
    a_dim, units, p_dim = x3.shape
    n = a_dim * p_dim
    site = SiteStats(name=name, kind=kind, param=param, activation=activation, depth=depth,
                     units=units, samples=n)
    if x3.numel() == 0:
        return site
    find_copies = identical and units > 1 and n > 1
    act = activation.name if activation is not None else None
    dead_limit = None
    if act in DEAD_BELOW and (pre_activation or act != "hardswish"):
        dead_limit = DEAD_BELOW[act] if pre_activation else 0.0  # relu/relu6 outputs: max 0 = dead
    # The passes over the tensor (torch); everything per unit below is small (numpy, float64).
    sums, sq, unit_max = _passes(x3, find_copies, dead_limit is not None)
    if not (np.isfinite(sums).all() and np.isfinite(sq).all()):
        return _nonfinite_site(site, x3)
    unit_mean = sums[0] / n
    unit_var = np.maximum(sq / n - unit_mean**2, 0.0)
    # Where the mean dwarfs the spread (std < 1% of |mean|), fp32 sums cannot resolve the
    # variance (constant units above all): recompute those units exactly, shifted by their
    # first sample. Healthy layers have none; constant and dead units are cheap to redo.
    zero = sq == 0  # all-zero units (dead, zero-initialised): exact already
    site.constant_units = int(zero.sum())
    unsure = np.flatnonzero((unit_var <= 1e-4 * unit_mean**2) & ~zero)
    if unsure.size:
        cols = x3.index_select(1, torch.from_numpy(unsure).to(x3.device))
        cols = (cols - cols[:1, :, :1]).double()
        m = cols.mean(dim=(0, 2))
        unit_var[unsure] = ((cols - m[None, :, None]) ** 2).mean(dim=(0, 2)).cpu().numpy()
        site.constant_units += int((cols == 0).all(dim=2).all(dim=0).sum())
    mean = float(unit_mean.mean())
    site.mean = mean
    site.std = math.sqrt(max(float(unit_var.mean() + ((unit_mean - mean) ** 2).mean()), 0.0))
    site.unit_std = math.sqrt(float(unit_var.mean())) if n > 1 else None
    if bias is not None and bias.numel() == units:
        moved = unit_mean - bias.detach().reshape(units).double().cpu().numpy()
        site.signal_std = math.sqrt(max(float(unit_var.mean() + moved.var()), 0.0))
    if dead_limit is not None:
        site.dead_fraction = float((unit_max <= dead_limit).mean())
    elif act == "hardswish":  # a hardswish output is dead where it is exactly 0 throughout
        site.dead_fraction = float(((x3 == 0).all(dim=2).all(dim=0)).double().mean())
    if act in SATURATION:
        lo, hi = (SATURATION if pre_activation else SATURATION_OUT)[act]
        if act in ("hardtanh", "hardsigmoid"):  # derivative exactly 0 from the bound on
            count = (x3 <= lo).sum() + (x3 >= hi).sum()
        else:
            count = (x3 < lo).sum() + (x3 > hi).sum()
        site.saturated_fraction = int(count) / x3.numel()
    if find_copies:
        groups = _identical_groups(x3, sums, sq, n)
        site.identical_units = sum(len(g) - 1 for g in groups)
        site.identical_groups = groups[:MAX_GROUPS]
    if kind in ("layer", "input") and x.dim() >= 2 and x.shape[0] > 1:
        site.correlation = sample_correlation(x)
    if bins:
        values = histogram_sample(x3)
        if pre_activation and activation is not None and _has_fn(activation):
            site.pre_histogram = histogram(values, bins)  # the activation's input, for the pictures
            site.histogram = histogram(activation_fn(activation)(values), bins)
        else:
            site.histogram = histogram(values, bins)
    return site


_SCRATCH_ELEMENTS = 1 << 20
_scratch: dict[tuple, torch.Tensor] = {}


def _passes(x3: torch.Tensor, fingerprints: bool, unit_max: bool):
    """The reductions over the whole tensor, as few and as contiguous as possible:

    - (A, U, P) with P > 1 (channels first): each (a, u) row is contiguous, so one matrix
      product with (P, 1 + k) gives row sums and fingerprints, ``vector_norm`` over rows the
      sums of squares (no temporary), ``amax`` over rows the maxima;
    - P == 1 (units last, (samples, units)): one (1 + k, A) @ (A, U) product for sums and
      fingerprints; squares through a reused scratch buffer.

    Returns numpy float64: sums (1 [+ k], U), sums of squares (U,), per-unit maxima or None.
    """
    a_dim, units, p_dim = x3.shape
    top = None
    if p_dim == 1:
        x2 = x3.reshape(a_dim, units)
        sums = (_projection(a_dim, x2) @ x2) if fingerprints else x2.sum(dim=0, keepdim=True)
        sq = _column_square_sums(x2)
        if unit_max:
            top = x2.amax(dim=0)
        out = [sums, sq[None]] + ([top[None]] if top is not None else [])
        host = torch.cat(out).double().cpu().numpy()
        return host[:-2 if top is not None else -1], host[-2 if top is not None else -1], \
            (host[-1] if top is not None else None)
    rows = x3.reshape(a_dim * units, p_dim)
    per = (rows @ _projection(p_dim, rows).T) if fingerprints else rows.sum(dim=1, keepdim=True)
    sq = torch.linalg.vector_norm(rows, dim=1)
    parts = [per, sq[:, None]] + ([rows.amax(dim=1)[:, None]] if unit_max else [])
    host = torch.cat(parts, dim=1).double().cpu().numpy().reshape(a_dim, units, -1)
    k1 = per.shape[1]
    if fingerprints:  # rank-one projection weights r_a * r_p: contract the rows over A
        ra = _projection(a_dim, rows).double().cpu().numpy()  # (1 + k, A)
        sums = np.einsum("auk,ka->ku", host[:, :, :k1], ra)
    else:
        sums = host[:, :, 0].sum(axis=0)[None]
    sq_units = (host[:, :, k1] ** 2).sum(axis=0)
    top_units = host[:, :, k1 + 1].max(axis=0) if unit_max else None
    return sums, sq_units, top_units


def _column_square_sums(x2: torch.Tensor) -> torch.Tensor:
    """Per-column sums of squares of (samples, units); large tensors go through one reused
    scratch buffer instead of a tensor-sized temporary (fresh allocations cost page faults)."""
    a_dim, units = x2.shape
    if a_dim * units <= _SCRATCH_ELEMENTS or units > _SCRATCH_ELEMENTS:
        return (x2 * x2).sum(dim=0)
    rows = _SCRATCH_ELEMENTS // units
    key = (x2.device, x2.dtype)
    buf = _scratch.get(key)
    if buf is None:
        buf = _scratch[key] = torch.empty(_SCRATCH_ELEMENTS, device=x2.device, dtype=x2.dtype)
    out = torch.zeros(units, device=x2.device, dtype=x2.dtype)
    for start in range(0, a_dim, rows):
        chunk = x2[start:start + rows]
        b = buf[:chunk.numel()].view(chunk.shape)
        torch.mul(chunk, chunk, out=b)
        out += b.sum(dim=0)
    return out


def _identical_groups(x3, sums, sq, n) -> list[list[int]]:
    """Units whose columns are copies: equal fingerprints (sorted, adjacent), then checked."""
    fp = np.concatenate([sums, sq[None]]) / n  # (2 + k, U)
    scale = np.maximum(np.sqrt(fp[-1]) + np.abs(fp[0]), 1e-30)  # per-unit magnitude
    order = np.argsort(fp[1], kind="stable")
    f, sc = fp[:, order], scale[order]
    tol = 1e-4 * np.maximum(sc[1:], sc[:-1])
    close = (np.abs(f[:, 1:] - f[:, :-1]) <= tol).all(axis=0)
    if not close.any():
        return []
    groups: list[list[int]] = []
    idx = order.tolist()
    run = [idx[0]]
    for i, c in enumerate(close.tolist()):
        if c:
            run.append(idx[i + 1])
            continue
        if len(run) > 1:
            groups.extend(_verify(x3, run))
        run = [idx[i + 1]]
    if len(run) > 1:
        groups.extend(_verify(x3, run))
    return sorted((sorted(g) for g in groups), key=lambda g: g[0])


def _verify(x3: torch.Tensor, candidates: list[int]) -> list[list[int]]:
    """Split candidate units into groups of columns equal within IDENTICAL_RTOL."""
    cols = x3.index_select(1, torch.tensor(candidates, device=x3.device))
    cols = cols.transpose(0, 1).reshape(len(candidates), -1)
    groups, left = [], list(range(len(candidates)))
    while len(left) > 1:
        first = cols[left[0]]
        # The difference must also be small against the column's own range: the units of a
        # collapsed layer are near-constant offsets that can agree to 1e-5 by chance, and
        # constant columns are copies only when exactly equal.
        lo, hi = (float(v) for v in torch.aminmax(first))
        tol = min(IDENTICAL_RTOL * max(abs(lo), abs(hi)), 0.01 * (hi - lo))
        same = ((cols[left] - first).abs().amax(dim=1) <= tol).tolist()
        group = [candidates[left[i]] for i, ok in enumerate(same) if ok]
        if len(group) > 1:
            groups.append(group)
        left = [j for j, ok in zip(left, same) if not ok]
    return groups


def _nonfinite_site(site: SiteStats, x3: torch.Tensor) -> SiteStats:
    flat = x3.reshape(-1)
    ok = torch.isfinite(flat)
    site.nonfinite = int(flat.numel() - int(ok.sum()))
    vals = flat[ok].double()
    if vals.numel():
        site.mean, site.std = float(vals.mean()), float(vals.std(unbiased=False))
    else:
        site.mean = site.std = math.nan
    return site


def sample_correlation(x: torch.Tensor) -> float | None:
    """Mean pairwise correlation between the samples (dim 0) of ``x``, centred by the grand
    mean (see the module docstring); None when a sample has no spread."""
    rows = x.reshape(x.shape[0], -1)
    b, d = rows.shape
    sums = rows.sum(dim=1).double()
    sq = torch.linalg.vector_norm(rows, dim=1).double() ** 2
    m = float(sums.sum()) / (b * d)
    norms2 = sq - 2 * m * sums + d * m * m
    if not bool(torch.isfinite(norms2).all()) or float(norms2.min()) <= 0:
        return None
    inv = norms2.rsqrt()
    v = (inv.to(rows.dtype) @ rows).double()  # sum_a x_a / |x_a - m|
    w = float(inv.sum())
    s2 = float(v @ v) - 2 * m * w * float(v.sum()) + d * m * m * w * w
    return (s2 - b) / (b * (b - 1))


def _has_fn(act: Activation) -> bool:
    try:
        activation_fn(act)
        return True
    except KeyError:
        return False


# Values a site's histogram counts at most: 2^15, torch's intra-op grain size, so that the
# gather and the activation on the sample run on the calling thread. A pooled op on a busy
# machine waits for a descheduled worker: 30-80 ms per op measured on a loaded 2-core machine,
# which over a model's sites was most of what the histograms added to the probe.
HISTOGRAM_SAMPLE = 1 << 15
_sample_cache: dict[tuple, torch.Tensor] = {}


def histogram_sample(x: torch.Tensor) -> torch.Tensor:
    """The values a site's histogram counts: all of them up to HISTOGRAM_SAMPLE, else a fixed
    stratified sample of that many: one position drawn uniformly in each of HISTOGRAM_SAMPLE equal
    stretches of the flattened tensor (the same positions for every tensor of that size, so
    reports stay reproducible). Each bin's share of a 2^15 sample is within 0.3% (one standard
    error, sqrt(p (1 - p) / 2^15) <= 0.28%; stratifying can only lower it) of the whole tensor's:
    under a pixel of a drawn bar. The sample costs one gather instead of passes over a large
    activation; its positions ascend, so the gather reads memory in order, and they cost well
    under a ms to draw (a probe runs once: this is not amortised)."""
    flat = x.reshape(-1)
    n = flat.numel()
    if n <= HISTOGRAM_SAMPLE:
        return flat
    key = (n, flat.device)
    idx = _sample_cache.get(key)
    if idx is None:
        m = HISTOGRAM_SAMPLE
        jitter = np.random.default_rng(0x4157).random(m)
        pos = np.minimum(((np.arange(m) + jitter) * (n / m)).astype(np.int64), n - 1)
        idx = torch.from_numpy(pos).to(flat.device)
        if len(_sample_cache) > 64:
            _sample_cache.clear()
        _sample_cache[key] = idx
    return flat.index_select(0, idx)


def histogram(x: torch.Tensor, bins: int) -> tuple[list[float], list[int]]:
    """(edges, counts) of the finite values of ``x`` over [min, max], in ``bins`` equal bins
    (the last one closed, as ``torch.histc``).

    Counted in numpy on the host as ``bincount(floor((x - lo) * bins / (hi - lo)))``,
    single-threaded: about 6 ns per value, where ``torch.histc`` on the CPU takes 10-50 ns, and
    where a chain of small multi-threaded torch ops (``torch.bincount`` is one) stalls on a busy
    thread pool, tens of ms per op on a loaded 2-core machine; between them they were most of what
    histograms added to the probe. ``x`` is at most a HISTOGRAM_SAMPLE sample, so the copy off
    an accelerator is 128 KB. float32 arithmetic unless the range could overflow it (then
    float64)."""
    flat = x.detach().reshape(-1)
    if flat.dtype not in (torch.float32, torch.float64):
        flat = flat.float()
    a = flat.cpu().numpy()
    lo, hi = (float(a.min()), float(a.max())) if a.size else (math.nan, math.nan)
    if not (math.isfinite(lo) and math.isfinite(hi)):  # NaN/Inf present (or empty): drop them
        a = a[np.isfinite(a)]
        if a.size == 0:
            return [0.0, 0.0], [0]
        lo, hi = float(a.min()), float(a.max())
    if hi <= lo:
        return [lo, hi], [int(a.size)]
    span = hi - lo
    dtype = np.float32 if 1e-30 < span < 1e37 else np.float64
    index = np.subtract(a, lo, dtype=dtype)
    index *= dtype(bins / span)
    np.clip(index, 0, bins - 1, out=index)
    counts = np.bincount(index.astype(np.intp), minlength=bins)
    step = span / bins
    return [lo + i * step for i in range(bins + 1)], counts.tolist()
