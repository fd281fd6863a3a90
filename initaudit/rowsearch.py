"""Row-level searches over a weight matrix: units that copy each other (exact and near-duplicate
rows) and rows (or columns) that are orthonormal times a gain.

Both are O(rows * cols) with exact checks on candidates only, never an all-pairs Gram matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from initaudit.analysis import AnalysisOptions
    from initaudit.graph import Param

# Rows with at least this many columns are searched for near-duplicates (in fewer dimensions two
# random rows are close by chance).
NEAR_DUPLICATE_MIN_DIM = 16
_ORTHO_LINES = 64
_ORTHO_FIRST = 8  # lines whose lengths are compared first
_ORTHO_TOL = 1e-3  # relative deviation of G from g^2 I still taken as orthogonal (fp32 precision)
# Range of the first lines' squared lengths, over their largest, past which step 2 must fail:
# 2 tol / (1 - tol), with a margin for float64 rounding of the lengths.
_ORTHO_RANGE = 2.5 * _ORTHO_TOL


@dataclass
class DuplicateRows:
    """Units (rows along the units dimension) that copy each other."""

    rows: int
    exact_groups: list[list[int]] = field(default_factory=list)
    near_groups: list[list[int]] = field(default_factory=list)
    near_min_cosine: float | None = None

    @property
    def exact_rows(self) -> int:
        return sum(len(g) - 1 for g in self.exact_groups)

    @property
    def near_rows(self) -> int:
        return sum(len(g) - 1 for g in self.near_groups)


def _group(pairs: list[tuple[int, int]]) -> list[list[int]]:
    """Connected components of a pair list (union-find), each sorted, ordered by first row."""
    parent: dict[int, int] = {}

    def find(a: int) -> int:
        while parent.setdefault(a, a) != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    for a, b in pairs:
        parent[find(a)] = find(b)
    groups: dict[int, list[int]] = {}
    for a in list(parent):
        groups.setdefault(find(a), []).append(a)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


_CHUNK = 4096  # rows or pairs per step: bounds temporaries to a few MB
_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
_HASH_COLUMNS = 64
_LSH_COLUMNS = 64
_WINDOW_COSINE = 0.9  # window cosine a candidate needs before its full rows are compared
_WINDOW = 2  # neighbours compared after sorting by key; members of a bucket chain through pairs


def _key_pairs(keys: torch.Tensor, window: int) -> torch.Tensor:
    """(k, 2) row pairs that share a key, from neighbours in key order (vectorised).

    The key order comes from one numpy (SIMD) sort of key * 2^b + index, distinct composites,
    at about a quarter of ``torch.argsort``'s cost on the 34k-192k keys of an LSH table set.
    Where no run of equal keys is longer than ``window + 1``, every pair of a run is a
    neighbour pair in any order of its members, so the pairs are those of torch's order (the
    callers read them as a set of unordered pairs); a longer run (a bucket of 4 or more copies
    for the LSH, 3 for the exact hash), or keys that leave no b bits free (the exact search's
    64-bit hashes), take torch's argsort itself, whose order among equal keys picks the pairs."""
    n = keys.numel()
    if n < 2:
        return torch.empty(0, 2, dtype=torch.long)
    sorted_np = _composite_order(keys, window)
    if sorted_np is None:  # torch's order among equal keys picks the pairs
        order = torch.argsort(keys)
        sorted_np = order.cpu().numpy(), keys[order].cpu().numpy()
    order_np, sk_np = sorted_np
    found = []
    for off in range(1, min(window, n - 1) + 1):
        same = sk_np[off:] == sk_np[:-off]
        if same.any():
            found.append(np.stack([order_np[:-off][same], order_np[off:][same]], axis=1))
    return torch.from_numpy(np.concatenate(found)) if found else torch.empty(0, 2, dtype=torch.long)


