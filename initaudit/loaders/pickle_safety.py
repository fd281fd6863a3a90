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
import io
import pickletools
import struct
import sys
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch

from initaudit.errors import TargetError, UnsafeCheckpointError
from initaudit.loaders.torch_zip import ZipAmbiguous, read_member, read_members

__all__ = ["ALLOWED_GLOBALS", "ScanResult", "is_allowed_global", "scan_checkpoint", "loadable_copy"]

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
_BYTES = object()  # a bytes value of bounded size (a literal in the file, or _codecs.encode's result)


@dataclass(frozen=True)
class _Global:
    """A resolved global on the simulated stack (what REDUCE will call)."""

    module: str
    name: str


class _Str(str):
    """A string on the simulated stack, with the position of the opcode that pushed it."""

    pos: int

    def __new__(cls, value: str, pos: int | None) -> _Str:
        obj = super().__new__(cls, value)
        obj.pos = int(pos or 0)
        return obj


_BYTEARRAY = _Global("builtins", "bytearray")
_ENCODE = _Global("_codecs", "encode")
_BYTES_OPS = frozenset({"BINBYTES", "SHORT_BINBYTES", "BINBYTES8"})
_TUPLE_N = {"TUPLE1": 1, "TUPLE2": 2, "TUPLE3": 3}
MIN_ALLOCATION_BUDGET = 1 << 20  # bytes a pickle may ask one call to allocate, at least

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

    def __init__(self, where: str, budget: int = MIN_ALLOCATION_BUDGET) -> None:
        self.where = where
        self.label = _pickle_label(where)
        self.stack: list[object] = []
        self.memo: dict[int, object] = {}
        self.proto = 0
        self.result: object = None
        self.budget = budget  # bytes one call may allocate (relative to the file's size)
        # What a protocol-2 rewrite needs (torch's weights-only unpickler lacks FRAME, MEMOIZE,
        # SHORT_BINUNICODE and STACK_GLOBAL): see initaudit.loaders.pickle_transcode.
        self.span = (0, 0)  # where the pickle starts and ends in the stream
        self.memo_index: dict[int, int] = {}  # MEMOIZE position -> memo key it writes
        self.globals_at: dict[int, tuple[str, str]] = {}  # STACK_GLOBAL position -> (module, name)
        self.origin: dict[int, int] = {}  # MEMOIZE/PUT/GET position -> position of the string it moves
        self.global_strings: set[int] = set()  # positions of strings STACK_GLOBAL consumed
        self.other_strings: set[int] = set()  # positions of strings anything else consumed

    def run(self, stream: IO[bytes]) -> object:
        """Scan up to STOP; return the pickled value if it is a bare int or str literal."""
        start = stream.tell()
        for opcode, arg, pos in pickletools.genops(stream):
            self.step(opcode, arg, pos)
        self.span = (start, stream.tell())
        return self.result

    def step(self, opcode: pickletools.OpcodeInfo, arg: Any, pos: int | None) -> None:
        """Apply one opcode to the simulated state; refuse disallowed imports."""
        op = opcode.name
        if op in ("GLOBAL", "INST"):
            module, _, name = str(arg).partition(" ")
            resolved = self.check(module, name)
            self.generic(opcode)
            if op == "GLOBAL":
                self.stack[-1] = resolved
        elif op == "FRAME":
            pass  # a framing hint: changes no value
        elif op in _BYTES_OPS:
            self.stack.append(_BYTES)
        elif op in _TUPLE_N:
            items = [self.pop() for _ in range(_TUPLE_N[op])][::-1]
            self.stack.append(tuple(items))
        elif op == "TUPLE":
            self.stack.append(tuple(self.pop_to_mark()))
        elif op == "EMPTY_TUPLE":
            self.stack.append(())
        elif op == "REDUCE":
            self.reduce(pos)
        elif op == "STACK_GLOBAL":
            self.stack_global(pos)
        elif op in _EXT_OPS:
            raise _Refused(
                f"refusing to load: {self.label} imports a global through the copyreg extension "
                f"registry ({op} at byte {pos}), which could run code {_SAFE_TAIL}"
            )
        elif op == "PROTO":
            self.proto = int(arg)
        elif op in _STRING_OPS:
            self.stack.append(_Str(arg, pos) if isinstance(arg, str) else arg)
        elif op in _INT_OPS:
            self.stack.append(arg)
        elif op == "MEMOIZE":
            self.memo_index[int(pos or 0)] = len(self.memo)
            self.memo[len(self.memo)] = self.note_origin(self.top(), pos)
        elif op in _PUT_OPS:
            self.memo[int(arg)] = self.note_origin(self.top(), pos)
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

    def check(self, module: str, name: str) -> _Global:
        """Refuse unless the global the unpickler would import is allowed; returns it."""
        if self.proto < 3:  # the unpickler's fix_imports: Python 2 names -> Python 3 names
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        if not is_allowed_global(module, name):
            raise _Refused(_refusal(module, name, self.where))
        return _Global(module, name)

    def reduce(self, pos: int | None) -> None:
        """REDUCE calls a global with an argument tuple. ``bytearray(n)`` allocates n bytes, so
        its argument must be data stored in the file or an integer within the budget."""
        args, func = self.pop(), self.pop()
        if func == _BYTEARRAY:
            values = args if isinstance(args, tuple) else (_OPAQUE,)
            for value in values:
                if isinstance(value, int) and value > self.budget:
                    raise _Refused(f"refusing to load: {self.label} asks bytearray() for {value:,} bytes "
                                   f"(byte {pos}), beyond the budget of {self.budget:,} bytes for this "
                                   "file (a memory bomb, not a weight)")
                if not isinstance(value, (int, str)) and value is not _BYTES:
                    raise _Refused(f"refusing to load: {self.label} builds a bytearray from a value "
                                   f"whose size cannot be checked statically (byte {pos})")
        self.stack.append(_BYTES if func in (_ENCODE, _BYTEARRAY) else _OPAQUE)

    def stack_global(self, pos: int | None) -> None:
        """STACK_GLOBAL takes module and name from the stack; both must be known strings."""
        if len(self.stack) < 2 or _MARK in self.stack[-2:]:
            raise _Corrupt("stack underflow")
        name, module = self.stack.pop(), self.stack.pop()
        if not (isinstance(module, str) and isinstance(name, str)):
            raise _Refused(
                f"refusing to load: {self.label} imports a global whose name cannot be resolved "
                f"statically (STACK_GLOBAL at byte {pos}), which could run code {_SAFE_TAIL}"
            )
        for s in (module, name):
            if isinstance(s, _Str):
                self.global_strings.add(s.pos)
        self.globals_at[int(pos or 0)] = (str(module), str(name))
        self.stack.append(self.check(module, name))

    def note_origin(self, value: object, pos: int | None) -> object:
        """Remember which string a memo operation moves (the rewrite may drop them together)."""
        if isinstance(value, _Str):
            self.origin[int(pos or 0)] = value.pos
        return value

    def get(self, key: int, pos: int | None) -> None:
        """Push a memoised value (a tracked string stays a string)."""
        if key not in self.memo:
            raise _Corrupt(f"memo key {key} read before it was written (byte {pos})")
        self.stack.append(self.note_origin(self.memo[key], pos))

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
        value = self.stack.pop()
        if isinstance(value, _Str):
            self.other_strings.add(value.pos)
        return value

    def pop_to_mark(self) -> list[object]:
        """Drop everything down to and including the newest mark; returns what was above it."""
        items: list[object] = []
        while self.stack:
            item = self.stack.pop()
            if item is _MARK:
                return items[::-1]
            if isinstance(item, _Str):
                self.other_strings.add(item.pos)
            items.append(item)
        raise _Corrupt("no MARK on the stack")


