"""Per-tensor facts, computed once per tensor in a single sweep.

Everything the static rules need from a tensor's values is gathered here while the tensor is in
memory, so a checkpoint is read exactly once and rules only look at small summaries. Costs were
measured (DESIGN.md section 8): the whole-tensor statistics are moments read chunk by chunk in
the stored dtype (``initaudit.moments``), a fixed-size strided sample serves the distribution-
shape checks, and one fp32 copy at most (for a weight matrix that is not fp32) serves the
duplicate-row search, by random projections, never an all-pairs Gram matrix. A DTensor shard or a
tensor on a GPU is analysed where it is (``initaudit.held_analysis``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from initaudit.graph import OpKind, Param
from initaudit.moments import TensorStats, tensor_stats

__all__ = ["TensorStats", "tensor_stats", "analyze"]  # TensorStats and tensor_stats live in moments

SAMPLE_SIZE = 8192
# Rows with at least this many columns are searched for near-duplicates (in fewer dimensions two
# random rows are close by chance).
NEAR_DUPLICATE_MIN_DIM = 16
_ORTHO_LINES = 64


@dataclass
class ShapeStats:
    """Distribution-shape figures from a strided sample of the non-zero finite values."""

    sample_size: int
    tiny_fraction: float  # |x| < 1e-30 (denormals and near-denormals): never from a real init
    log10_span: float  # decades between the 0.1% and 99.9% quantiles of |x|
    abs_max: float
    distinct_fraction: float  # distinct values / sample size
    kurtosis: float = 3.0  # E[x^4] / E[x^2]^2 about zero: normal 3, uniform 1.8, normal cut at 2 sigma 2.36
    peak: float = 0.0  # max |x| / rms(x) over the sample: uniform sqrt(3); a normal's grows with n

    @property
    def distribution(self) -> str | None:
        """``uniform``, ``truncated-normal`` or ``normal`` from the kurtosis (None on a small
        sample: the kurtosis of 512 values has a standard error of about 0.2)."""
        if self.sample_size < 512:
            return None
        if self.kurtosis < 2.05 and self.peak < 1.8:
            return "uniform"
        if self.kurtosis < 2.8:
            return "truncated-normal"
        return "normal"


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


def sample_positions(numel: int) -> range:
    """The flat positions of the shape sample: every ``numel // SAMPLE_SIZE``-th element."""
    step = max(1, numel // SAMPLE_SIZE)
    return range(0, min(numel, step * SAMPLE_SIZE), step)


def shape_stats(flat: torch.Tensor) -> ShapeStats | None:
    """Shape figures of a 1-D tensor from its strided sample (read in the stored dtype)."""
    pos = sample_positions(flat.numel())
    return sample_shape(as_fp32(flat[pos.start:pos.stop:pos.step]))


def sample_shape(sample: torch.Tensor) -> ShapeStats | None:
    """Shape figures of the sample's non-zero finite values (any device; figures on the CPU)."""
    sample = sample[torch.isfinite(sample) & (sample != 0)].abs().cpu()
    n = sample.numel()
    if n < 8:
        return None
    ordered = torch.sort(sample).values  # one sort serves the quantiles and the distinct count
    lo, hi = float(ordered[int(0.001 * (n - 1))]), float(ordered[int(0.999 * (n - 1))])
    sq = ordered.double() ** 2
    m2, m4 = float(sq.mean()), float((sq * sq).mean())
    return ShapeStats(
        kurtosis=m4 / (m2 * m2) if m2 > 0 else 3.0,
        peak=float(ordered[-1]) / math.sqrt(m2) if m2 > 0 else 0.0,
        sample_size=n,
        tiny_fraction=int((ordered < 1e-30).sum()) / n,
        log10_span=math.log10(hi / lo) if lo > 0 else math.inf,
        abs_max=float(ordered[-1]),
        distinct_fraction=(1 + int((ordered[1:] != ordered[:-1]).sum())) / n,
    )


def unit_rows(t: torch.Tensor, param: Param) -> torch.Tensor:
    """2-D view with one row per output unit (transposed for (in, out) storage)."""
    rows = t.movedim(param.units_dim, 0) if param.units_dim else t
    return rows.reshape(rows.shape[0], -1)


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
_HASH_COLUMNS = 64
_LSH_COLUMNS = 128
_WINDOW = 2  # neighbours compared after sorting by key; members of a bucket chain through pairs


def _key_pairs(keys: torch.Tensor, window: int) -> torch.Tensor:
    """(k, 2) row pairs that share a key, from neighbours in key order (vectorised)."""
    order = torch.argsort(keys)
    sk = keys[order]
    out = []
    for off in range(1, min(window, keys.numel() - 1) + 1):
        same = sk[off:] == sk[:-off]
        if same.any():
            out.append(torch.stack([order[:-off][same], order[off:][same]], dim=1))
    return torch.cat(out) if out else torch.empty(0, 2, dtype=torch.long)


def _bit_hash(bits: torch.Tensor, coeffs: torch.Tensor) -> torch.Tensor:
    """A 64-bit key per row of int32 bit patterns (integer arithmetic: exact, order-free)."""
    keys = torch.empty(bits.shape[0], dtype=torch.int64)
    for start in range(0, bits.shape[0], _CHUNK):
        keys[start:start + _CHUNK] = (bits[start:start + _CHUNK].to(torch.int64) * coeffs).sum(dim=1)
    return keys


def _exact_pairs(rows: torch.Tensor, gen: torch.Generator) -> list[tuple[int, int]]:
    """Pairs of bitwise-identical rows: a key from a window of 64 columns finds candidates, a key
    over all columns orders them, and adjacent candidates are compared exactly."""
    n, d = rows.shape
    bits = rows.view(torch.int32)
    coeffs = torch.randint(1, 2**62, (d,), generator=gen, dtype=torch.int64) | 1
    start = int(torch.randint(0, max(1, d - _HASH_COLUMNS + 1), (1,), generator=gen))
    cols = slice(start, start + _HASH_COLUMNS)  # a window: a strided view, no gather
    coarse = _key_pairs(_bit_hash(bits[:, cols], coeffs[cols]), 1)
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
    checked exactly on full rows. The hash reads a random window of at most ``_LSH_COLUMNS``
    columns (a near-copy is a near-copy on any large subset of its coordinates), so it costs one
    (rows x 128) @ (128 x 144) product whatever the width."""
    n, d = rows.shape
    tables, bits = 6, 24
    mean = rows.mean(dim=0)
    # A random window of columns: a strided view, so no gather is needed.
    start = int(torch.randint(0, d - _LSH_COLUMNS + 1, (1,), generator=gen)) if d > _LSH_COLUMNS else 0
    cols = slice(start, start + _LSH_COLUMNS)
    planes = torch.randn(min(d, _LSH_COLUMNS), tables * bits, generator=gen, dtype=rows.dtype)
    offset = mean[cols] @ planes
    weights = (2 ** torch.arange(bits)).to(rows.dtype)  # < 2^24: exact in fp32
    keys = torch.empty(n, tables, dtype=torch.int64)
    for s in range(0, n, _CHUNK):
        signs = (rows[s:s + _CHUNK, cols] @ planes > offset).to(rows.dtype).view(-1, tables, bits)
        keys[s:s + _CHUNK] = (signs @ weights).to(torch.int64)
    keys = keys.T.contiguous()
    # One sort over all tables: table t's keys are shifted into their own range.
    keys += (torch.arange(tables, dtype=torch.int64) << bits)[:, None]
    cand = _key_pairs(keys.reshape(-1), _WINDOW) % n
    if cand.numel() == 0:
        return {}
    lo, hi = cand.min(dim=1).values, cand.max(dim=1).values
    code = torch.unique(lo * n + hi)
    cand = torch.stack([code // n, code % n], dim=1)
    found = {}
    for s in range(0, cand.shape[0], _CHUNK):
        a, b = cand[s:s + _CHUNK, 0], cand[s:s + _CHUNK, 1]
        ra, rb = rows[a] - mean, rows[b] - mean
        cos = (ra * rb).sum(dim=1) / (ra.norm(dim=1) * rb.norm(dim=1)).clamp_min(1e-30)
        hit = cos >= opts.near_duplicate_cosine
        found.update({(int(i), int(j)): float(c) for i, j, c in zip(a[hit], b[hit], cos[hit])})
    return found


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
    random rows (or columns) decides: G = g^2 I to fp32 precision for an orthogonal init, while
    a Gaussian matrix has off-diagonal entries of relative size ~1/sqrt(cols).
    """
    r, c = rows.shape
    if r < 2 or c < 2:
        return None
    gen = torch.Generator().manual_seed(seed)
    lines = rows if r <= c else rows.T
    pick = torch.randperm(lines.shape[0], generator=gen)[:_ORTHO_LINES]
    sub = lines[pick].double()
    gram = sub @ sub.T
    scale = float(gram.diagonal().mean())
    if scale <= 0:
        return None
    if float((gram - scale * torch.eye(len(pick), dtype=gram.dtype)).abs().max()) > 1e-3 * scale:
        return None
    return math.sqrt(scale)


def spectral_radius(block: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(block.double()).abs().max())


def analyze(t: torch.Tensor, param: Param, opts: AnalysisOptions = AnalysisOptions()) -> TensorAnalysis:
    """All value-level facts the rules need about one tensor.

    A CPU tensor is analysed here; a DTensor shard, or a tensor on a GPU, where it is
    (``initaudit.held_analysis``: collectives of small vectors, never the whole tensor gathered
    or copied to the CPU)."""
    from initaudit.distributed import held_part

    t = t.detach()
    held = held_part(t)
    if held is not None and held.group is None and held.device.type == "cpu":
        t, held = held.local, None  # a DTensor gathered (placements read only whole): as any other
    if held is not None:
        from initaudit.held_analysis import analyze_held

        return analyze_held(held, param, opts)
    if t.is_quantized:
        t = t.dequantize()
    flat = t.reshape(-1)
    result = TensorAnalysis(stats=tensor_stats(flat))  # in the stored dtype, chunk by chunk
    if not param.is_weight or flat.numel() == 0:
        return result
    result.shape = shape_stats(flat)
    if t.dim() < 2 or result.stats.nonfinite or result.stats.std == 0:
        return result
    w = as_fp32(t)  # the duplicate search compares fp32 bit patterns
    if not w.is_contiguous():
        w = w.contiguous()
    rows = unit_rows(w, param)
    blocks = rows.chunk(len(param.gates), dim=0) if param.gates else (rows,)
    if param.gates:
        result.gate_std = [float(b.std()) for b in blocks]
    if param.kind is OpKind.RECURRENT_HIDDEN:
        result.spectral_radius = [spectral_radius(b) for b in blocks
                                  if b.shape[0] == b.shape[1] <= opts.spectral_max_dim]
    result.duplicates = _merge_blocks([duplicate_rows(b, opts) for b in blocks], [b.shape[0] for b in blocks])
    if param.kind is not OpKind.EMBEDDING:  # token tables are not drawn orthogonal
        result.orthogonal_gain = _orthogonal(w, param, opts.seed)
    return result


def _orthogonal(w: torch.Tensor, param: Param, seed: int) -> float | None:
    """Orthogonal gain on the flattening torch.nn.init.orthogonal_ uses, (shape[0], -1) (for
    ConvTranspose and (in, out) layouts too), of the whole tensor or of every gate block."""
    flat = w.reshape(w.shape[0], -1)
    whole = orthogonal_gain(flat, seed)
    if whole is not None or not param.gates:
        return whole
    gains = [orthogonal_gain(b, seed) for b in flat.chunk(len(param.gates), dim=0)]
    return gains[0] if all(g is not None for g in gains) else None


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