def _composite_order(keys: torch.Tensor, window: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(order, sorted keys) for ``_key_pairs`` from one sort of distinct composites, or None
    where its pairs could differ from those of torch's order (see there)."""
    if keys.device.type != "cpu":
        return None
    k = keys.numpy()
    n, shift = k.size, max(1, (k.size - 1).bit_length())
    if int(k.min()) < 0 or int(k.max()) >= 1 << (62 - shift):
        return None
    composite = np.sort((k << shift) | np.arange(n, dtype=np.int64))
    sk = composite >> shift
    run = window + 1
    if n > run and bool((sk[run:] == sk[:-run]).any()):
        return None
    return composite & ((1 << shift) - 1), sk


def _bit_hash(bits: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """A 64-bit key per row of integer bit patterns (integer arithmetic: exact, order-free)."""
    keys = torch.empty(bits.shape[0], dtype=torch.int64)
    for start in range(0, bits.shape[0], _CHUNK):
        keys[start:start + _CHUNK] = (bits[start:start + _CHUNK].to(torch.int64) * coeffs).sum(dim=1)
    return keys


def _words(window: torch.Tensor, coeffs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A window of bit patterns as 64-bit words (4 bf16/fp16 or 2 fp32 values each), with as
    many of its coefficients: identical windows give identical words, so the key finds the
    same candidates from 4x (2x) fewer products (the window as is when its rows are not whole
    words)."""
    row_bytes = window.shape[1] * window.element_size()
    if row_bytes % 8:
        return window, coeffs
    words = window.contiguous().view(torch.int64)
    return words, coeffs[:words.shape[1]]


def _exact_pairs(rows: torch.Tensor, gen: torch.Generator) -> list[tuple[int, int]]:
    """Pairs of bitwise-identical rows: a key from a window of 64 columns finds candidates, a key
    over all columns orders them, and adjacent candidates are compared exactly."""
    n, d = rows.shape
    bits = rows.view(_BITS[rows.dtype])  # bf16/fp16: their own 16-bit patterns, no fp32 copy
    coeffs = torch.randint(1, 2**62, (d,), generator=gen, dtype=torch.int64) | 1
    start = int(torch.randint(0, max(1, d - _HASH_COLUMNS + 1), (1,), generator=gen))
    cols = slice(start, start + _HASH_COLUMNS)  # a window: a strided view, no gather
    coarse = _key_pairs(_bit_hash(*_words(bits[:, cols], coeffs[cols])), 1)
    if coarse.numel() == 0:
        return []
    cand = torch.unique(coarse.flatten())
    pairs = cand[_key_pairs(_bit_hash(bits[cand], coeffs), 1)]
    same = torch.cat([(rows[pairs[s:s + _CHUNK, 0]] == rows[pairs[s:s + _CHUNK, 1]]).all(dim=1)
                      for s in range(0, pairs.shape[0], _CHUNK)]) if pairs.numel() else pairs[:, 0]
    return [tuple(p) for p in pairs[same].tolist()]


def _near_pairs(rows: torch.Tensor, opts: AnalysisOptions, gen: torch.Generator) -> dict:
    """Pairs whose centred rows have cosine >= opts.near_duplicate_cosine, by sign-random-
    projection LSH: 6 tables x 24 bits. Two rows at angle theta agree on a bit with probability
    1 - theta/pi, so a pair at cosine 0.995 shares some table with p = 0.975 and one at 0.999
    with p > 0.9999; random rows of a 50k-row table collide in ~75 pairs per table, all
    checked exactly on full rows. The hash reads a random window of at most ``_LSH_COLUMNS`` (64)
    columns (a near-copy is a near-copy on any large subset of its coordinates), so it costs one
    (rows x 64) @ (64 x 144) product whatever the width (recall of planted 0.995-0.9995 pairs
    measured 0.99-1.0 with windows of 128, 64 and 32 columns). Candidates are first checked on that
    window, centred on its column means: a pair below ``_WINDOW_COSINE`` there shares a 24-bit
    key of a table with p < 0.025, so the LSH could not find it reliably anyway, and chance
    collisions (window cosine ~ N(0, 1/64)) stop there; only survivors are compared on full
    rows, with the column means of the whole matrix computed for them alone."""
    n, d = rows.shape
    tables, bits = 6, 24
    # A random window of columns: a strided view, so no gather is needed.
    start = int(torch.randint(0, d - _LSH_COLUMNS + 1, (1,), generator=gen)) if d > _LSH_COLUMNS else 0
    cols = slice(start, start + _LSH_COLUMNS)
    window = rows[:, cols]  # fp32: a view of fp32 rows, an n x 64 copy of bf16/fp16 ones (copied
    # contiguous, then widened: the same values, in half the time of widening the strided view)
    window = window if window.dtype == torch.float32 else window.contiguous().float()
    wmean = window.mean(dim=0)  # the column means of the window: n x 64 read, not the whole matrix
    planes = torch.randn(min(d, _LSH_COLUMNS), tables * bits, generator=gen)
    offset = wmean @ planes
    keys = torch.empty(n, tables, dtype=torch.int64)
    for s in range(0, n, _CHUNK):
        keys[s:s + _CHUNK] = _pack_signs(window[s:s + _CHUNK] @ planes > offset, tables, bits)
    cand = lsh_candidates(keys, bits)
    if cand.numel() == 0:
        return {}
    if d > _LSH_COLUMNS:  # the chance collisions fail on the window already; full rows for the rest
        cand = cand[_cosine(window, wmean, cand[:, 0], cand[:, 1]) >= _WINDOW_COSINE]
        if cand.numel() == 0:
            return {}
    mean = _column_mean(rows) if d > _LSH_COLUMNS else wmean
    found = {}
    for s in range(0, cand.shape[0], _CHUNK):
        a, b = cand[s:s + _CHUNK, 0], cand[s:s + _CHUNK, 1]
        cos = _cosine(rows, mean, a, b)
        hit = cos >= opts.near_duplicate_cosine
        found.update({(int(i), int(j)): float(c) for i, j, c in zip(a[hit], b[hit], cos[hit])})
    return found


def _pack_signs(signs: torch.Tensor, tables: int, bits: int) -> torch.Tensor:
    """(rows x tables) keys from (rows x tables*bits) sign bits: bit b of table t's key is sign
    t*bits + b. numpy packs the bits (the float products sum(sign * 2^b) they replace cost
    2.4x the projection itself on a 5632-row matrix); each key's bytes, padded to 8, are read
    as one little-endian int64 (one view, not a shift and an or per byte)."""
    n = signs.shape[0]
    flat = signs.numpy().reshape(n, tables, bits)
    if bits % 8 == 0:  # byte-aligned tables: pack the whole block at once (same bytes)
        packed = np.packbits(flat.reshape(-1), bitorder="little").reshape(n, tables, bits // 8)
    else:
        packed = np.packbits(flat, axis=-1, bitorder="little")
    words = np.zeros((n, tables, 8), dtype=np.uint8)
    words[..., :packed.shape[-1]] = packed
    return torch.from_numpy(words.view("<i8").reshape(n, tables))


def _column_mean(rows: torch.Tensor) -> torch.Tensor:
    """fp32 column means, summed in blocks of rows (``mean(dtype=float32)`` of a bf16 matrix
    makes an fp32 copy of it whole)."""
    if rows.dtype == torch.float32:
        return rows.mean(dim=0)
    total = torch.zeros(rows.shape[1])
    for s in range(0, rows.shape[0], _CHUNK):
        total += rows[s:s + _CHUNK].float().sum(dim=0)
    return total / rows.shape[0]


def lsh_candidates(keys: torch.Tensor, bits: int) -> torch.Tensor:
    """(k, 2) distinct row pairs (i < j) that share a key in some table, from the (rows x tables)
    LSH keys of ``bits`` bits each."""
    n, tables = keys.shape
    keys = keys.T.contiguous()
    # One sort over all tables: table t's keys are shifted into their own range.
    keys += (torch.arange(tables, dtype=torch.int64) << bits)[:, None]
    cand = _key_pairs(keys.reshape(-1), _WINDOW) % n
    if cand.numel() == 0:
        return cand
    lo, hi = cand.min(dim=1).values, cand.max(dim=1).values
    code = torch.unique(lo * n + hi)
    return torch.stack([code // n, code % n], dim=1)


def _cosine(rows: torch.Tensor, mean: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine of the centred rows a[i], b[i] (rows gathered in chunks of ``_CHUNK`` pairs)."""
    out = []
    for s in range(0, a.numel(), _CHUNK):
        ra, rb = rows[a[s:s + _CHUNK]].float() - mean, rows[b[s:s + _CHUNK]].float() - mean
        out.append((ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-30))
    return torch.cat(out) if out else torch.empty(0)


def duplicate_rows(rows: torch.Tensor, opts: AnalysisOptions) -> DuplicateRows:
    """Exact duplicates by hashing rows; near-duplicates (cosine) by sign-random-projection LSH.

    Both are O(rows * cols): one pass over all rows, then exact checks on candidate pairs only,
    never an all-pairs Gram matrix. Rows are centred first (trained embeddings share a common
    direction, and uncentred hashing then puts most rows in one bucket); by linearity,
    (r - m) @ P = r @ P - m @ P, so the centred matrix is never materialised.
    """
    n, d = rows.shape
    result = DuplicateRows(rows=n)
    if n < 2:
        return result
    gen = torch.Generator().manual_seed(opts.seed)
    result.exact_groups = _group(_exact_pairs(rows, gen))
    if d < NEAR_DUPLICATE_MIN_DIM:
        return result
    group_of = {r: i for i, g in enumerate(result.exact_groups) for r in g}
    near = {pair: c for pair, c in _near_pairs(rows, opts, gen).items()
            if group_of.get(pair[0], -1) != group_of.get(pair[1], -2)}  # exact copies reported above
    result.near_groups = _group(list(near))
    result.near_min_cosine = min(near.values()) if near else None
    return result


def orthogonal_gain(rows: torch.Tensor, seed: int = 0) -> float | None:
    """g when rows (or columns, whichever are fewer) are orthonormal times g, else None.

    Any subset of orthonormal rows is orthonormal, so the Gram matrix G = S S^T of up to 64
    rows (or columns) decides: G = g^2 I to fp32 precision for an orthogonal init, while a
    Gaussian matrix has off-diagonal entries of relative size ~1/sqrt(cols) and diagonal ones
    that vary by sqrt(2/cols). The 64 are consecutive from a random start: adjacent in memory
    (consecutive columns of a row-major matrix share cache lines; random ones cost a cache line
    each, 6.6x slower). Three steps, each only when the one before passed:

    1. the squared lengths of the first 8 of the 64 lines: the test of step 2 (every one within
       tol = 1e-3 of their mean M) bounds their range by 2 tol M <= 2 tol max / (1 - tol), so a
       range above that rejects exactly what step 2 would (an i.i.d. init's range is ~2.8
       sqrt(2 / length) max, 8x the bound at 32k);
    2. the 64 squared lengths (k dot products, not k^2);
    3. the whole G.
    """
    r, c = rows.shape
    if r < 2 or c < 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    k = min(_ORTHO_LINES, min(r, c))
    start = int(torch.randint(0, min(r, c) - k + 1, (1,), generator=gen))
    first = _lines(rows, start, min(k, _ORTHO_FIRST))
    lengths = (first * first).sum(dim=1)
    top = float(lengths.max())
    if top <= 0 or float(lengths.min()) < top * (1 - _ORTHO_RANGE):
        return None
    lines = _lines(rows, start, k)
    diagonal = (lines * lines).sum(dim=1)
    scale = float(diagonal.mean())
    if scale <= 0 or float((diagonal - scale).abs().max()) > _ORTHO_TOL * scale:
        return None
    gram = lines @ lines.T
    if float((gram - scale * torch.eye(k, dtype=gram.dtype)).abs().max()) > _ORTHO_TOL * scale:
        return None
    return math.sqrt(scale)


def _lines(rows: torch.Tensor, start: int, k: int) -> torch.Tensor:
    """Lines start..start+k in float64: rows, or columns when there are fewer columns (copied row
    by row, r x k, so each row's k values are read together)."""
    if rows.shape[0] <= rows.shape[1]:
        return rows[start:start + k].double()
    return rows[:, start:start + k].contiguous().double().T


def identity_gain(rows: torch.Tensor, zero_fraction: float) -> float | None:
    """c when the (units, fan_in) rows are c times a partial identity or permutation: every
    row (or column, whichever are fewer) holds one non-zero, c > 0, in a line of its own
    (torch.nn.init.eye_, dirac_ on the kernel flattening, ZerO's I*, IRNN). Such a layer maps
    non-negative inputs to non-negative outputs, x_i -> c x_j, so a ReLU after it passes
    everything: relu(c I relu(x)) = c relu(x), no 1/2 per layer as for a zero-mean random
    matrix. Read only when the zero fraction allows exactly min(units, fan_in) non-zeros."""
    r, c = rows.shape
    lines = min(r, c)
    if lines < 2 or abs((1.0 - zero_fraction) * r * c - lines) > 0.5:
        return None
    nz = rows.nonzero()
    values = rows[nz[:, 0], nz[:, 1]].double()
    if nz.shape[0] != lines or float(values.min()) <= 0 or float(values.max()) != float(values.min()):
        return None
    if int(nz[:, 0].unique().numel()) != lines or int(nz[:, 1].unique().numel()) != lines:
        return None
    return float(values[0])


def param_orthogonal_gain(w: torch.Tensor, param: Param, seed: int) -> float | None:
    """Orthogonal gain on the flattening torch.nn.init.orthogonal_ uses, (shape[0], -1) (for
    ConvTranspose and (in, out) layouts too), of the whole tensor or of every gate block."""
    flat = w.reshape(w.shape[0], -1)
    whole = orthogonal_gain(flat, seed)
    if whole is not None or not param.gates:
        return whole
    gains = [orthogonal_gain(b, seed) for b in flat.chunk(len(param.gates), dim=0)]
    return gains[0] if all(g is not None for g in gains) else None


def merge_blocks(parts: list[DuplicateRows], sizes: list[int]) -> DuplicateRows:
    merged = DuplicateRows(rows=sum(sizes))
    offset = 0
    for part, size in zip(parts, sizes):
        merged.exact_groups += [[i + offset for i in g] for g in part.exact_groups]
        merged.near_groups += [[i + offset for i in g] for g in part.near_groups]
        if part.near_min_cosine is not None:
            merged.near_min_cosine = min(part.near_min_cosine, merged.near_min_cosine or 1.0)
        offset += size
    return merged