class _Bounded:
    """A read-only view of a stream that never hands out more than ``size - position`` bytes, so a
    pickle that claims a 2**62-byte string costs a short read, not a huge allocation."""

    def __init__(self, raw: IO[bytes], size: int) -> None:
        self.raw, self.size = raw, size

    def tell(self) -> int:
        return self.raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.raw.seek(offset, whence)

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.size - self.raw.tell())
        return self.raw.read(left if n is None or n < 0 else min(n, left))

    def readline(self, limit: int = -1) -> bytes:
        left = max(0, self.size - self.raw.tell())
        return self.raw.readline(left if limit is None or limit < 0 else min(limit, left))


@dataclass
class ScanResult:
    """What the scan learnt about each pickle (by zip member, "" outside a zip), which
    :func:`loadable_copy` needs to rewrite protocol-4 pickles for torch's weights-only loader."""

    path: Path
    zip: bool
    pickles: dict[str, list[_PickleScan]] = field(default_factory=dict)

    @property
    def needs_rewrite(self) -> bool:
        """Protocol 4+ opcodes (FRAME, MEMOIZE, STACK_GLOBAL, ...) that torch's weights-only
        unpickler does not implement."""
        return any(p.proto >= 4 for scans in self.pickles.values() for p in scans)


def _scan_one(stream: IO[bytes], where: str, budget: int) -> _PickleScan:
    """Scan one pickle from the stream's current position; corrupt data raises _Corrupt."""
    scan = _PickleScan(where, budget)
    try:
        scan.run(stream)
    except (ValueError, EOFError, struct.error, OverflowError, MemoryError) as exc:
        place = f" in {where}" if where else ""
        cause = f"not a valid pickle{place}: {_one_line(exc)} (corrupt or truncated file?)"
        raise _Corrupt(cause) from exc
    return scan


