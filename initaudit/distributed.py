"""Audits inside a torch.distributed job (FSDP2 ``fully_shard``, DTensor parameters).

``initaudit.audit(model)`` is called on every rank, as a training script calls its forward pass.
A DTensor parameter holds only this rank's shard; its statistics must be those of the whole
tensor. The analysis reads each shard where it is (``held_part``: the local box and where it
sits in the whole) and reduces small vectors across ranks (``initaudit.held``): no rank holds a
whole tensor. Placements it cannot read box by box (``Partial``, strided shards of FSDP2 + TP,
a mesh that is not the whole job) are gathered (``DTensor.full_tensor()``), one tensor at a time.
Every rank runs the same audit over the same parameter order, so the collectives line up and
every rank gets the same report; rank 0 writes it.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import torch

from initaudit.held import Held, local_unit_rows, unit_row_index


def _dtensor_type() -> type | None:
    """DTensor, or None while torch.distributed.tensor is not imported: no DTensor can exist
    before its module is (importing it costs more than a 1B checkpoint's whole static pass)."""
    module = sys.modules.get("torch.distributed.tensor")
    return getattr(module, "DTensor", None)


def is_sharded(t: Any) -> bool:
    """Whether ``t`` is a DTensor (a shard of a tensor spread over ranks)."""
    cls = _dtensor_type()
    return cls is not None and isinstance(t, cls)


def full_value(t: torch.Tensor) -> torch.Tensor:
    """The whole tensor: a DTensor gathered from every rank (collective), anything else as is."""
    if is_sharded(t):
        return t.full_tensor()
    return t


def data_ptr(t: torch.Tensor) -> int:
    """Where ``t``'s values live; for a DTensor, its local shard (the wrapper has no storage of
    its own, so two DTensors would otherwise look tied)."""
    return t.to_local().data_ptr() if is_sharded(t) else t.data_ptr()


def rank() -> int:
    """This process's rank (0 outside a distributed job)."""
    dist = torch.distributed
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def held_part(t: torch.Tensor) -> Held | None:
    """What this process holds of ``t`` when the analysis must read it where it is: a DTensor's
    local box (reduced over the job), a tensor on a GPU (read on the device); None for a CPU
    tensor, which the analysis reads directly."""
    if is_sharded(t):
        return _sharded_part(t) or _whole(t.full_tensor())
    if t.device.type not in ("cpu", "meta"):
        return _whole(t)
    return None


def _whole(t: torch.Tensor) -> Held:
    return Held(local=t, shape=tuple(t.shape), offset=(0,) * t.dim())


def _sharded_part(t: Any) -> Held | None:
    """The local box of a DTensor sharded by plain ``Shard``/``Replicate`` placements over a
    mesh of the whole job, or None."""
    from torch.distributed.tensor import Replicate, Shard

    mesh, placements = t.device_mesh, t.placements
    if mesh.size() != world_size() or not all(type(p) in (Shard, Replicate) for p in placements):
        return None
    try:
        from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    except ImportError:  # pragma: no cover - private helper moved
        return None
    _, offset = compute_local_shape_and_global_offset(t.shape, mesh, placements)
    coord = mesh.get_coordinate() or [0] * mesh.ndim
    owner = all(c == 0 for c, p in zip(coord, placements) if type(p) is Replicate)
    return Held(local=t.to_local(), shape=tuple(t.shape), offset=tuple(offset), owner=owner,
                group=torch.distributed.group.WORLD)


def strided_matrix(t: torch.Tensor, max_rows: int, max_cols: int) -> torch.Tensor:
    """``t`` as is, or for a DTensor the strided sample ``stage.edge_ratio`` takes of its
    (shape[0], -1) flattening (<= max_rows x max_cols, read from the shards)."""
    if not is_sharded(t) or t.dim() < 2:
        return t  # edge_ratio reads nothing of a vector
    held = held_part(t)
    r, c = t.shape[0], math.prod(t.shape[1:])
    rows = torch.arange(0, r, max(1, r // max_rows))[:max_rows]
    cols = torch.arange(0, c, max(1, c // max_cols))[:max_cols]
    return held.take(rows[:, None] * c + cols[None, :]).cpu()


def l2_norm(t: torch.Tensor) -> torch.Tensor:
    """||t||_2 as a 0-d fp32 tensor; for a DTensor the root of the shards' summed squares (a
    NaN or inf anywhere makes it non-finite, as ``torch.linalg.vector_norm`` does)."""
    held = held_part(t) if is_sharded(t) else None
    if held is None:
        return torch.linalg.vector_norm(t.float())
    local = held.local.float() if held.owner else held.local.new_zeros(0, dtype=torch.float32)
    return held.reduce(torch.linalg.vector_norm(local).pow(2).reshape(1)).sqrt()[0]


def unit_row_norms(t: torch.Tensor, units_dim: int) -> torch.Tensor:
    """The L2 norm of every unit row (along ``units_dim``) of a DTensor of two or more
    dimensions, from per-shard partial sums of squares."""
    held = held_part(t)
    rows, row_ids, _ = local_unit_rows(held, units_dim)
    sumsq = torch.zeros(held.shape[units_dim], dtype=torch.float32, device=held.device)
    if held.owner:
        sumsq.index_add_(0, row_ids, rows.pow(2).sum(dim=1))
    return held.reduce(sumsq).sqrt()


def nonfinite_count(t: torch.Tensor) -> int:
    """How many elements of ``t`` are NaN or infinite (a DTensor: counted on its shards)."""
    held = held_part(t) if is_sharded(t) else None
    if held is None:
        return int((~torch.isfinite(t)).sum())
    m = held.moments()
    return m.count - m.finite


def unit_rows_at(t: torch.Tensor, units_dim: int, rows: list[int]) -> torch.Tensor:
    """fp32 unit rows ``rows`` of a DTensor (read from the shards that hold them)."""
    held = held_part(t)
    return held.take(unit_row_index(held.shape, units_dim, torch.tensor(rows)))
