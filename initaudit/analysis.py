"""Per-tensor statistics, computed once per tensor in a single sweep.

Everything the static rules need from a tensor's values is gathered here while the tensor is in
memory, so a checkpoint is read exactly once and rules only look at small summaries. Costs were
measured (DESIGN.md section 8): one fp32 copy at most, a ``sum`` that proves finiteness in the
common case, a BLAS ``dot`` for the second moment, one ``aminmax``, and a fixed-size sample for
distribution-shape checks; duplicate rows by random projections, never an all-pairs Gram matrix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from initaudit.graph import OpKind, Param

SAMPLE_SIZE = 65536
# Rows with at least this many columns are searched for near-duplicates (in fewer dimensions two
# random rows are close by chance).
NEAR_DUPLICATE_MIN_DIM = 16
_ORTHO_PROBES = 4


@dataclass
class TensorStats:
    """Exact whole-tensor statistics in fp32, over the finite elements."""

    numel: int
    mean: float
    std: float
    min: float
    max: float
    nonfinite: int
    zero_fraction: float

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "nonfinite": self.nonfinite, "zero_fraction": self.zero_fraction}


@dataclass
class ShapeStats:
    """Distribution-shape figures from a strided sample of the non-zero finite values."""

    sample_size: int
    tiny_fraction: float  # |x| < 1e-30 (denormals and near-denormals): never from a real init
    log10_span: float  # decades between the 0.1% and 99.9% quantiles of |x|
    abs_max: float
    distinct_fraction: float  # distinct values / sample size


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


@dataclass
class TensorAnalysis:
    stats: TensorStats
    shape: ShapeStats | None = None
    duplicates: DuplicateRows | None = None
    orthogonal_gain: float | None = None  # set when rows (or columns) are orthonormal x gain
    gate_std: list[float] | None = None  # per-gate std for stacked recurrent weights
    spectral_radius: list[float] | None = None  # per gate block of a recurrent hidden weight


@dataclass(frozen=True)
class AnalysisOptions:
    near_duplicate_cosine: float = 0.995
    max_bucket: int = 64
    spectral_max_dim: int = 2048
    seed: int = 0


def as_fp32(t: torch.Tensor) -> torch.Tensor:
    """Dequantised fp32 view of ``t`` (fp16/bf16/int8/quantised weights are judged in fp32)."""
    if t.is_quantized:
        t = t.dequantize()
    return t if t.dtype == torch.float32 else t.to(torch.float32)


def tensor_stats(flat: torch.Tensor) -> TensorStats:
    """mean, std, min, max, non-finite count, zero fraction of a 1-D fp32 tensor."""
    n = flat.numel()
    if n == 0:
        return TensorStats(0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
    total = float(flat.sum())
    sumsq = float(torch.dot(flat, flat))
    nonfinite = 0
    if not (math.isfinite(total) and math.isfinite(sumsq)):
        finite = torch.isfinite(flat)
        nonfinite = n - int(finite.sum())
        flat = flat[finite]
        n_fin = flat.numel()
        if n_fin == 0:
            return TensorStats(n, math.nan, math.nan, math.nan, math.nan, nonfinite, 0.0)
        total = float(flat.double().sum())
        sumsq = float(flat.double().pow(2).sum())
    lo, hi = (float(v) for v in torch.aminmax(flat))
    n_fin = flat.numel()
    mean = total / n_fin
    var = max(sumsq / n_fin - mean * mean, 0.0)
    if lo == hi:
        var = 0.0
    elif mean * mean > 1e4 * var:  # cancellation: recompute exactly
        var = float(flat.double().var(unbiased=False))
    zeros = n_fin - int(torch.count_nonzero(flat))
    return TensorStats(n, mean, math.sqrt(var), lo, hi, nonfinite, zeros / n)


def shape_stats(flat: torch.Tensor) -> ShapeStats | None:
    step = max(1, flat.numel() // SAMPLE_SIZE)
    sample = flat[::step][:SAMPLE_SIZE]
    sample = sample[torch.isfinite(sample) & (sample != 0)].abs().double()
    if sample.numel() < 8:
        return None
    logs = torch.log10(sample)
    q = torch.quantile(logs, torch.tensor([0.001, 0.999], dtype=torch.float64))
    return ShapeStats(
        sample_size=sample.numel(),
        tiny_fraction=float((sample < 1e-30).double().mean()),
        log10_span=float(q[1] - q[0]),
        abs_max=float(sample.max()),
        distinct_fraction=torch.unique(sample).numel() / sample.numel(),
    )


def unit_rows(t: torch.Tensor, param: Param) -> torch.Tensor:
    """2-D view with one row per output unit (transposed for (in, out) storage)."""
    rows = t.movedim(param.units_dim, 0) if param.units_dim else t
    return rows.reshape(rows.shape[0], -1)


def _group(pairs: list[tuple[int, int]]) -> list[list[int]]:
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


def _buckets(keys: torch.Tensor, max_bucket: int) -> list[torch.Tensor]:
    """Row indices that share a key, for keys shared by more than one row."""
    order = torch.argsort(keys, stable=True)
    sorted_keys = keys[order]
    boundaries = torch.nonzero(sorted_keys[1:] != sorted_keys[:-1]).flatten() + 1
    starts = torch.cat([torch.zeros(1, dtype=torch.long), boundaries])
    ends = torch.cat([boundaries, torch.tensor([keys.numel()])])
    sizes = ends - starts
    return [order[s:s + min(int(z), max_bucket)] for s, z in zip(starts[sizes > 1].tolist(),
                                                                 sizes[sizes > 1].tolist())]


def duplicate_rows(rows: torch.Tensor, opts: AnalysisOptions) -> DuplicateRows:
    """Exact duplicates by hashing rows; near-duplicates (cosine) by sign-random-projection LSH.

    Both are O(rows * cols): one projection of all rows, then exact checks inside buckets only.
    Rows are centred first: trained embeddings share a common direction, and uncentred hashing
    then puts most rows in the same bucket.
    """
    n, d = rows.shape
    result = DuplicateRows(rows=n)
    if n < 2:
        return result
    gen = torch.Generator().manual_seed(opts.seed)
    # Exact: two random projections in float64 make a collision-free key for distinct rows.
    proj = torch.randn(d, 2, generator=gen, dtype=torch.float64)
    keys = rows.double() @ proj
    key = keys[:, 0] * 1e3 + keys[:, 1]
    pairs = []
    for bucket in _buckets(key, opts.max_bucket):
        first = bucket[0]
        for other in bucket[1:]:
            if torch.equal(rows[first], rows[other]):
                pairs.append((int(first), int(other)))
    result.exact_groups = _group(pairs)
    if d < NEAR_DUPLICATE_MIN_DIM:
        return result
    exact = {r for g in result.exact_groups for r in g[1:]}
    centred = rows - rows.mean(dim=0, keepdim=True)
    norms = centred.norm(dim=1).clamp_min(1e-30)
    tables, bits = 6, 16
    planes = torch.randn(d, tables * bits, generator=gen, dtype=rows.dtype)
    signs = (centred @ planes > 0).to(torch.int64).view(n, tables, bits)
    weights = (2 ** torch.arange(bits, dtype=torch.int64))
    table_keys = (signs * weights).sum(dim=2)
    near: set[tuple[int, int]] = set()
    min_cos = None
    for t in range(tables):
        for bucket in _buckets(table_keys[:, t], opts.max_bucket):
            members = centred[bucket] / norms[bucket, None]
            cos = members @ members.T
            ii, jj = torch.nonzero(torch.triu(cos, diagonal=1) >= opts.near_duplicate_cosine, as_tuple=True)
            for i, j in zip(ii.tolist(), jj.tolist()):
                a, b = sorted((int(bucket[i]), int(bucket[j])))
                if b in exact and a in exact | {g[0] for g in result.exact_groups}:
                    continue
                if (a, b) not in near:
                    near.add((a, b))
                    c = float(cos[i, j])
                    min_cos = c if min_cos is None else min(min_cos, c)
    result.near_groups = [g for g in _group(list(near)) if not set(g[1:]) <= exact]
    result.near_min_cosine = min_cos
    return result


def orthogonal_gain(rows: torch.Tensor, seed: int = 0) -> float | None:
    """g when rows (or columns, whichever are fewer) are orthonormal times g, else None.

    Checked with a few random probes u: for W W^T = g^2 I, ||W^T u|| = g ||u|| exactly, while a
    Gaussian matrix of the same shape spreads these ratios by about 1/sqrt(cols).
    """
    r, c = rows.shape
    if r < 2 or c < 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    m = rows if r <= c else rows.T
    u = torch.randn(m.shape[0], _ORTHO_PROBES, generator=gen, dtype=torch.float64)
    ratios = (m.double().T @ u).norm(dim=0) / u.norm(dim=0)
    if float(ratios.min()) <= 0:
        return None
    if float(ratios.max() / ratios.min()) - 1 > 1e-3:
        return None
    return float(ratios.mean())


def spectral_radius(block: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(block.double()).abs().max())


def analyze(t: torch.Tensor, param: Param, opts: AnalysisOptions = AnalysisOptions()) -> TensorAnalysis:
    """All value-level facts the rules need about one tensor."""
    w = as_fp32(t.detach())
    if w.device.type != "cpu":
        w = w.cpu()
    flat = w.reshape(-1)
    if not flat.is_contiguous():
        flat = flat.contiguous()
    result = TensorAnalysis(stats=tensor_stats(flat))
    if not param.is_weight or flat.numel() == 0:
        return result
    result.shape = shape_stats(flat)
    if w.dim() < 2 or result.stats.nonfinite or result.stats.std == 0:
        return result
    rows = unit_rows(w, param)
    blocks = rows.chunk(len(param.gates), dim=0) if param.gates else (rows,)
    if param.gates:
        result.gate_std = [float(b.std()) for b in blocks]
    if param.kind is OpKind.RECURRENT_HIDDEN:
        result.spectral_radius = [spectral_radius(b) for b in blocks
                                  if b.shape[0] == b.shape[1] <= opts.spectral_max_dim]
    result.duplicates = _merge_blocks([duplicate_rows(b, opts) for b in blocks], [b.shape[0] for b in blocks])
    gains = [orthogonal_gain(b, opts.seed) for b in blocks]
    result.orthogonal_gain = gains[0] if all(g is not None for g in gains) else None
    return result


def _merge_blocks(parts: list[DuplicateRows], sizes: list[int]) -> DuplicateRows:
    merged = DuplicateRows(rows=sum(sizes))
    offset = 0
    for part, size in zip(parts, sizes):
        merged.exact_groups += [[i + offset for i in g] for g in part.exact_groups]
        merged.near_groups += [[i + offset for i in g] for g in part.near_groups]
        if part.near_min_cosine is not None:
            merged.near_min_cosine = min(part.near_min_cosine, merged.near_min_cosine or 1.0)
        offset += size
    return merged
