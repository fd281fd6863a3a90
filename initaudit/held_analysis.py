"""``analyze`` for a tensor read where it is: a DTensor's local shard (reduced across ranks) or a
tensor on a GPU (computed on the device). It gives the single-process ``analysis.analyze``
result: the same random draws (same generator, same order), the same sample, the same lines.

- statistics: the moments of the local box, all_reduced (sums, min, max), then ``finish``;
- shape sample: the same strided positions, read with ``Held.take`` (exact values);
- exact duplicate rows: a row's hash sum_j c_j bits_j (mod 2^64) is linear in its columns, so
  each rank hashes its part of every row it holds and the partial hashes are summed; two
  independent 64-bit hashes must agree (rows differing anywhere collide with p < 2^-66), and
  rows are never exchanged;
- near-duplicate rows: the LSH projections r @ P are linear too: partial (rows x 144)
  projections are summed, then the single-process bucketing and exact cosine check run on the
  few candidate rows (``take``); the column mean, a sum across ranks, can differ from the
  single-process one in the last fp32 bit, which moves a row across a hyperplane only when its
  projection is within that rounding of the offset;
- orthogonality: the same <= 64 random lines, read with ``take``, and their Gram matrix;
- partial identity / permutation (``rowsearch.identity_gain``), read only where the reduced zero
  fraction leaves exactly min(units, fan_in) non-zeros: each rank counts its non-zeros per row
  and per column and sums their values per row, and those small vectors are summed;
- spectral radius of a recurrent hidden weight (square blocks <= ``spectral_max_dim``, which
  eigenvalues need whole): each block is read with ``take``.
"""

from __future__ import annotations

import math

import torch

from initaudit.analysis import (
    AnalysisOptions,
    TensorAnalysis,
    sample_positions,
    sample_shape,
    spectral_radius,
)
from initaudit.graph import OpKind, Param
from initaudit.held import Held, local_unit_rows, unit_row_index
from initaudit.moments import TensorStats, finish
from initaudit.rowsearch import (
    _HASH_COLUMNS,
    _LSH_COLUMNS,
    _ORTHO_LINES,
    _WINDOW_COSINE,
    NEAR_DUPLICATE_MIN_DIM,
    DuplicateRows,
    _group,
    lsh_candidates,
    merge_blocks,
    orthogonal_gain,
)

_STEP_ELEMENTS = 1 << 20  # rows per step are sized so that a step's int64 temporaries are 8 MB
_CANDIDATES = 256  # candidate pairs whose rows are read at once


def analyze_held(held: Held, param: Param, opts: AnalysisOptions) -> TensorAnalysis:
    stats = finish(held.moments(), lambda mean: held.moments(center=mean))
    result = TensorAnalysis(stats=stats)
    if not param.is_weight or held.numel == 0:
        return result
    pos = sample_positions(held.numel)
    result.shape = sample_shape(held.take(torch.arange(pos.start, pos.stop, pos.step)))
    if len(held.shape) < 2 or stats.nonfinite or stats.std == 0:
        return result
    units_dim = param.units_dim or 0
    n = held.shape[units_dim]
    gates = len(param.gates) if param.gates else 1
    bounds = _chunk_bounds(n, gates)
    if param.gates:
        result.gate_std = [_unbiased_std(held, b, units_dim) for b in bounds]
    if param.kind is OpKind.RECURRENT_HIDDEN:
        d = held.numel // n
        result.spectral_radius = [
            spectral_radius(held.take(unit_row_index(held.shape, units_dim, torch.arange(a, b))).cpu())
            for a, b in bounds if b - a == d <= opts.spectral_max_dim]
    if opts.duplicates:  # as in analysis.analyze: only when an enabled rule reads them
        rows, row_ids, cols = local_unit_rows(held, units_dim)
        parts = [_duplicates(held, rows, row_ids, cols, units_dim, b, opts) for b in bounds]
        result.duplicates = merge_blocks(parts, [b - a for a, b in bounds])
        del rows
    if param.kind is not OpKind.EMBEDDING:
        result.orthogonal_gain = _orthogonal(held, len(param.gates) if param.gates else 0, opts.seed)
        result.identity_gain = _identity(held, units_dim, stats.zero_fraction)
    return result


