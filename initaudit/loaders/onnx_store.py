"""ONNX file reading: the protobuf without its external data, and stored tensors read one at a
time. External data must lie inside the model's folder (external-data path traversal is a known
CVE class); large external tensors are memory-mapped, never copied."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from initaudit.errors import TargetError

_DTYPE_NAMES = {
    onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.BFLOAT16: "bfloat16", onnx.TensorProto.DOUBLE: "float64",
    onnx.TensorProto.INT8: "int8", onnx.TensorProto.UINT8: "uint8", onnx.TensorProto.INT16: "int16",
    onnx.TensorProto.UINT16: "uint16", onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.INT64: "int64", onnx.TensorProto.BOOL: "bool",
}
_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}
for _n in ("FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT4E2M1"):
    if hasattr(onnx.TensorProto, _n):
        _FLOAT_TYPES.add(getattr(onnx.TensorProto, _n))
# numpy dtypes torch.from_numpy takes as they are (the analysis converts to fp32 itself)
_DIRECT_NP = {onnx.TensorProto.FLOAT: np.float32, onnx.TensorProto.FLOAT16: np.float16,
              onnx.TensorProto.DOUBLE: np.float64, onnx.TensorProto.INT8: np.int8,
              onnx.TensorProto.UINT8: np.uint8, onnx.TensorProto.INT16: np.int16,
              onnx.TensorProto.INT32: np.int32, onnx.TensorProto.INT64: np.int64}
_SMALL = 1 << 16  # elements: constants read eagerly (shapes, scales, Clip bounds)
_SKELETON_MIN = 4096  # initializers above this size are left out of the shape-inference copy


def _dtype_name(dt: int) -> str:
    return _DTYPE_NAMES.get(dt) or onnx.TensorProto.DataType.Name(dt).lower()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:200] + "...") if len(text) > 200 else (text or type(exc).__name__)


# ---------------------------------------------------------------------------------------------
# Reading the file and its tensors


@dataclass
class _External:
    path: str  # resolved, inside the model folder
    offset: int
    length: int
    identity: tuple[int, int] = (0, 0)  # (device, inode) checked when the file was admitted


_KNOWN_DTYPES = frozenset(onnx.TensorProto.DataType.values()) - {onnx.TensorProto.UNDEFINED}


def open_external(ext: _External, model_path: Path):
    """Open external data, verifying it is still the single-link file that was checked."""
    f = open(ext.path, "rb")
    st = os.fstat(f.fileno())
    if (st.st_dev, st.st_ino) != ext.identity or st.st_nlink != 1:
        f.close()
        raise TargetError(model_path, f"external data file {ext.path!r} changed after it was checked; refused")
    return f


class TensorStore:
    """Stored constants by name: initializers and Constant-node values, read one at a time."""

    def __init__(self, model_path: Path, base_dir: Path):
        self.model_path = model_path
        self.base_dir = base_dir
        self.protos: dict[str, onnx.TensorProto] = {}
        self.external: dict[str, _External] = {}
        self._small: dict[str, np.ndarray] = {}
        # Values of Constant nodes: part of the program (a non-persistent buffer, a tensor made in
        # forward), never a parameter: exporters store every parameter as an initializer.
        self.program: set[str] = set()

    def add(self, t: onnx.TensorProto, name: str | None = None) -> None:
        name = name or t.name
        check_tensor_header(self.model_path, name, t)
        self.protos[name] = t
        if t.data_location == onnx.TensorProto.EXTERNAL:
            self.external[name] = self._check_external(name, t)

    def __contains__(self, name: str) -> bool:
        return name in self.protos

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(d) for d in self.protos[name].dims)

    def dtype(self, name: str) -> int:
        return self.protos[name].data_type

    def numel(self, name: str) -> int:
        return math.prod(self.shape(name))

    def _check_external(self, name: str, t: onnx.TensorProto) -> _External:
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        where = f"external data of {name!r}"
        if not loc:
            raise TargetError(self.model_path, f"{where} names no file")
        if "\x00" in loc or os.path.isabs(loc) or PureWindowsPath(loc).is_absolute() \
                or PureWindowsPath(loc).drive or loc.startswith(("/", "\\")):
            raise TargetError(self.model_path, f"{where} uses an absolute path ({loc!r}); external "
                                               "data must lie inside the model's folder")
        base = os.path.realpath(self.base_dir)
        full = os.path.realpath(os.path.join(base, loc))
        if os.path.commonpath([base, full]) != base:
            raise TargetError(self.model_path, f"{where} points outside the model's folder "
                                               f"({loc!r}); refused (path traversal)")
        if not os.path.isfile(full):
            raise TargetError(self.model_path, f"{where}: file {loc!r} not found next to the model")
        st = os.stat(full)
        if st.st_nlink != 1:
            raise TargetError(self.model_path, f"{where}: file {loc!r} has {st.st_nlink} hard links; "
                                               "refused, since a hard link can expose a file from outside "
                                               "the model's folder (copy the data file to break the link)")
        try:
            offset = int(info.get("offset", 0) or 0)
            length = int(info["length"]) if info.get("length") else None
        except ValueError:
            raise TargetError(self.model_path, f"{where}: offset/length are not integers") from None
        if offset < 0 or (length is not None and length < 0):
            raise TargetError(self.model_path, f"{where}: negative offset or length "
                                               f"(offset {offset}, length {length}); the file is corrupt")
        size = st.st_size
        expected = self._nbytes(t)
        if length is None:
            length = expected if expected is not None else size - offset
        if offset + length > size:
            raise TargetError(self.model_path, f"{where}: bytes {offset}..{offset + length} lie beyond "
                                               f"the end of {loc!r} ({size} bytes); the file is truncated")
        if expected is not None and length != expected:
            raise TargetError(self.model_path, f"{where}: {length} bytes stored for a "
                                               f"{list(t.dims)} {_dtype_name(t.data_type)} tensor "
                                               f"({expected} expected)")
        return _External(full, offset, length, (st.st_dev, st.st_ino))

    @staticmethod
    def _nbytes(t: onnx.TensorProto) -> int | None:
        np_type = _DIRECT_NP.get(t.data_type)
        if np_type is not None:
            return math.prod(t.dims) * np.dtype(np_type).itemsize
        if t.data_type in (onnx.TensorProto.BFLOAT16, onnx.TensorProto.UINT16):
            return math.prod(t.dims) * 2
        return None

    def array(self, name: str) -> np.ndarray:
        """The stored values as numpy (read-only for embedded tensors; never cached)."""
        t = self.protos[name]
        try:
            ext = self.external.get(name)
            if ext is not None:
                return self._read_external(t, ext)
            return numpy_helper.to_array(t)
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(self.model_path, f"tensor {name!r} cannot be read ({_one_line(exc)}); "
                                               "the file is corrupt or truncated") from None

    def _read_external(self, t: onnx.TensorProto, ext: _External) -> np.ndarray:
        np_type = _DIRECT_NP.get(t.data_type)
        with open_external(ext, self.model_path) as f:
            f.seek(ext.offset)
            if np_type is not None:
                arr = np.empty(ext.length // np.dtype(np_type).itemsize, dtype=np_type)
                got = f.readinto(memoryview(arr).cast("B"))
                if got != ext.length:
                    raise TargetError(self.model_path, f"external data of {t.name!r} is truncated")
                return arr.reshape(tuple(t.dims))
            data = f.read(ext.length)
        if len(data) != ext.length:
            raise TargetError(self.model_path, f"external data of {t.name!r} is truncated")
        copy = onnx.TensorProto()
        copy.name, copy.data_type = t.name, t.data_type
        copy.dims.extend(t.dims)
        copy.raw_data = data
        return numpy_helper.to_array(copy)

    def view(self, name: str) -> np.ndarray:
        """The stored values without reading them all: a read-only memory map of external
        data where the type allows, else :meth:`array`."""
        ext = self.external.get(name)
        np_type = _DIRECT_NP.get(self.protos[name].data_type)
        if ext is not None and np_type is not None:
            with open_external(ext, self.model_path) as f:
                return np.memmap(f, dtype=np_type, mode="r", offset=ext.offset, shape=self.shape(name))
        return self.array(name)

    def small(self, name: str) -> np.ndarray | None:
        """Values of a small constant (shapes, scales, bounds), cached; None when too big."""
        if name not in self.protos or self.numel(name) > _SMALL:
            return None
        if name not in self._small:
            self._small[name] = np.asarray(self.array(name))
        return self._small[name]

    def tensor(self, name: str) -> torch.Tensor:
        """A read-only tensor: external data memory-mapped (no copy), embedded data from the
        protobuf. Nothing in initaudit writes to it."""
        try:
            arr = self.view(name)
        except TargetError:
            raise
        except Exception as exc:
            raise TargetError(self.model_path, f"tensor {name!r} cannot be read ({_one_line(exc)}); "
                                               "the file is corrupt or truncated") from None
        if arr.dtype.type not in (np.float32, np.float16, np.float64, np.int8, np.uint8, np.int16,
                                  np.int32, np.int64, np.bool_):
            arr = arr.astype(np.float32)  # bfloat16, float8, int4: numpy extension types
        with warnings.catch_warnings():  # embedded tensors are read-only views of the protobuf
            warnings.simplefilter("ignore", UserWarning)
            return torch.from_numpy(arr) if arr.ndim else torch.from_numpy(arr.reshape(1))


def check_tensor_header(path: Path, name: str, t: onnx.TensorProto) -> None:
    """Dims and data type a tensor's values can be read with: no negative dims, a known type."""
    if any(d < 0 for d in t.dims):
        raise TargetError(path, f"tensor {name!r} has negative dimensions {list(t.dims)}; the file is corrupt")
    if t.data_type not in _KNOWN_DTYPES:
        raise TargetError(path, f"tensor {name!r} has unknown data type {t.data_type} (not an ONNX "
                                "TensorProto.DataType); the file is corrupt or from a newer ONNX")