def _at_eof(stream: IO[bytes]) -> bool:
    """Whether nothing follows the current position (without consuming anything)."""
    pos = stream.tell()
    at_end = not stream.read(1)
    stream.seek(pos)
    return at_end


def _scan_pickles(stream: IO[bytes], where: str, legacy: bool, budget: int) -> list[_PickleScan]:
    """Scan consecutive pickles. A legacy torch file is exactly five pickles followed by raw
    storage bytes; anything else is scanned pickle after pickle until the end of the stream."""
    scans = [_scan_one(stream, where, budget)]
    if legacy and type(scans[0].result) is int and scans[0].result == _LEGACY_MAGIC:
        scans += [_scan_one(stream, where, budget) for _ in range(_LEGACY_PICKLES - 1)]
        return scans
    while not _at_eof(stream):
        scans.append(_scan_one(stream, where, budget))
    return scans


# ---------------------------------------------------------------------------------------------
# Containers: torch zip archives, legacy (non-zip) torch files, plain pickles.


def _scan_zip(stream: IO[bytes], result: ScanResult, budget: int) -> None:
    """Scan every ``.pkl`` member of a torch zip checkpoint as torch's reader sees it
    (:mod:`initaudit.loaders.torch_zip` refuses archives two readers could read differently)."""
    try:
        members = [m for m in read_members(stream) if m.name.lower().endswith(".pkl")]
        if not members:
            raise _Corrupt("zip archive without a data.pkl: not a PyTorch checkpoint")
        for member in members:
            data = read_member(stream, member)
            result.pickles[member.name] = _scan_pickles(io.BytesIO(data), member.name, False, budget)
    except ZipAmbiguous as exc:
        raise _Corrupt(f"refusing an ambiguous or corrupt zip checkpoint: {_one_line(exc)}") from None
    except (OverflowError, ValueError, MemoryError) as exc:
        raise _Corrupt(f"corrupt zip checkpoint: {_one_line(exc)}") from None


