"""Static safety gate for pickled checkpoints: check every import a pickle would make, run nothing.

Unpickling can call any importable function, so a ``.pt``/``.pth``/``.bin`` file is code until
proven otherwise. Deny-list scanners and even ``torch.load(weights_only=True)`` have had bypasses,
so before torch's weights-only loader sees a file we walk its pickle opcodes with
:func:`pickletools.genops` (which decodes, never executes) and require every global it would import
to be on an explicit allow-list of what state_dicts, optimizer states and Lightning-style training
checkpoints need. Anything else is refused with one line naming the offending global.
"""

from __future__ import annotations

import _compat_pickle
import pickletools
import struct
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path
from typing import IO, Any

import torch

from initaudit.errors import TargetError, UnsafeCheckpointError

__all__ = ["ALLOWED_GLOBALS", "is_allowed_global", "scan_checkpoint"]

_ZIP_MAGIC = b"PK\x03\x04"  # torch decides "zip format" on these four start bytes alone
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
_LEGACY_PICKLES = 5  # magic number, protocol, sys_info, the object, storage keys; then raw bytes

_SAFE_TAIL = "(initaudit only loads state_dicts; loading never executes code from a checkpoint)"


def _torch_instances(kind: type) -> set[tuple[str, str]]:
    """``("torch", name)`` for every ``torch.<name>`` that is a ``kind`` (dtypes, qschemes).

    Computed from the installed torch so new dtypes (float8, uint16, ...) are covered without a
    hand-maintained list; each is a plain enum-like constant, never a callable that runs code.
    """
    return {("torch", n) for n in dir(torch) if isinstance(getattr(torch, n, None), kind)}


def _torch_storage_classes() -> set[tuple[str, str]]:
    """Every storage class a tensor's persistent id can name, under each name it is pickled as."""
    names = {
        ("torch", n)
        for n in dir(torch)
        if n.endswith("Storage") and isinstance(getattr(torch, n, None), type)
    }
    for cls in getattr(torch, "_storage_classes", ()):  # adds torch.cuda.*Storage (old GPU saves)
        names.add((cls.__module__, cls.__name__))
    return names | {("torch.storage", "UntypedStorage"), ("torch.storage", "TypedStorage")}


_REBUILD_FUNCTIONS = {
    ("torch._utils", name)
    for name in (
        "_rebuild_tensor",
        "_rebuild_tensor_v2",
        "_rebuild_tensor_v3",  # dtypes without a legacy storage class (float8, uint16, ...)
        "_rebuild_parameter",
        "_rebuild_parameter_with_state",
        "_rebuild_qtensor",
        "_rebuild_sparse_tensor",
        "_rebuild_meta_tensor_no_storage",  # tensors on the meta device
    )
} | {("torch._tensor", "_rebuild_from_type_v2")}

_PLAIN_VALUES = {
    ("collections", "OrderedDict"),
    ("collections", "Counter"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "slice"),
    ("builtins", "complex"),
    ("builtins", "bytearray"),
    ("_codecs", "encode"),  # how protocol 2 spells bytes (and numpy's raw buffers)
    ("torch", "Size"),
    ("torch", "device"),
    ("torch", "Tensor"),  # _rebuild_from_type_v2 of a plain tensor carrying Python attributes
    ("torch.nn.parameter", "Parameter"),
    ("torch.serialization", "_get_layout"),  # sparse tensors
}

_NUMPY = {
    (module, name)
    for module in ("numpy.core.multiarray", "numpy._core.multiarray")
    for name in ("scalar", "_reconstruct")
} | {("numpy", "dtype"), ("numpy", "ndarray")}

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    _REBUILD_FUNCTIONS
    | _PLAIN_VALUES
    | _NUMPY
    | _torch_storage_classes()
    | _torch_instances(torch.dtype)
    | _torch_instances(torch.qscheme)
)
"""Every ``(module, name)`` a checkpoint may import. Exact pairs only: an allow-list, never a
deny-list, and no prefix or wildcard rules (one wildcard is one bypass waiting to happen)."""


def is_allowed_global(module: str, name: str) -> bool:
    """Whether unpickling may import ``module.name``: exact membership in ALLOWED_GLOBALS."""
    return (module, name) in ALLOWED_GLOBALS


# ---------------------------------------------------------------------------------------------
# Errors raised while scanning; scan_checkpoint turns them into TargetError subclasses with path.


class _Refused(Exception):
    """The pickle would import something outside the allow-list."""


class _Corrupt(Exception):
    """The file is not a readable pickle / checkpoint."""


def _one_line(text: object) -> str:
    """Collapse whitespace so a cause never spans lines (exit-2 messages are one line)."""
    return " ".join(str(text).split())


