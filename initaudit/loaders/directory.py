"""Checkpoint folders: torch.distributed.checkpoint (DCP) directories and folders of safetensors
shards without an index.

A DCP directory (``torch.distributed.checkpoint.save``, torchtitan and other large-scale trainers)
holds a ``.metadata`` pickle that describes every tensor as chunks (offsets and sizes in the full
tensor) and where each chunk lies: a byte range of one ``__<rank>_<n>.distcp`` file, written there
by ``torch.save``. initaudit reads it without running code from it:

- ``.metadata`` is unpickled by a restricted unpickler whose ``find_class`` admits only the DCP
  metadata dataclasses, ``torch.Size``, dtypes, layouts and paths (the "restricting globals"
  recipe of the pickle docs): an import of anything else stops the read with one line;
- every chunk passes the same allow-list scan as a pickled checkpoint, then
  ``torch.load(weights_only=True)``;
- chunk files must be regular files inside the folder, linked once (no symlink or hard link
  reaches a file that is not the checkpoint's own), and every byte range must lie in its file.

Tensors are assembled one at a time when the analysis asks for one, never the whole model, so
memory stays bounded by the largest tensor. A large checkpoint is analysed by initaudit.pool's
workers through :class:`DcpSource`: each worker reads ``.metadata`` itself, under the same
restricted unpickler and the same file checks, and reads only the chunks of its tensors.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from initaudit.errors import TargetError, UnsafeCheckpointError, first_line
from initaudit.loaders.checkpoint import _TRAINING_KEYS, Checkpoint, read_safetensors

DCP_METADATA = ".metadata"
_DCP_FORMAT = "distributed-checkpoint"
_METADATA_LIMIT = 1 << 30  # bytes: a .metadata pickle larger than this is refused unread


@lru_cache(maxsize=1)
def _metadata_globals() -> frozenset[tuple[str, str]]:
    """What a DCP ``.metadata`` pickle may import: plain data classes and torch constants."""
    dcp_meta = "torch.distributed.checkpoint.metadata"
    names = {(dcp_meta, n) for n in ("Metadata", "TensorStorageMetadata", "TensorProperties",
                                     "ChunkStorageMetadata", "MetadataIndex", "BytesStorageMetadata",
                                     "StorageMeta", "_MEM_FORMAT_ENCODING")}
    names |= {("torch.distributed.checkpoint.filesystem", "_StorageInfo"), ("torch", "Size"),
              ("torch.serialization", "_get_layout"), ("collections", "OrderedDict"),
              ("pathlib", "PosixPath"), ("pathlib", "PurePosixPath")}
    constants = (torch.dtype, torch.layout, torch.memory_format)
    names |= {("torch", n) for n in dir(torch) if isinstance(getattr(torch, n, None), constants)}
    return frozenset(names)


class _Refused(Exception):
    pass


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _metadata_globals():
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not part of DCP metadata")


def read_directory(path: Path) -> Checkpoint:
    """A DCP directory, the one ``*.safetensors.index.json`` of a folder, or its safetensors
    shards without an index. Two folder checkpoints in one folder (a DCP and safetensors) are
    ambiguous; other checkpoint files beside the one read (a Trainer's ``optimizer.pt``,
    ``training_args.bin``, a ``pytorch_model.bin`` copy) are named in a note, not read."""
    dcp = (path / DCP_METADATA).is_file()
    indexes = sorted(path.glob("*.safetensors.index.json"))
    shards = sorted(path.glob("*.safetensors"))
    if dcp and (indexes or shards):
        raise TargetError(path, f"holds both a torch.distributed.checkpoint (.metadata) and safetensors "
                                f"({(indexes or shards)[0].name}), so which one to audit is ambiguous; "
                                "give the safetensors file or index to audit it")
    if len(indexes) > 1:
        raise TargetError(path, f"holds {len(indexes)} safetensors indexes "
                                f"({', '.join(i.name for i in indexes[:3])}); name the one to audit")
    if dcp:
        ckpt = read_dcp(path)
    elif indexes:
        ckpt = read_safetensors(indexes[0])
    elif shards:
        _check_complete(path, shards)
        ckpt = _merge_shards(path, [read_safetensors(s) for s in shards])
    else:
        others = _other_checkpoints(path, set())
        if others:
            raise TargetError(path, f"holds no folder checkpoint (torch.distributed.checkpoint or "
                                    f"safetensors shards), only {_listed(others)}; give the file itself "
                                    f"(initaudit {path / others[0]})")
        raise TargetError(path, "is a directory with no checkpoint in it (expected a "
                                "torch.distributed.checkpoint folder with .metadata, or *.safetensors "
                                "shards); give a model file or a factory spec")
    unread = _other_checkpoints(path, {Path(f).resolve() for f in ckpt.files})
    if unread:
        ckpt.notes.append(f"not read from the folder: {_listed(unread)} (the audit reads the folder's "
                          f"{'distributed checkpoint' if dcp else 'safetensors'} only; give a file to audit it)")
    return ckpt


_SHARD_NUMBER = re.compile(r"^(.*)-(\d+)-of-(\d+)\.safetensors$")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".onnx", ".pt2")


def _check_complete(folder: Path, shards: list[Path]) -> None:
    """Shards named ``<stem>-<i>-of-<n>.safetensors`` (Hugging Face) must all be there: a missing
    one is an incomplete download or copy, not a smaller model."""
    groups: dict[tuple[str, str], set[int]] = {}
    for shard in shards:
        m = _SHARD_NUMBER.match(shard.name)
        if m:
            groups.setdefault((m[1], m[3]), set()).add(int(m[2]))
    for (stem, total), present in groups.items():
        missing = [i for i in range(1, int(total) + 1) if i not in present]
        if missing:
            width = len(total)
            raise TargetError(folder, f"shard {stem}-{missing[0]:0{width}d}-of-{total}.safetensors is "
                                      f"missing: the shard names say {int(total)} shards and "
                                      f"{len(present)} are here (incomplete download or copy?)")


def _other_checkpoints(folder: Path, read: set[Path]) -> list[str]:
    """Names of checkpoint-like files in ``folder`` that are not among the files ``read``."""
    return sorted(f.name for f in folder.iterdir()
                  if f.name.lower().endswith(_CHECKPOINT_SUFFIXES) and f.is_file()
                  and f.resolve() not in read)


def _listed(names: list[str]) -> str:
    return ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")


def _merge_shards(folder: Path, parts: list[Checkpoint]) -> Checkpoint:
    if len({part.source.prefix for part in parts}) > 1:  # a wrapper's prefix only some shards share
        parts = [_unstripped(part) for part in parts]
    owner: dict[str, Checkpoint] = {}
    for part in parts:
        for name in part.shapes:
            if name in owner:
                raise TargetError(folder, f"tensor {name!r} is stored in both {owner[name].path.name} "
                                          f"and {part.path.name}; which one the model uses is ambiguous")
            owner[name] = part
    from initaudit.loaders.shards import SafetensorsSource, ShardReader

    files = {name: f for part in parts for name, f in part.source.files.items()}
    prefix = parts[0].source.prefix
    merged = Checkpoint(folder, "safetensors", {}, {}, ShardReader(files, prefix=prefix),
                        files=[f for p in parts for f in p.files], source=SafetensorsSource(files, prefix))
    for part in parts:
        merged.shapes.update(part.shapes)
        merged.dtypes.update(part.dtypes)
        merged.evidence += [e for e in part.evidence if e not in merged.evidence]
    merged.notes.append(f"{len(parts)} safetensors shards read from the folder (no index file)")
    return merged


def _unstripped(part: Checkpoint) -> Checkpoint:
    """``part`` under the names its file stores (its wrapper prefix put back)."""
    import dataclasses

    from initaudit.loaders.shards import SafetensorsSource, ShardReader

    prefix = part.source.prefix
    shapes, dtypes, files = ({prefix + k: v for k, v in d.items()}
                             for d in (part.shapes, part.dtypes, part.source.files))
    return dataclasses.replace(part, shapes=shapes, dtypes=dtypes, load=ShardReader(files),
                               source=SafetensorsSource(files))


# --- torch.distributed.checkpoint --------------------------------------------------------------


def _read_metadata(folder: Path):
    meta_path = folder / DCP_METADATA
    size = meta_path.stat().st_size
    if size > _METADATA_LIMIT:
        raise TargetError(meta_path, f"{size} bytes of metadata: over the {_METADATA_LIMIT >> 20} MiB "
                                     "limit for a DCP .metadata file")
    try:
        meta = _MetadataUnpickler(io.BytesIO(meta_path.read_bytes())).load()
    except _Refused as exc:
        raise UnsafeCheckpointError(meta_path, f"refused: the metadata pickle imports {exc}, which "
                                               "DCP metadata never needs (loading never executes "
                                               "code from a checkpoint)") from None
    except Exception as exc:  # corrupt pickles raise anything from EOFError to TypeError
        raise TargetError(meta_path, f"not a readable DCP metadata file: "
                                     f"{first_line(exc) or type(exc).__name__}") from None
    from torch.distributed.checkpoint.metadata import Metadata

    if not isinstance(meta, Metadata) or not isinstance(meta.state_dict_metadata, dict) \
            or not isinstance(meta.storage_data, dict):
        raise TargetError(meta_path, "not DCP metadata (no state_dict_metadata / storage_data); "
                                     "written by torch.distributed.checkpoint with a custom storage?")
    return meta


def _chunk_file(folder: Path, relative: object, where: str) -> Path:
    """The chunk file, checked to be the checkpoint's own: a relative path inside the folder,
    a regular file, not a symlink, linked once."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or os.path.isabs(relative):
        raise TargetError(folder, f"{where}: bad storage path {relative!r}")
    base = os.path.realpath(folder)
    full = os.path.realpath(os.path.join(base, relative))
    if os.path.commonpath([base, full]) != base:
        raise TargetError(folder, f"{where}: storage file {relative!r} lies outside the checkpoint "
                                  "folder; refused (path traversal)")
    candidate = Path(folder, relative)
    if candidate.is_symlink() or not os.path.isfile(full):
        raise TargetError(folder, f"{where}: storage file {relative!r} is missing or not a regular file")
    if os.stat(full).st_nlink > 1:
        raise TargetError(folder, f"{where}: storage file {relative!r} has other hard links; refused "
                                  "(no byte is read from a file that may not be the checkpoint's own)")
    return Path(full)


