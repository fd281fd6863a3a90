"""Whole-tensor statistics as mergeable sufficient statistics, read once in the stored dtype.

A tensor is read in chunks of ``CHUNK`` elements, three reductions per chunk while it is in
cache: the sum and sum of squares in fp32 (bf16/fp16 chunks are widened one at a time, never the
whole tensor; an fp32 chunk is a view) and the extrema of that fp32 chunk, read by numpy on the
CPU (exact: a widened bf16 value is the stored one; torch.aminmax cost 3-5x as much). The zero count is read from the chunk's bit patterns (an integer view):
a +0 has all bits clear, and a -0 (``w * 0`` of a negative w) has the smallest integer value,
so the count of non-zero bit patterns is exact unless the integer minimum says a -0 is present,
when the chunk is counted again by value. A NaN or inf makes the chunk's sums non-finite, so
the finiteness check runs only on such a chunk (and on an fp32 overflow), exactly, in float64.
The per-chunk figures are accumulated in float64. The result,
``Moments``, merges by addition (counts, sums) and by min/max, so the moments of the shards of a
tensor (DTensor local shards on several ranks, or chunks on one) combine into the moments of the
whole, and ``finish`` turns them into ``TensorStats``:

    mean = S1 / n,  var = S2 / n - mean^2        (n finite elements, S_k = sum x^k)

When mean^2 > 1e4 var the subtraction has lost most digits (an offset tensor such as a
LayerNorm weight of ones + 1e-3 noise), so a second pass sums the moments about that mean
(``center``), where nothing cancels: var = S2'/n - (S1'/n)^2 with S_k' = sum (x - mean)^k.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

# Elements per step: a 1 MB fp32 chunk stays in cache for its reductions, and an fp32 sum of
# squares over 2^18 values stays within 1e-6 of the float64 one (2^20 measured 3.7e-6 off).
CHUNK = 1 << 18
# Stored dtypes read in place: the integer view whose bit patterns the zero count reads.
_BITS = {torch.float32: torch.int32, torch.bfloat16: torch.int16, torch.float16: torch.int16}
# -0 on that view (the sign bit alone): the smallest integer (np.iinfo per chunk cost 12 us).
_NEGATIVE_ZERO = {torch.float32: -2**31, torch.bfloat16: -2**15, torch.float16: -2**15}


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
    # Var over rows (dimension 0) of each row's sum, over its i.i.d. value: row length * std^2.
    # 1 for i.i.d. weights; 0 where every row sums to zero (weight standardisation), so a signal
    # shared by a row's inputs (its mean, a common mode) cancels. Measured only for a weight
    # applied through a per-row map (initaudit.runtime_scale.applied_tensor_stats).
    row_sums: float = 1.0

    @property
    def all_zero(self) -> bool:
        return self.nonfinite == 0 and self.min == 0 == self.max

    def to_json(self) -> dict:
        return {"mean": self.mean, "std": self.std, "min": self.min, "max": self.max,
                "nonfinite": self.nonfinite, "zero_fraction": self.zero_fraction}


@dataclass
class Moments:
    """Sufficient statistics of a set of values: mergeable across chunks, shards and ranks."""

    count: int = 0  # all elements, finite or not
    finite: int = 0
    total: float = 0.0  # sum of (x - center) over the finite elements
    sumsq: float = 0.0  # sum of (x - center)^2
    lo: float = math.inf  # extrema of the finite elements
    hi: float = -math.inf
    zeros: int = 0
    center: float = 0.0

    def merge(self, other: Moments) -> Moments:
        assert self.center == other.center, "moments about different centres do not add"
        return Moments(self.count + other.count, self.finite + other.finite,
                       self.total + other.total, self.sumsq + other.sumsq,
                       min(self.lo, other.lo), max(self.hi, other.hi),
                       self.zeros + other.zeros, self.center)

    # all_reduce needs tensors: one summed vector, one min and one max
    def sums(self) -> list[float]:
        return [float(self.count), float(self.finite), self.total, self.sumsq, float(self.zeros)]

    def with_sums(self, sums: list[float], lo: float, hi: float) -> Moments:
        count, finite, total, sumsq, zeros = sums
        return replace(self, count=int(count), finite=int(finite), total=total, sumsq=sumsq,
                       zeros=int(zeros), lo=lo, hi=hi)


def as_fp32(t: torch.Tensor) -> torch.Tensor:
    """Dequantised fp32 view of ``t`` (fp16/bf16/int8/quantised weights are judged in fp32)."""
    if t.is_quantized:
        t = t.dequantize()
    return t if t.dtype == torch.float32 else t.to(torch.float32)


def moments(t: torch.Tensor, center: float = 0.0) -> Moments:
    """The moments of ``t``'s values (any shape, any float dtype, on any device), one chunk at a
    time; ``center`` != 0 is the exact second pass (float64 about the mean)."""
    flat = t.detach().reshape(-1)
    out = Moments(count=flat.numel(), center=center)
    if center:
        parts = [_centred(as_fp32(flat[s:s + CHUNK]), center) for s in range(0, flat.numel(), CHUNK)]
    else:
        # One widening buffer for all chunks: a fresh 1 MB fp32 chunk per step, freed between the
        # small per-chunk results kept, fragments the heap (a 125 MB bf16 tensor grew RSS 250 MB).
        buf = None if flat.dtype == torch.float32 else torch.empty(
            min(CHUNK, flat.numel()), dtype=torch.float32, device=flat.device)
        if flat.device.type == "cpu" and flat.dtype in _BITS:
            parts = _cpu_figures(flat, buf)
        else:
            parts = [_figures(flat[start:start + CHUNK], buf) for start in range(0, flat.numel(), CHUNK)]
        for i in _non_finite(parts):  # NaN/inf, or an fp32 overflow: that chunk again, exactly
            start = i * CHUNK
            parts[i] = _centred(as_fp32(flat[start:start + CHUNK]), 0.0)
    for finite, total, sumsq, lo, hi, zeros in parts:
        out.finite += int(finite)
        if int(finite):
            out.total += float(total)
            out.sumsq += float(sumsq)
            out.lo, out.hi = min(out.lo, float(lo)), max(out.hi, float(hi))
            out.zeros += int(zeros)
    return out


def _cpu_figures(flat: torch.Tensor, buf: torch.Tensor | None) -> list[list]:
    """``_figures`` of every chunk of a CPU fp32/bf16/fp16 tensor (the same values), with the
    per-chunk Python work cut down (numpy views made once, sliced per chunk: 32 -> ~15 us of
    calls per chunk) and fewer passes over each chunk:

    - fp32: zeros = count(x == 0), one compare (a -0 compares equal) instead of the integer
      view's minimum and non-zero count (0.21 against 0.51 ns per element, in cache);
    - bf16/fp16: min and max from three integer reductions of the 16-bit patterns instead of
      two float reductions of the widened chunk. The formats are sign-magnitude: read as int16
      the non-negative values are ordered as their patterns, so max(int16) is the largest
      value when one is >= +0; read as uint16 the negative ones are ordered by magnitude, so
      max(uint16) is the most negative when one is <= -0; else min(int16) is the other end
      (all negative: the one nearest 0; all non-negative: the smallest). A NaN or inf pattern
      can win these reductions, but it makes the chunk's sums non-finite, and that chunk is
      read again exactly (``_centred``). The int16 minimum also serves the -0 check of the
      zero count. An extremum of -0 is reported as 0 (they compare equal)."""
    n, parts = flat.numel(), []
    if flat.dtype == torch.float32:
        values = flat.numpy()
        for start in range(0, n, CHUNK):
            wide, v = flat[start:start + CHUNK], values[start:start + CHUNK]
            parts.append([v.size, float(wide.sum()), float(torch.dot(wide, wide)),
                          v.min(), v.max(), int(np.count_nonzero(v == 0))])
        return parts
    table, bits = _patterns(flat.dtype), flat.view(torch.int16).numpy()
    for start in range(0, n, CHUNK):
        chunk, b = flat[start:start + CHUNK], bits[start:start + CHUNK]
        wide = buf[:b.size].copy_(chunk)
        total, sumsq = float(wide.sum()), float(torch.dot(wide, wide))
        low, high, neg = int(b.min()), int(b.max()), int(b.view(np.uint16).max())
        hi = table[high if high >= 0 else low & 0xFFFF]
        lo = table[neg if neg >= 0x8000 else low & 0xFFFF]
        if low == -2**15:  # a -0 (sign bit alone): count by value
            zeros = b.size - int(torch.count_nonzero(chunk))
        else:
            zeros = b.size - int(np.count_nonzero(b))
        parts.append([b.size, total, sumsq, lo + 0.0, hi + 0.0, zeros])
    return parts


_PATTERNS: dict[torch.dtype, np.ndarray] = {}


def _patterns(dtype: torch.dtype) -> np.ndarray:
    """The fp32 value of each of the 65536 bf16/fp16 bit patterns (a 256 KB table, built once):
    a bf16 is the top half of an fp32, an fp16 is widened by numpy (both exact)."""
    if dtype not in _PATTERNS:
        codes = np.arange(1 << 16, dtype=np.uint32)
        _PATTERNS[dtype] = ((codes << 16).view(np.float32) if dtype == torch.bfloat16
                            else codes.astype(np.uint16).view(np.float16).astype(np.float32))
    return _PATTERNS[dtype]


def _figures(chunk: torch.Tensor, buf: torch.Tensor | None) -> list:
    """[n, sum, sum of squares, min, max, zeros] of a chunk (exact when its sums are finite),
    widened to fp32 into ``buf`` unless it is fp32."""
    if chunk.is_quantized:
        chunk = chunk.dequantize()
    wide = chunk if chunk.dtype == torch.float32 else buf[:chunk.numel()].copy_(chunk)
    if chunk.dtype not in _BITS:
        chunk = wide
    lo, hi = _extrema(wide)
    total, sumsq = wide.sum(), torch.dot(wide, wide)
    if wide.device.type == "cpu":  # read now: the finiteness check is then a float test, no stack
        total, sumsq = float(total), float(sumsq)
    return [chunk.numel(), total, sumsq, lo, hi, _zeros(chunk)]


def _non_finite(parts: list) -> list[int]:
    """The chunks whose sums are not finite: float tests on the CPU, where ``_figures`` read
    them already (stacking two 0-d tensors per chunk cost more than the test); elsewhere one
    stacked check, one sync."""
    if not parts or isinstance(parts[0][1], float):
        return [i for i, p in enumerate(parts) if not (math.isfinite(p[1]) and math.isfinite(p[2]))]
    sums = torch.stack([torch.stack([p[1], p[2]]) for p in parts])
    return torch.nonzero(~torch.isfinite(sums).all(dim=1)).flatten().tolist()


def _extrema(wide: torch.Tensor) -> tuple:
    """(min, max) of an fp32 chunk, exact (a widened bf16/fp16 value is the stored one). On the
    CPU numpy's min and max read the cache-resident chunk in 0.44x one bf16 ``sum`` of it where
    ``torch.aminmax`` took 1.4x (2.4x on the bf16 chunk itself): one thread, CPU time."""
    if wide.device.type != "cpu":
        return torch.aminmax(wide)
    values = wide.numpy()
    return values.min(), values.max()


def _zeros(chunk: torch.Tensor) -> int | torch.Tensor:
    """Elements equal to zero (+0 or -0): non-zero bit patterns counted on the integer view (on
    the CPU, numpy's count is 2-4x torch.count_nonzero's), by value where a -0 is present."""
    if chunk.device.type != "cpu":
        return chunk.numel() - torch.count_nonzero(chunk)
    bits = chunk.view(_BITS[chunk.dtype]).numpy()
    if bits.min() == _NEGATIVE_ZERO[chunk.dtype]:  # a -0 (sign bit alone): count by value
        return chunk.numel() - int(torch.count_nonzero(chunk))
    return chunk.numel() - int(np.count_nonzero(bits))


def _centred(chunk: torch.Tensor, center: float) -> tuple:
    """A chunk's figures over its finite elements, in float64 (the slow, exact path)."""
    fin = chunk[torch.isfinite(chunk)]
    if fin.numel() == 0:
        return (0, 0.0, 0.0, math.inf, -math.inf, 0)
    d = fin.double() - center
    lo, hi = _extrema(fin)
    return (fin.numel(), d.sum(), torch.dot(d, d), lo, hi, fin.numel() - torch.count_nonzero(fin))


def finish(m: Moments, second_pass: Callable[[float], Moments]) -> TensorStats:
    """``TensorStats`` from the merged moments; ``second_pass(mean)`` returns the (merged)
    moments about the mean, asked for only when the one-pass variance cancelled."""
    if m.count == 0:
        return TensorStats(0, 0.0, 0.0, 0.0, 0.0, 0, 0.0)
    nonfinite = m.count - m.finite
    if m.finite == 0:
        return TensorStats(m.count, math.nan, math.nan, math.nan, math.nan, nonfinite, 0.0)
    mean = m.total / m.finite
    var = max(m.sumsq / m.finite - mean * mean, 0.0)
    if m.lo == m.hi:
        var = 0.0
    elif mean * mean > 1e4 * var:  # cancellation: recompute about the mean
        c = second_pass(mean)
        var = max(c.sumsq / c.finite - (c.total / c.finite) ** 2, 0.0)
    return TensorStats(m.count, mean, math.sqrt(var), m.lo, m.hi, nonfinite, m.zeros / m.count)


def tensor_stats(t: torch.Tensor) -> TensorStats:
    """mean, std, min, max, non-finite count, zero fraction of ``t`` (one process, one device)."""
    return finish(moments(t), lambda mean: moments(t, center=mean))
