"""Tensors of safetensors files, read one at a time with memory bounded by a few tensors.

A safetensors handle maps its whole file, and ``get_tensor`` returns a view into that mapping:
every page a tensor touched stays resident (and counts in the process's RSS) until the handle is
closed and the tensors read through it are freed. Keeping every shard open to the end grows RSS
to the whole checkpoint (13.2 GB for a 7B bf16 model). :class:`ShardReader` holds one handle at a
time and closes it before a read when the tensor lies in another file or when reading it would
take the bytes read through the handle past ``budget`` (its size is in the header), so the pages
a handle holds stay within the budget, or within one tensor when that tensor alone is larger,
plus the tensors the caller still holds. Closing only once the budget was already passed let a
large tensor land on top of a nearly full budget (a 131 MB embedding table over 60 MB of earlier
tensors). A handle is reopened (its JSON header parsed again, well under a millisecond) at most
once per budget or per large tensor.

The reader is described by plain data (tensor name -> file), so a worker process builds its own
and opens the files itself (initaudit.pool): tensors never cross a process boundary, and nothing
is unpickled but what initaudit itself sent.

:class:`TensorSource` is that description for every format the pool reads: a small picklable
value naming the tensors it can reopen, whose ``open()`` builds a :class:`TensorReader` in the
process that calls it (:class:`SafetensorsSource` here; ``ZipRecordSource`` for zip ``.pt``
checkpoints in :mod:`initaudit.loaders.zip_records`, ``DcpSource`` for distributed checkpoints in
:mod:`initaudit.loaders.directory`).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch

#: Bytes read through one handle before it is closed and reopened (a few large tensors).
HANDLE_BUDGET = 64 << 20
#: Bytes per element of safetensors' dtype names (an unknown name counts as 8: closes sooner).
_ITEMSIZE = {"F64": 8, "I64": 8, "U64": 8, "F32": 4, "I32": 4, "U32": 4, "F16": 2, "BF16": 2,
             "I16": 2, "U16": 2, "F8_E4M3": 1, "F8_E5M2": 1, "I8": 1, "U8": 1, "BOOL": 1}


class ShardReader:
    """``reader(name)`` -> the tensor, from the file ``files[name]`` (safetensors), stored there
    as ``prefix + name`` (a wrapper's prefix the checkpoint's names are read without)."""

    def __init__(self, files: Mapping[str, str | Path], budget: int = HANDLE_BUDGET, prefix: str = ""):
        self.files = {name: str(f) for name, f in files.items()}
        self.prefix = prefix
        self.budget = budget
        self._file: str | None = None
        self._handle: Any = None
        self._read = 0
        self.opens = 0  # handles opened so far (for tests and benchmarks)

    def __call__(self, name: str) -> torch.Tensor:
        file = self.files[name]
        if self._handle is not None and (file != self._file or self._read + self._size(name) > self.budget):
            self.close()
        if self._handle is None:
            from safetensors import safe_open

            self._handle = safe_open(file, framework="pt")
            self._file, self._read = file, 0
            self.opens += 1
        tensor = self._handle.get_tensor(self.prefix + name)
        self._read += tensor.numel() * tensor.element_size()
        return tensor

    def _size(self, name: str) -> int:
        """Bytes of ``name`` as stored, from the open handle's header (nothing is read)."""
        sl = self._handle.get_slice(self.prefix + name)
        return math.prod(sl.get_shape()) * _ITEMSIZE.get(sl.get_dtype(), 8)

    def close(self) -> None:
        """Unmap the open file (tensors already returned keep their own pages until freed)."""
        if self._handle is not None:
            self._handle.__exit__(None, None, None)
        self._handle, self._file = None, None


class TensorReader(Protocol):
    """``reader(name)`` -> the tensor; ``close()`` releases what the reads held open."""

    def __call__(self, name: str) -> torch.Tensor: ...

    def close(self) -> None: ...


class TensorSource(Protocol):
    """How any process reopens a checkpoint's tensors: picklable plain data (paths, names,
    offsets), never a tensor, a handle or bytes of the file."""

    @property
    def names(self) -> Collection[str]: ...

    def open(self) -> TensorReader: ...


@dataclass(frozen=True)
class SafetensorsSource:
    """Tensors of safetensors files: name -> file (stored as ``prefix + name``)."""

    files: Mapping[str, str]
    prefix: str = ""

    @property
    def names(self) -> Collection[str]:
        return self.files.keys()

    def open(self) -> ShardReader:
        return ShardReader(self.files, prefix=self.prefix)