def _non_utf8_field(model: onnx.ModelProto) -> str | None:
    """The first string field that is not UTF-8 text (protobuf hands those back as bytes), as
    'message.field'; None when every string is text. Iterative: no recursion limit."""
    from google.protobuf.descriptor import FieldDescriptor

    stack: list[Any] = [model]
    while stack:
        msg = stack.pop()
        for fd, value in msg.ListFields():
            repeated = getattr(fd, "is_repeated", None)
            if repeated is None:  # protobuf before 5.x
                repeated = fd.label == FieldDescriptor.LABEL_REPEATED
            if fd.type == FieldDescriptor.TYPE_STRING:
                values = value if repeated else [value]
                if any(isinstance(v, bytes) for v in values):
                    return f"{msg.DESCRIPTOR.name}.{fd.name}"
            elif fd.type == FieldDescriptor.TYPE_MESSAGE:
                if repeated:
                    stack.extend(value)
                else:
                    stack.append(value)
    return None


def check_structure(path: Path, model: onnx.ModelProto) -> None:
    """Refuse protobuf content initaudit cannot read as ONNX: strings that are not UTF-8 (the
    protobuf runtime hands them back as bytes), initializers with negative dims or unknown
    types."""
    field = _non_utf8_field(model)
    if field is not None:
        raise TargetError(path, f"not a valid ONNX model: a {field} string is not UTF-8 text; the file "
                                "is corrupt")
    for t in model.graph.initializer:
        check_tensor_header(path, t.name, t)


