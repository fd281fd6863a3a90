"""The part of a tensor one process holds, and the few collective reads the analysis needs.

A ``Held`` is the box ``global[offset : offset + local.shape]`` of a tensor whose other boxes
live on other ranks (a DTensor's local shard) or nowhere else (a tensor on a GPU, ``group``
None). The analysis never assembles the tensor: it asks for

- sums, minima and maxima of small vectors (``reduce``): moments, row hashes, column sums;
- the values at a few global positions (``take``): the shape sample, the candidate rows of the
  duplicate search, the lines of the orthogonality check. Every position is held by exactly one
  owning rank and the others add zero, so the summed buffer holds the stored values bit for bit.

Replicated mesh dimensions are counted once: only the rank at coordinate 0 of each one owns its
box. Every rank makes the same calls in the same order, so the collectives line up.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from initaudit.moments import Moments, moments

_TAKE_CHUNK = 1 << 16


@dataclass
class Held:
    local: torch.Tensor  # this process's box, in the stored dtype
    shape: tuple[int, ...]  # the whole tensor's shape
    offset: tuple[int, ...]  # where the box starts in it
    owner: bool = True  # False on all replicas of a box but one
    group: Any = None  # torch.distributed process group; None: nothing to reduce

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def device(self) -> torch.device:
        return self.local.device

    def reduce(self, t: torch.Tensor, op: str = "sum") -> torch.Tensor:
        """``t`` summed (or min/max) over the ranks, in place; ``t`` as is outside a job."""
        if self.group is not None:
            dist = torch.distributed
            ops = {"sum": dist.ReduceOp.SUM, "min": dist.ReduceOp.MIN, "max": dist.ReduceOp.MAX}
            dist.all_reduce(t, op=ops[op], group=self.group)
        return t

    def moments(self, center: float = 0.0, rows: tuple[int, int] | None = None,
                units_dim: int = 0) -> Moments:
        """Moments of the whole tensor (or of unit rows ``rows`` = [a, b)), reduced over ranks."""
        part = self.local
        if rows is not None:
            a, b = rows
            first = self.offset[units_dim]
            size = part.shape[units_dim]
            lo, hi = min(max(a - first, 0), size), max(min(b - first, size), 0)
            part = part.narrow(units_dim, lo, max(hi - lo, 0))
        m = moments(part, center) if self.owner else Moments(center=center)
        if self.group is None:
            return m
        sums = self.reduce(torch.tensor(m.sums(), dtype=torch.float64, device=self.device))
        lo = self.reduce(torch.tensor([m.lo], dtype=torch.float64, device=self.device), "min")
        hi = self.reduce(torch.tensor([m.hi], dtype=torch.float64, device=self.device), "max")
        return m.with_sums(sums.tolist(), float(lo), float(hi))

    def take(self, index: torch.Tensor) -> torch.Tensor:
        """fp32 values at global flat positions ``index`` (any shape), on this device."""
        flat_index = index.reshape(-1)
        out = torch.zeros(flat_index.numel(), dtype=torch.float32, device=self.device)
        if self.owner and self.local.numel():
            local = self.local.reshape(-1)
            for s in range(0, flat_index.numel(), _TAKE_CHUNK):  # bounds the index temporaries
                part = flat_index[s:s + _TAKE_CHUNK].to(self.device)
                inside = torch.ones_like(part, dtype=torch.bool)
                local_flat = torch.zeros_like(part)
                for c, off, size in zip(torch.unravel_index(part, self.shape), self.offset, self.local.shape):
                    inside &= (c >= off) & (c < off + size)
                    local_flat = local_flat * size + (c - off).clamp(0, max(size - 1, 0))
                values = local[local_flat[inside]]
                out[s:s + _TAKE_CHUNK][inside] = values.dequantize() if values.is_quantized else values.float()
        return self.reduce(out).reshape(index.shape)


def unit_row_index(shape: tuple[int, ...], units_dim: int, rows: torch.Tensor) -> torch.Tensor:
    """(len(rows), cols) global flat positions of unit rows ``rows`` (the layout of
    ``analysis.unit_rows``: the units dimension first, the rest flattened in order)."""
    strides = [math.prod(shape[d + 1:]) for d in range(len(shape))]
    col = torch.zeros(1, dtype=torch.long)
    for d in range(len(shape)):
        if d != units_dim:
            col = (col[:, None] + torch.arange(shape[d]) * strides[d]).reshape(-1)
    return rows.to(torch.long)[:, None] * strides[units_dim] + col[None, :]


def local_unit_rows(held: Held, units_dim: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """This box as unit rows: (fp32 rows, their global row numbers, their global column numbers)."""
    local = held.local.dequantize() if held.local.is_quantized else held.local
    moved = local.movedim(units_dim, 0)
    rows = moved.reshape(moved.shape[0], math.prod(moved.shape[1:])).float()
    cols = torch.zeros(1, dtype=torch.long)
    rest = [d for d in range(len(held.shape)) if d != units_dim]
    for d in rest:
        cols = (cols[:, None] * held.shape[d] + torch.arange(local.shape[d]) + held.offset[d]).reshape(-1)
    row_ids = torch.arange(local.shape[units_dim]) + held.offset[units_dim]
    return rows, row_ids.to(held.device), cols.to(held.device)