def _identity(held: Held, units_dim: int, zero_fraction: float) -> float | None:
    """``rowsearch.identity_gain`` of the unit rows from this rank's non-zeros: at most one per
    row and per column across all ranks, min(units, fan_in) of them, all one positive value."""
    n = held.shape[units_dim]
    d = held.numel // max(n, 1)
    lines = min(n, d)
    if lines < 2 or abs((1.0 - zero_fraction) * n * d - lines) > 0.5:
        return None
    rows, row_ids, cols = local_unit_rows(held, units_dim)
    nz = rows.nonzero() if held.owner else torch.empty(0, 2, dtype=torch.long, device=held.device)
    at_row, at_col = row_ids[nz[:, 0]], cols[nz[:, 1]]
    values = rows[nz[:, 0], nz[:, 1]].double()
    per_row = torch.zeros(2, n, dtype=torch.float64, device=held.device)
    per_row[0].index_add_(0, at_row, torch.ones_like(values))
    per_row[1].index_add_(0, at_row, values)
    per_col = torch.zeros(d, dtype=torch.float64, device=held.device)
    per_col.index_add_(0, at_col, torch.ones_like(values))
    counts, sums = held.reduce(per_row).cpu()
    per_col = held.reduce(per_col).cpu()
    if float(counts.max()) > 1 or float(per_col.max()) > 1 or int(counts.sum()) != lines:
        return None
    found = sums[counts == 1]
    if float(found.min()) <= 0 or float(found.max()) != float(found.min()):
        return None
    return float(found[0])


def _chunk_bounds(n: int, parts: int) -> list[tuple[int, int]]:
    """The row ranges of ``torch.chunk(n rows, parts)``."""
    size = math.ceil(n / parts) if n else 0
    return [(a, min(a + size, n)) for a in range(0, n, size)] if size else [(0, 0)]


def _unbiased_std(held: Held, rows: tuple[int, int], units_dim: int) -> float:
    """``block.std()`` (Bessel-corrected) of unit rows [a, b), from reduced moments."""
    m = held.moments(rows=rows, units_dim=units_dim)
    s: TensorStats = finish(m, lambda mean: held.moments(center=mean, rows=rows, units_dim=units_dim))
    return s.std * math.sqrt(m.finite / (m.finite - 1)) if m.finite > 1 else math.nan


def _block_part(rows: torch.Tensor, row_ids: torch.Tensor, block: tuple[int, int]):
    """This rank's rows of unit rows [a, b) (a view: the local rows are consecutive)."""
    a, b = block
    first = int(row_ids[0]) if row_ids.numel() else 0
    lo, hi = min(max(a - first, 0), rows.shape[0]), max(min(b - first, rows.shape[0]), 0)
    hi = max(hi, lo)
    return rows[lo:hi], row_ids[lo:hi] - a