class _ByteRange(io.RawIOBase):
    """Bytes ``offset .. offset + length`` of an open file as a seekable file of their own.

    A chunk is a torch.save archive inside its ``.distcp`` file: the allow-list scan and
    ``torch.load`` read it through this window, and torch reads each storage record straight
    into the tensor (``readinto``), so a chunk is held once, not twice (a ``BytesIO`` copy of
    the whole chunk beside the tensor made from it)."""

    def __init__(self, file: io.BufferedReader, offset: int, length: int) -> None:
        super().__init__()
        self._file, self._offset, self._length, self._pos = file, offset, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buffer) -> int:
        n = max(0, min(len(buffer), self._length - self._pos))
        if n == 0:
            return 0
        self._file.seek(self._offset + self._pos)
        got = self._file.readinto(memoryview(buffer).cast("B")[:n])
        self._pos += got
        return got


class _DcpReader:
    """Reads one tensor at a time from the chunks the metadata lists."""

    def __init__(self, folder: Path, meta) -> None:
        self.folder = folder
        self.tensors = {k: v for k, v in meta.state_dict_metadata.items() if hasattr(v, "chunks")}
        self.storage: dict[tuple[str, tuple[int, ...]], object] = {}
        for index, info in meta.storage_data.items():
            self.storage[(getattr(index, "fqn", None), tuple(getattr(index, "offset", None) or ()))] = info
        self.files: set[Path] = set()
        for fqn, md in self.tensors.items():
            for chunk in md.chunks:
                info = self._info(fqn, chunk)
                self.files.add(self._checked_range(fqn, info))

    def _info(self, fqn: str, chunk):
        info = self.storage.get((fqn, tuple(chunk.offsets)))
        if info is None:
            raise TargetError(self.folder, f"tensor {fqn!r}: chunk at {list(chunk.offsets)} has no "
                                           "storage entry in .metadata (incomplete checkpoint)")
        return info

    def _checked_range(self, fqn: str, info) -> Path:
        file = _chunk_file(self.folder, getattr(info, "relative_path", None), f"tensor {fqn!r}")
        offset, length = getattr(info, "offset", None), getattr(info, "length", None)
        if type(offset) is not int or type(length) is not int or offset < 0 or length <= 0 \
                or offset + length > file.stat().st_size:
            raise TargetError(self.folder, f"tensor {fqn!r}: bytes {offset}..+{length} do not lie "
                                           f"inside {file.name} ({file.stat().st_size} bytes); "
                                           "truncated or corrupt checkpoint")
        if getattr(info, "transform_descriptors", None):
            raise TargetError(self.folder, f"tensor {fqn!r}: stored with transforms "
                                           f"{list(info.transform_descriptors)} (compression?), "
                                           "which initaudit does not read")
        return file

    def shape(self, fqn: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.tensors[fqn].size)

    def dtype(self, fqn: str) -> str:
        return str(self.tensors[fqn].properties.dtype).replace("torch.", "")

    def _chunk(self, fqn: str, info) -> torch.Tensor:
        from initaudit.loaders.pickle_safety import _Refused as _PickleRefused, _scan_stream

        file = self._checked_range(fqn, info)
        with open(file, "rb") as f:
            data = _ByteRange(f, info.offset, info.length)
            try:
                _scan_stream(data)
                data.seek(0)
                value = torch.load(data, map_location="cpu", weights_only=True)
            except _PickleRefused as exc:
                raise UnsafeCheckpointError(file, f"chunk of {fqn!r}: {exc}") from None
            except Exception as exc:  # _Corrupt, or whatever torch.load raises on a damaged archive
                raise TargetError(file, f"chunk of {fqn!r} cannot be read: "
                                        f"{first_line(exc) or type(exc).__name__}") from None
        if not isinstance(value, torch.Tensor):
            raise TargetError(file, f"chunk of {fqn!r} holds a {type(value).__name__}, not a tensor")
        return value

    def load(self, fqn: str) -> torch.Tensor:
        md = self.tensors[fqn]
        shape = self.shape(fqn)
        chunks = list(md.chunks)
        if len(chunks) == 1 and tuple(chunks[0].sizes) == shape:
            value = self._chunk(fqn, self._info(fqn, chunks[0]))
            return self._checked_shape(fqn, value, shape)
        full = torch.empty(shape, dtype=md.properties.dtype)
        covered = 0
        for chunk in chunks:
            sizes = tuple(int(s) for s in chunk.sizes)
            value = self._checked_shape(fqn, self._chunk(fqn, self._info(fqn, chunk)), sizes)
            view = full
            for dim, (start, size) in enumerate(zip(chunk.offsets, sizes)):
                if start < 0 or start + size > shape[dim]:
                    raise TargetError(self.folder, f"tensor {fqn!r}: chunk at {list(chunk.offsets)} "
                                                   f"reaches past its size {list(shape)}")
                view = view.narrow(dim, int(start), size)
            view.copy_(value)
            covered += math.prod(sizes)
        if covered != math.prod(shape):
            raise TargetError(self.folder, f"tensor {fqn!r}: its chunks hold {covered} of "
                                           f"{math.prod(shape)} elements (incomplete or overlapping)")
        return full

    def _checked_shape(self, fqn: str, value: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
        if tuple(value.shape) != shape:
            raise TargetError(self.folder, f"tensor {fqn!r}: a chunk holds shape {list(value.shape)} "
                                           f"where .metadata says {list(shape)}")
        return value


class _DcpNames:
    """A :class:`_DcpReader` read by the audit's names (``model.`` prefix stripped)."""

    def __init__(self, reader: _DcpReader, fqns: Mapping[str, str]) -> None:
        self.reader, self.fqns = reader, fqns

    def __call__(self, name: str) -> torch.Tensor:
        return self.reader.load(self.fqns[name])

    def close(self) -> None:
        """Nothing stays open: each chunk's file is opened and closed as it is read."""


@dataclass(frozen=True)
class DcpSource:
    """A distributed checkpoint as a worker process reopens it: the folder and the names."""

    folder: str
    fqns: Mapping[str, str]  # the audit's name -> the checkpoint's fully qualified name

    @property
    def names(self) -> Collection[str]:
        return self.fqns.keys()

    def open(self) -> _DcpNames:
        """Read ``.metadata`` here, through the restricted unpickler, and check every chunk file
        and byte range again: nothing the caller parsed is trusted across the process boundary."""
        folder = Path(self.folder)
        return _DcpNames(_DcpReader(folder, _read_metadata(folder)), self.fqns)


def _is_training_state(fqn: str) -> bool:
    top = fqn.split(".", 1)[0].lower()
    return top in _TRAINING_KEYS or top.startswith("optim")


def read_dcp(folder: Path) -> Checkpoint:
    """A torch.distributed.checkpoint directory, tensor by tensor (see the module docstring)."""
    meta = _read_metadata(folder)
    reader = _DcpReader(folder, meta)
    model = [k for k in reader.tensors if not _is_training_state(k)]
    state = sorted({k.split(".", 1)[0] for k in meta.state_dict_metadata if _is_training_state(k)})
    prefix = "model."
    strip = bool(model) and all(k.startswith(prefix) for k in model)
    names = {(k[len(prefix):] if strip else k): k for k in model}
    ckpt = Checkpoint(folder, _DCP_FORMAT, {n: reader.shape(k) for n, k in names.items()},
                      {n: reader.dtype(k) for n, k in names.items()}, _DcpNames(reader, names),
                      evidence=[f"distributed checkpoint holds '{s}' state" for s in state],
                      files=[folder / DCP_METADATA, *sorted(reader.files)],
                      source=DcpSource(str(folder), names))
    skipped_state = len(reader.tensors) - len(model)
    if skipped_state:
        ckpt.notes.append(f"{skipped_state} optimizer/training-state tensor(s) not analysed as weights")
    if not model:
        raise TargetError(folder, "the distributed checkpoint holds no model tensors")
    return ckpt
