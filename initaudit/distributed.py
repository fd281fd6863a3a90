"""Audits inside a torch.distributed job (FSDP2 ``fully_shard``, DTensor parameters).

``initaudit.audit(model)`` is called on every rank, as a training script calls its forward pass.
A DTensor parameter holds only this rank's shard; its statistics must be those of the whole
tensor, so each one is gathered (``DTensor.full_tensor()``, a collective every rank joins) when
the analysis reads it, one tensor at a time: memory stays bounded by the largest tensor. Every
rank runs the same audit over the same parameter order, so the collectives line up and every
rank gets the same report; rank 0 writes it.
"""

from __future__ import annotations

from typing import Any

import torch


def _dtensor_type() -> type | None:
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed support
        return None
    return DTensor


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