def _duplicates(held: Held, rows: torch.Tensor, row_ids: torch.Tensor, cols: torch.Tensor,
                units_dim: int, block: tuple[int, int], opts: AnalysisOptions) -> DuplicateRows:
    """``rowsearch.duplicate_rows`` of unit rows [a, b), from this rank's part of them."""
    a, b = block
    n, d = b - a, held.numel // max(held.shape[units_dim], 1)
    result = DuplicateRows(rows=n)
    if n < 2:
        return result
    local, local_ids = _block_part(rows, row_ids, block)
    if not held.owner:
        local, local_ids = local[:0], local_ids[:0]
    gen = torch.Generator().manual_seed(opts.seed)
    coeffs = torch.randint(1, 2**62, (d,), generator=gen, dtype=torch.int64) | 1
    torch.randint(0, max(1, d - _HASH_COLUMNS + 1), (1,), generator=gen)  # the window draw, as there
    other = torch.randint(1, 2**62, (d,), generator=torch.Generator().manual_seed(opts.seed + 1),
                          dtype=torch.int64) | 1
    keys = torch.zeros(2, n, dtype=torch.int64, device=held.device)
    bits = local.view(torch.int32)
    step = max(1, _STEP_ELEMENTS // max(bits.shape[1], 1))
    for k, c in enumerate((coeffs, other)):
        c = c.to(held.device)[cols]
        for s in range(0, bits.shape[0], step):
            keys[k, local_ids[s:s + step]] = (bits[s:s + step].to(torch.int64) * c).sum(dim=1)
    keys = held.reduce(keys).cpu()
    _, group_id, counts = torch.unique(keys.T, dim=0, return_inverse=True, return_counts=True)
    result.exact_groups = _group([(int(i), int(j)) for i, j in _exact_chain(group_id, counts)])
    if d < NEAR_DUPLICATE_MIN_DIM:
        return result
    group_of = {r: i for i, g in enumerate(result.exact_groups) for r in g}
    near = {pair: c for pair, c in _near(held, local, local_ids, cols, units_dim, block, opts, gen).items()
            if group_of.get(pair[0], -1) != group_of.get(pair[1], -2)}
    result.near_groups = _group(list(near))
    result.near_min_cosine = min(near.values()) if near else None
    return result


def _exact_chain(group_id: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """(k, 2) pairs chaining the rows of every hash class with more than one row."""
    rows = torch.nonzero(counts[group_id] > 1).flatten()
    if rows.numel() < 2:
        return torch.empty(0, 2, dtype=torch.long)
    order = rows[torch.argsort(group_id[rows], stable=True)]
    same = group_id[order[1:]] == group_id[order[:-1]]
    return torch.stack([order[:-1][same], order[1:][same]], dim=1)


def _near(held: Held, local: torch.Tensor, local_ids: torch.Tensor, cols: torch.Tensor,
          units_dim: int, block: tuple[int, int], opts: AnalysisOptions, gen: torch.Generator) -> dict:
    """``rowsearch._near_pairs`` from partial projections (same draws, same bucketing)."""
    a, b = block
    n, d = b - a, held.numel // held.shape[units_dim]
    tables, nbits = 6, 24
    dev = held.device
    col_sum = torch.zeros(d, dtype=torch.float32, device=dev)
    col_sum.index_add_(0, cols, local.sum(dim=0))
    mean = held.reduce(col_sum) / n
    start = int(torch.randint(0, d - _LSH_COLUMNS + 1, (1,), generator=gen)) if d > _LSH_COLUMNS else 0
    width = min(d, _LSH_COLUMNS)
    planes = torch.randn(width, tables * nbits, generator=gen, dtype=torch.float32).to(dev)
    offset = mean[start:start + width] @ planes
    in_window = (cols >= start) & (cols < start + width)
    proj = torch.zeros(n, tables * nbits, dtype=torch.float32, device=dev)
    if in_window.any():
        sub_planes = planes[cols[in_window] - start]
        step = max(1, _STEP_ELEMENTS // _LSH_COLUMNS)
        for s in range(0, local.shape[0], step):
            proj[local_ids[s:s + step]] = local[s:s + step][:, in_window] @ sub_planes
    proj = held.reduce(proj)
    weights = (2 ** torch.arange(nbits, device=dev)).to(torch.float32)
    keys = ((proj > offset).to(torch.float32).view(-1, tables, nbits) @ weights).to(torch.int64).cpu()
    del proj
    cand = lsh_candidates(keys, nbits)
    if cand.numel() == 0:
        return {}
    found = {}
    for s in range(0, cand.shape[0], _CANDIDATES):
        pair = cand[s:s + _CANDIDATES]
        needed, where = torch.unique(pair, return_inverse=True)
        values = held.take(unit_row_index(held.shape, units_dim, needed + a)) - mean
        ra, rb = values[where[:, 0].to(dev)], values[where[:, 1].to(dev)]
        cos = _cosine(ra, rb)
        hit = cos >= opts.near_duplicate_cosine
        if d > _LSH_COLUMNS:  # the window screen of rowsearch._near_pairs, on the same window
            hit &= _cosine(ra[:, start:start + width], rb[:, start:start + width]) >= _WINDOW_COSINE
        found.update({(int(i), int(j)): float(c) for i, j, c in zip(pair[hit, 0], pair[hit, 1], cos[hit])})
    return found


def _cosine(ra: torch.Tensor, rb: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine of centred rows, on the CPU."""
    return ((ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-30)).cpu()


def _orthogonal(held: Held, gates: int, seed: int) -> float | None:
    """``rowsearch.param_orthogonal_gain``: the gain on the (shape[0], -1) flattening, whole or per gate."""
    whole = _ortho_lines(held, (0, held.shape[0]), seed)
    if whole is not None or not gates:
        return whole
    gains = [_ortho_lines(held, blk, seed) for blk in _chunk_bounds(held.shape[0], gates)]
    return gains[0] if all(g is not None for g in gains) else None


def _ortho_lines(held: Held, block: tuple[int, int], seed: int) -> float | None:
    """``orthogonal_gain`` of rows [a, b) of the (shape[0], -1) flattening, reading only the
    <= 64 consecutive lines it draws (``orthogonal_gain`` of those lines alone takes them all:
    the same Gram matrix)."""
    a, b = block
    r, c = b - a, held.numel // held.shape[0]
    if r < 2 or c < 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    k = min(_ORTHO_LINES, min(r, c))
    start = int(torch.randint(0, min(r, c) - k + 1, (1,), generator=gen))
    pick = torch.arange(start, start + k)
    if r <= c:
        index = (pick[:, None] + a) * c + torch.arange(c)[None, :]
    else:
        index = (torch.arange(a, b)[None, :]) * c + pick[:, None]
    return orthogonal_gain(held.take(index).cpu(), seed)