def _pickle_label(where: str) -> str:
    """How a message names the pickle: the zip member when there is one."""
    return f"the pickle in {where}" if where else "the pickle"


def _looks_like_model(module: str, name: str) -> bool:
    """A global that is probably an nn.Module class: torch's layers, or a class from user code."""
    if module in ("__main__", "torch.nn.modules") or module.startswith("torch.nn.modules."):
        return True
    root = module.split(".")[0]
    known = root in sys.stdlib_module_names or root in _compat_pickle.IMPORT_MAPPING
    return not known and root not in {"torch", "numpy"} and name[:1].isupper()


def _refusal(module: str, name: str, where: str) -> str:
    """The one-line cause for importing a global that is not allowed."""
    target = _one_line(f"{module}.{name}")
    pickle = _pickle_label(where)
    if _looks_like_model(module, name):
        return (
            f"refusing to load: {pickle} imports {target}, so the file is a full pickled model "
            "(an nn.Module object), not a state_dict, and unpickling it would run code from the "
            "file; re-save the weights with torch.save(model.state_dict(), 'model.pt'), or pass "
            "--unsafe-pickle to accept the risk of running code from this file"
        )
    return f"refusing to load: {pickle} imports {target}, which would run code {_SAFE_TAIL}"


# ---------------------------------------------------------------------------------------------
# One pickle: walk the opcodes, simulating just enough of the stack to resolve STACK_GLOBAL.

_MARK = object()  # a MARK on the simulated stack
_OPAQUE = object()  # any value we do not track (containers, tensors, call results, ...)

_STRING_OPS = frozenset(
    {"SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8", "SHORT_BINSTRING", "BINSTRING"}
)
_INT_OPS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_PUT_OPS = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})
_GET_OPS = frozenset({"GET", "BINGET", "LONG_BINGET"})
_EXT_OPS = frozenset({"EXT1", "EXT2", "EXT4"})  # import through copyreg's extension registry