def check_graph(path: Path, skeleton: onnx.ModelProto) -> None:
    """onnx.checker on the model without its large initializers (see :func:`_skeleton`): graph
    cycles, duplicate outputs, unknown standard ops are exit 2 with the checker's cause. Run
    after the external-data checks, whose causes are more precise."""
    try:
        onnx.checker.check_model(skeleton)
    except onnx.checker.ValidationError as exc:
        raise TargetError(path, f"not a valid ONNX model: onnx.checker: {_one_line(exc)}") from None
    except (ValueError, RuntimeError) as exc:
        raise TargetError(path, f"not a valid ONNX model: {_one_line(exc)}") from None


def _read_model(path: Path) -> onnx.ModelProto:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise TargetError(path, f"cannot read the file ({exc.strerror or exc})") from None
    if not data:
        raise TargetError(path, "the file is empty")
    try:
        model = onnx.ModelProto()
        model.ParseFromString(data)
    except Exception as exc:
        raise TargetError(path, f"not a readable ONNX model: protobuf parsing failed "
                                f"({_one_line(exc)}); the file is corrupt or truncated") from None
    del data
    if not model.HasField("graph") or (not model.graph.node and not model.graph.initializer):
        raise TargetError(path, "not an ONNX model: the file holds no graph (corrupt, truncated or "
                                "another format)")
    if not model.opset_import:
        raise TargetError(path, "not a valid ONNX model: no opset_import (corrupt or truncated)")
    check_structure(path, model)
    return model


def empty_model_like(model: onnx.ModelProto) -> onnx.ModelProto:
    """A model with ``model``'s IR version, opsets, local functions and graph name, no nodes."""
    out = onnx.ModelProto()
    out.ir_version = model.ir_version
    out.opset_import.extend(model.opset_import)
    out.functions.extend(model.functions)
    out.graph.name = model.graph.name
    return out


def _skeleton(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of the model without the large initializers' data, for shape inference and for
    inlining local functions: large initializers become typed graph inputs."""
    sk = empty_model_like(model)
    g, src = sk.graph, model.graph
    g.node.extend(src.node)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    inputs = {i.name for i in src.input}
    g.input.extend(src.input)
    for t in src.initializer:
        if math.prod(t.dims) <= _SKELETON_MIN and t.data_location != onnx.TensorProto.EXTERNAL:
            g.initializer.append(t)
        elif t.name not in inputs:
            g.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return sk
