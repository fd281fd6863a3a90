"""Tensors of a torch zip checkpoint read straight from their storage records, by byte offset.

A worker process of initaudit.pool reads a large ``.pt`` state_dict without unpickling anything:
the caller, which has already passed the file through the allow-list scan, loads it once more on
the meta device (``torch.load(map_location="meta", weights_only=True)``: the pickle is read, no
storage is), which gives every tensor's dtype, shape, stride and storage offset and, through
torch's ``_checkpoint_offset``, the byte at which its storage record starts in the file. Each of
those offsets is checked against the archive's own directory as :mod:`initaudit.loaders.torch_zip`
reads it: it must be the start of a stored (uncompressed) ``data/`` member exactly as long as the
storage. A worker then reads just those bytes into a fresh tensor and views them with the recorded
layout; the file's identity (inode, size, modification time) is checked first, so a file replaced
after the caller read it gives one clear line, not another file's values.

Checkpoints this cannot describe exactly (the legacy non-zip format, protocol-4 pickles that are
rewritten in memory, big-endian archives, sparse or quantised tensors) keep the serial path.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from initaudit.errors import TargetError, first_line
from initaudit.loaders.torch_zip import ZipAmbiguous, read_member, read_members

_STORED = 0


@dataclass(frozen=True)
class RecordTensor:
    """Where a tensor's values lie: its storage record's bytes and the view onto them."""

    offset: int  # the record's first byte in the file
    nbytes: int  # the storage's size
    dtype: str  # torch dtype name ("float32")
    shape: tuple[int, ...]
    stride: tuple[int, ...]
    storage_offset: int  # in elements


def file_stamp(path: Path | str) -> tuple[int, int, int]:
    """(inode, size, modification time in ns): what tells a file from its replacement."""
    st = os.stat(path)
    return st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class ZipRecordSource:
    """A zip checkpoint as a worker process reopens it (a :class:`TensorSource`)."""

    path: str
    stamp: tuple[int, int, int]
    tensors: Mapping[str, RecordTensor]

    @property
    def names(self) -> Collection[str]:
        return self.tensors.keys()

    def open(self) -> ZipRecordReader:
        return ZipRecordReader(self)


class ZipRecordReader:
    """``reader(name)`` -> the tensor, read from its record into memory of its own."""

    def __init__(self, source: ZipRecordSource) -> None:
        self.source = source
        self._file: io.BufferedReader | None = None

    def __call__(self, name: str) -> torch.Tensor:
        rec = self.source.tensors[name]
        if self._file is None:
            self._file = self._open()
        raw = torch.empty(rec.nbytes, dtype=torch.uint8)
        self._file.seek(rec.offset)
        got = self._file.readinto(memoryview(raw.numpy()))
        if got != rec.nbytes:
            raise TargetError(self.source.path, f"tensor {name!r}: {got} of its {rec.nbytes} bytes "
                                                f"at byte {rec.offset} are present (truncated file)")
        try:
            values = raw.view(getattr(torch, rec.dtype))
            return torch.as_strided(values, rec.shape, rec.stride, rec.storage_offset)
        except (RuntimeError, AttributeError) as exc:
            raise TargetError(self.source.path, f"tensor {name!r}: its layout does not fit its "
                                                f"storage ({first_line(exc)})") from None

    def _open(self) -> io.BufferedReader:
        try:
            changed = file_stamp(self.source.path) != self.source.stamp
            if not changed:
                return open(self.source.path, "rb")
        except OSError as exc:
            raise TargetError(self.source.path, f"cannot reopen the checkpoint: "
                                                f"{exc.strerror or exc}") from None
        raise TargetError(self.source.path, "the file changed while it was being audited "
                                            "(another inode, size or modification time); rerun")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file = None


def locate_records(path: Path, meta: Mapping[str, torch.Tensor], stamp: tuple[int, int, int]
                   ) -> ZipRecordSource | None:
    """The records of ``meta`` (tensors loaded from ``path`` on the meta device, by the names the
    audit uses), each checked against the archive's directory; None when the archive or any
    floating-point tensor cannot be described exactly (the serial path reads it then)."""
    try:
        with open(path, "rb") as stream:
            members = read_members(stream)
            order = [m for m in members if m.name.rpartition("/")[2] == "byteorder"]
            if order and read_member(stream, order[0]).decode("ascii", "replace") != sys.byteorder:
                return None  # torch byteswaps such storages as it loads them
    except (OSError, ZipAmbiguous):
        return None
    records = {m.data_start: m for m in members
               if m.method == _STORED and m.name.split("/")[-2:-1] == ["data"]}
    located: dict[str, RecordTensor] = {}
    for name, t in meta.items():
        if not (isinstance(t, torch.Tensor) and t.dtype.is_floating_point and t.layout == torch.strided):
            continue
        storage = t.untyped_storage()
        offset = getattr(storage, "_checkpoint_offset", None)
        member = records.get(offset) if type(offset) is int else None
        if member is None or member.size != storage.nbytes():
            return None
        located[name] = RecordTensor(offset, storage.nbytes(), str(t.dtype).removeprefix("torch."),
                                     tuple(t.shape), tuple(t.stride()), t.storage_offset())
    return ZipRecordSource(str(path), stamp, located) if located else None