class _PickleScan:
    """Checks the imports of one pickle. Mirrors the unpickler's stack, marks and memo so the
    module and name strings of STACK_GLOBAL are exactly the ones the real unpickler would use."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.label = _pickle_label(where)
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.result: object = None

    def run(self, stream: IO[bytes]) -> object:
        """Scan up to STOP; return the pickled value if it is a bare int or str literal."""
        for opcode, arg, pos in pickletools.genops(stream):
            self.step(opcode, arg, pos)
        return self.result

    def step(self, opcode: pickletools.OpcodeInfo, arg: Any, pos: int | None) -> None:
        """Apply one opcode to the simulated state; refuse disallowed imports."""
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            self.check(module, name)
            self.generic(opcode)
        elif op == "STACK_GLOBAL":
            self.stack_global(pos)
        elif op in _EXT_OPS:
            raise _Refused(
                f"refusing to load: {self.label} imports a global through the copyreg extension "
                f"registry ({op} at byte {pos}), which could run code {_SAFE_TAIL}"
            )
        elif op == "PROTO":
            self.proto = int(arg)
        elif op in _STRING_OPS or op in _INT_OPS:
            self.stack.append(arg)
        elif op == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif op in _PUT_OPS:
            self.memo[int(arg)] = self.top()
        elif op in _GET_OPS:
            self.get(int(arg), pos)
        elif op == "MARK":
            self.stack.append(_MARK)
        elif op == "DUP":
            self.stack.append(self.top())
        elif op == "POP":
            self.pop(allow_mark=True)
        elif op == "STOP":
            value = self.pop()
            self.result = value if isinstance(value, (int, str)) else None
        else:
            self.generic(opcode)

    def check(self, module: str, name: str) -> None:
        """Refuse unless the global the unpickler would import is allowed."""
        if self.proto < 3:  # the unpickler's fix_imports: Python 2 names -> Python 3 names
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if not is_allowed_global(module, name):
            raise _Refused(_refusal(module, name, self.where))

    def stack_global(self, pos: int | None) -> None:
        """STACK_GLOBAL takes module and name from the stack; both must be known strings."""
        name, module = self.pop(), self.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _Refused(
                f"refusing to load: {self.label} imports a global whose name cannot be resolved "
                f"statically (STACK_GLOBAL at byte {pos}), which could run code {_SAFE_TAIL}"
            )
        self.check(module, name)
        self.stack.append(_OPAQUE)

    def get(self, key: int, pos: int | None) -> None:
        """Push a memoised value (a tracked string stays a string)."""
        if key not in self.memo:
            raise _Corrupt(f"memo key {key} read before it was written (byte {pos})")
        self.stack.append(self.memo[key])

    def generic(self, opcode: pickletools.OpcodeInfo) -> None:
        """Any other opcode: pop what it consumes (per pickletools' stack effect), push opaque."""
        before = opcode.stack_before
        if pickletools.markobject in before:
            self.pop_to_mark()
            before = before[: before.index(pickletools.markobject)]
        for _ in before:
            self.pop()
        self.stack.extend(_OPAQUE for _ in opcode.stack_after)

    def top(self) -> object:
        """The top value (not a mark); its absence means the real unpickler would fail."""
        if not self.stack or self.stack[-1] is _MARK:
            raise _Corrupt("stack underflow")
        return self.stack[-1]

    def pop(self, allow_mark: bool = False) -> object:
        """Pop one value; popping across a mark is an underflow, as in the real unpickler."""
        if not self.stack or (self.stack[-1] is _MARK and not allow_mark):
            raise _Corrupt("stack underflow")
        return self.stack.pop()

    def pop_to_mark(self) -> None:
        """Drop everything down to and including the newest mark."""
        while self.stack:
            if self.stack.pop() is _MARK:
                return
        raise _Corrupt("no MARK on the stack")


def _scan_one(stream: IO[bytes], where: str) -> object:
    """Scan one pickle from the stream's current position; corrupt data raises _Corrupt."""
    try:
        return _PickleScan(where).run(stream)
    except (ValueError, EOFError, struct.error, OverflowError) as exc:
        place = f" in {where}" if where else ""
        cause = f"not a valid pickle{place}: {_one_line(exc)} (corrupt or truncated file?)"
        raise _Corrupt(cause) from exc


def _at_eof(stream: IO[bytes]) -> bool:
    """Whether nothing follows the current position (without consuming anything)."""
    pos = stream.tell()
    at_end = not stream.read(1)
    stream.seek(pos)
    return at_end


def _scan_pickles(stream: IO[bytes], where: str, legacy: bool) -> None:
    """Scan consecutive pickles. A legacy torch file is exactly five pickles followed by raw
    storage bytes; anything else is scanned pickle after pickle until the end of the stream."""
    first = _scan_one(stream, where)
    if legacy and type(first) is int and first == _LEGACY_MAGIC:
        for _ in range(_LEGACY_PICKLES - 1):
            _scan_one(stream, where)
        return
    while not _at_eof(stream):
        _scan_one(stream, where)


# ---------------------------------------------------------------------------------------------
# Containers: torch zip archives, legacy (non-zip) torch files, plain pickles.


_ZIP_ERRORS = (
    zipfile.BadZipFile, zlib.error, EOFError, ValueError, struct.error, NotImplementedError,
    RuntimeError,  # an encrypted member
)


def _scan_zip(stream: IO[bytes]) -> None:
    """Scan every ``.pkl`` member of a torch zip checkpoint (``archive/data.pkl`` and any other)."""
    try:
        with zipfile.ZipFile(stream) as archive:
            members = [i for i in archive.infolist() if i.filename.lower().endswith(".pkl")]
            if not members:
                raise _Corrupt("zip archive without a data.pkl: not a PyTorch checkpoint")
            for info in members:
                with archive.open(info) as member:
                    _scan_pickles(member, info.filename, legacy=False)
    except _ZIP_ERRORS as exc:
        raise _Corrupt(f"corrupt or truncated zip checkpoint: {_one_line(exc)}") from exc


def _is_tar(stream: IO[bytes]) -> bool:
    """torch's pre-0.4 tar format, which torch tries before the legacy pickle format."""
    try:
        tarfile.open(fileobj=stream, mode="r:").close()
        return True
    except (tarfile.TarError, EOFError, ValueError):
        return False
    finally:
        stream.seek(0)


def _scan_stream(stream: IO[bytes]) -> None:
    """Pick the container format the way torch.load does (start bytes, then tar, then pickle)."""
    head = stream.read(len(_ZIP_MAGIC))
    stream.seek(0)
    if not head:
        raise _Corrupt("empty file")
    if head == _ZIP_MAGIC:
        _scan_zip(stream)
    elif _is_tar(stream):
        raise _Corrupt("torch's pre-0.4 .tar checkpoint format is not supported")
    else:
        _scan_pickles(stream, "", legacy=True)


def scan_checkpoint(path: Path) -> None:
    """Refuse a pickled checkpoint unless every global its pickles import is allowed.

    Handles torch zip archives (every ``.pkl`` member), the legacy non-zip format and plain
    pickle files, without unpickling anything. Raises :class:`UnsafeCheckpointError` naming the
    offending global, or :class:`TargetError` when the file is corrupt, truncated or unreadable;
    both carry a one-line cause.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            _scan_stream(stream)
    except _Refused as exc:
        raise UnsafeCheckpointError(path, str(exc)) from None
    except _Corrupt as exc:
        raise TargetError(path, str(exc)) from exc
    except OSError as exc:
        raise TargetError(path, f"cannot read the file: {_one_line(exc.strerror or exc)}") from exc