def _is_tar(stream: IO[bytes]) -> bool:
    """torch's pre-0.4 tar format, which torch tries before the legacy pickle format."""
    try:
        tarfile.open(fileobj=stream, mode="r:").close()
        return True
    except (tarfile.TarError, EOFError, ValueError, OverflowError):
        return False
    finally:
        stream.seek(0)


def allocation_budget(size: int) -> int:
    """Bytes one call in a pickle may allocate: the file's size, at least 1 MiB."""
    return max(MIN_ALLOCATION_BUDGET, size)


def _scan_stream(stream: IO[bytes], path: Path | None = None) -> ScanResult:
    """Pick the container format the way torch.load does (start bytes, then tar, then pickle)."""
    stream.seek(0, 2)
    size = stream.tell()
    stream.seek(0)
    head = stream.read(len(_ZIP_MAGIC))
    stream.seek(0)
    if not head:
        raise _Corrupt("empty file")
    budget = allocation_budget(size)
    if head == _ZIP_MAGIC:
        result = ScanResult(path or Path("<stream>"), zip=True)
        _scan_zip(stream, result, budget)
        return result
    if _is_tar(stream):
        raise _Corrupt("torch's pre-0.4 .tar checkpoint format is not supported")
    bounded = _Bounded(stream, size)
    return ScanResult(path or Path("<stream>"), zip=False, pickles={"": _scan_pickles(bounded, "", True, budget)})


def scan_checkpoint(path: Path) -> ScanResult:
    """Refuse a pickled checkpoint unless every global its pickles import is allowed.

    Handles torch zip archives (every ``.pkl`` member, read as torch's reader reads it; ambiguous
    archives refused), the legacy non-zip format and plain pickle files, without unpickling
    anything. Raises :class:`UnsafeCheckpointError` naming the offending global (or an
    allocation beyond the file's budget), or :class:`TargetError` when the file is corrupt,
    truncated, ambiguous or unreadable; both carry a one-line cause.
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            return _scan_stream(stream, path)
    except _Refused as exc:
        raise UnsafeCheckpointError(path, str(exc)) from None
    except _Corrupt as exc:
        raise TargetError(path, str(exc)) from exc
    except OSError as exc:
        raise TargetError(path, f"cannot read the file: {_one_line(exc.strerror or exc)}") from exc


def loadable_copy(scan: ScanResult) -> io.BytesIO:
    """An in-memory copy of a scanned checkpoint whose protocol-4 pickles are rewritten as the
    equivalent protocol-2 pickles torch's weights-only loader reads (the same values; see
    :mod:`initaudit.loaders.pickle_transcode`). Raises TargetError when no rewrite exists."""
    from initaudit.loaders.pickle_transcode import Untranscodable, to_protocol_2

    try:
        with scan.path.open("rb") as stream:
            if not scan.zip:
                data = stream.read()
                out, last = [], 0
                for p in scan.pickles.get("", []):
                    out += [data[last:p.span[0]], to_protocol_2(data, p)]
                    last = p.span[1]
                return io.BytesIO(b"".join([*out, data[last:]]))
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
                for member in read_members(stream):
                    data = read_member(stream, member)
                    scans = scan.pickles.get(member.name)
                    if scans and scans[0].proto >= 4:
                        data = b"".join(to_protocol_2(data, p) for p in scans)
                    archive.writestr(member.name, data)
    except Untranscodable as exc:
        raise TargetError(scan.path, f"a protocol-4 pickle torch's weights-only loader cannot read "
                                     f"({exc}); re-save it with torch.save(obj, f) (protocol 2)") from None
    except ZipAmbiguous as exc:
        raise TargetError(scan.path, f"corrupt zip checkpoint: {_one_line(exc)}") from None
    except OSError as exc:
        raise TargetError(scan.path, f"cannot read the file: {_one_line(exc.strerror or exc)}") from None
    buffer.seek(0)
    return buffer
