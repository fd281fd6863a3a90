"""Rewrite a scanned protocol-4 pickle as the equivalent protocol-2 pickle, for torch's
weights-only unpickler, which implements neither FRAME, MEMOIZE, SHORT_BINUNICODE nor
STACK_GLOBAL (torch.save(..., pickle_protocol=4) files are otherwise refused by torch itself).

The rewrite only changes how values are spelled, never which values are built:

- FRAME (a length hint) is dropped; PROTO 4 becomes PROTO 2;
- MEMOIZE becomes BINPUT/LONG_BINPUT with the key MEMOIZE would have used;
- SHORT_BINUNICODE and BINUNICODE8 become BINUNICODE;
- STACK_GLOBAL becomes GLOBAL "module name"; the module and name strings it consumed (and the
  memo operations that moved them) are left out. When one of those strings is also used as a
  value elsewhere the pickle cannot be rewritten this way and :class:`Untranscodable` is raised.

It runs only on pickles :mod:`initaudit.loaders.pickle_safety` has scanned (every import already
checked against the allow-list); the scan records the positions this needs.
"""

from __future__ import annotations

import pickletools
import struct
from typing import Any

__all__ = ["Untranscodable", "to_protocol_2"]

_STRING_PUSH = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING",
                "BINSTRING"}
_MEMO_MOVES = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "GET", "BINGET", "LONG_BINGET"}


class Untranscodable(Exception):
    """The pickle has no protocol-2 spelling the rewrite can produce."""


def _put(key: int) -> bytes:
    return b"q" + bytes([key]) if key < 256 else b"r" + struct.pack("<I", key)


def _unicode(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return b"X" + struct.pack("<I", len(raw)) + raw


def to_protocol_2(data: bytes, scan: Any) -> bytes:
    """``data[scan.span[0]:scan.span[1]]`` (one scanned pickle) spelled in protocol 2."""
    dropped = scan.global_strings
    if dropped & scan.other_strings:
        raise Untranscodable("a module or class name string is also used as a value")
    start, end = scan.span
    ops = list(pickletools.genops(data[start:end]))
    out: list[bytes] = []
    for i, (opcode, arg, pos) in enumerate(ops):
        at = start + pos  # positions the scan recorded are positions in ``data``
        nxt = ops[i + 1][2] if i + 1 < len(ops) else end - start
        name = opcode.name
        if name == "FRAME":
            continue
        if name == "PROTO":
            out.append(b"\x80\x02")
        elif name in _STRING_PUSH and at in dropped:
            continue
        elif name in _MEMO_MOVES and scan.origin.get(at) in dropped:
            continue
        elif name == "MEMOIZE":
            out.append(_put(scan.memo_index[at]))
        elif name in ("SHORT_BINUNICODE", "BINUNICODE8"):
            out.append(_unicode(arg))
        elif name == "STACK_GLOBAL":
            module, attr = scan.globals_at[at]
            if "\n" in module or "\n" in attr:
                raise Untranscodable("a global name contains a line break")
            out.append(b"c" + f"{module}\n{attr}\n".encode("utf-8"))
        else:
            out.append(data[at:start + nxt])
    return b"".join(out)
