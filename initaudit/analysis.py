"""Per-tensor facts, computed once per tensor in a single sweep.

Everything the static rules need from a tensor's values is gathered here while the tensor is in
memory, so a checkpoint is read exactly once and rules only look at small summaries. Costs were
measured (DESIGN.md section 8): the whole-tensor statistics are moments read chunk by chunk in
the stored dtype (``initaudit.moments``), a fixed-size strided sample serves the distribution-
shape checks, and the duplicate-row search reads bf16/fp16 in place (bit patterns, fp32 windows
and candidate rows: no fp32 copy of a matrix), by random projections, never an all-pairs Gram
matrix. A DTensor shard or a tensor on a GPU is analysed where it is
(``initaudit.held_analysis``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from initaudit.graph import OpKind, Param
from initaudit.moments import TensorStats, as_fp32, tensor_stats
from initaudit.rowsearch import (NEAR_DUPLICATE_MIN_DIM, DuplicateRows, duplicate_rows,  # noqa: F401
                                 identity_gain, merge_blocks, orthogonal_gain,
                                 param_orthogonal_gain)

__all__ = ["TensorStats", "as_fp32", "tensor_stats", "analyze"]  # all but analyze live in moments

SAMPLE_SIZE = 8192
_IN_PLACE = (torch.float32, torch.bfloat16, torch.float16)


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
class TensorAnalysis:
    stats: TensorStats
    shape: ShapeStats | None = None
    duplicates: DuplicateRows | None = None
    orthogonal_gain: float | None = None  # set when rows (or columns) are orthonormal x gain
    identity_gain: float | None = None  # set when the weight is c x a partial identity/permutation
    gate_std: list[float] | None = None  # per-gate std for stacked recurrent weights
    spectral_radius: list[float] | None = None  # per gate block of a recurrent hidden weight
    # The stage evidence's spectrum statistic (initaudit.stage.edge_ratio), when the options asked
    # for this tensor: measured where the tensor is read (a pool worker), so the caller never maps
    # it again for a 256 x 512 sample. None when not asked for, or not measurable (held tensors).
    edge_ratio: float | None = None
    edge_measured: bool = False


@dataclass(frozen=True)
class AnalysisOptions:
    near_duplicate_cosine: float = 0.995
    max_bucket: int = 64
    spectral_max_dim: int = 2048
    seed: int = 0
    duplicates: bool = True  # search duplicate rows (off when no enabled rule reads them)
    spectra: frozenset[str] = frozenset()  # tensors whose edge ratio the stage evidence reads


def sample_positions(numel: int) -> range:
    """The flat positions of the shape sample: every ``numel // SAMPLE_SIZE``-th element."""
    step = max(1, numel // SAMPLE_SIZE)
    return range(0, min(numel, step * SAMPLE_SIZE), step)


def shape_stats(flat: torch.Tensor) -> ShapeStats | None:
    """Shape figures of a 1-D tensor from its strided sample (read in the stored dtype)."""
    pos = sample_positions(flat.numel())
    return sample_shape(as_fp32(flat[pos.start:pos.stop:pos.step]))


def sample_shape(sample: torch.Tensor) -> ShapeStats | None:
    """Shape figures of the sample's non-zero finite values (any device; figures on the CPU, in
    numpy: on 8192 values its sort and reductions cost 1/8 of torch's per-op overhead)."""
    values = sample.detach().float().cpu().numpy()
    values = np.abs(values[np.isfinite(values) & (values != 0)])
    n = values.size
    if n < 8:
        return None
    ordered = np.sort(values)  # one sort serves the quantiles and the distinct count
    lo, hi = float(ordered[int(0.001 * (n - 1))]), float(ordered[int(0.999 * (n - 1))])
    sq = ordered.astype(np.float64) ** 2
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


def spectral_radius(block: torch.Tensor) -> float:
    return float(torch.linalg.eigvals(block.double()).abs().max())


def _edge_ratio(t: torch.Tensor, param: Param, opts: AnalysisOptions) -> tuple[float | None] | None:
    """(rho,) of a tensor the stage evidence samples (``opts.spectra``), else None; on one torch
    thread, as ``initaudit.stage.spectra`` runs it (the same value to the last bit)."""
    if param.name not in opts.spectra:
        return None
    from initaudit.pool import one_thread
    from initaudit.stage import edge_ratio

    with one_thread():
        return (edge_ratio(t),)


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
    edge = _edge_ratio(t, param, opts)  # on the tensor as the stage evidence would load it
    if t.is_quantized:
        t = t.dequantize()
    flat = t.reshape(-1)
    result = TensorAnalysis(stats=tensor_stats(flat))  # in the stored dtype, chunk by chunk
    if edge is not None:
        result.edge_ratio, result.edge_measured = edge[0], True
    if not param.is_weight or flat.numel() == 0:
        return result
    result.shape = shape_stats(flat)
    if t.dim() < 2 or result.stats.nonfinite or result.stats.std == 0:
        return result
    # The row searches read bf16/fp16 in place (bit patterns for the exact search, fp32 windows
    # and candidate rows for the rest): no fp32 copy of the whole matrix.
    w = t if t.dtype in _IN_PLACE else as_fp32(t)
    if not w.is_contiguous():
        w = w.contiguous()
    rows = unit_rows(w, param)
    blocks = rows.chunk(len(param.gates), dim=0) if param.gates else (rows,)
    if param.gates:
        result.gate_std = [float(as_fp32(b).std()) for b in blocks]
    if param.kind is OpKind.RECURRENT_HIDDEN:
        result.spectral_radius = [spectral_radius(b) for b in blocks
                                  if b.shape[0] == b.shape[1] <= opts.spectral_max_dim]
    if opts.duplicates:
        result.duplicates = merge_blocks([duplicate_rows(b, opts) for b in blocks],
                                         [b.shape[0] for b in blocks])
    if param.kind is not OpKind.EMBEDDING:  # token tables are not drawn orthogonal
        result.orthogonal_gain = param_orthogonal_gain(w, param, opts.seed)
        result.identity_gain = identity_gain(rows, result.stats.zero_fraction)
    return result
