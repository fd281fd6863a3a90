"""A strict reader of torch zip checkpoints: the pickle scan reads exactly the records torch's
reader (miniz) will load, and refuses archives two readers could read differently.

Python's :mod:`zipfile` and miniz disagree on damaged or crafted archives: zipfile tolerates data
before the archive (it shifts every offset), either reader may pick a different end record when
there are several, and entries may overlap. A scanner that reads one view while torch loads the
other is bypassed, so an archive is accepted only when it has a single unambiguous reading:

- exactly one end-of-central-directory record, ending the file (no trailing data);
- the central directory exactly where that record says (no prepended data) and exactly as long;
- unique member names (torch looks names up case-insensitively, so unique ignoring case);
- each member's local header agreeing with its central entry (name, method, sizes, CRC);
- no two members' bytes overlapping each other or the central directory; no encryption.

Member data are taken where miniz takes them: after the *local* header's name and extra field.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import IO

__all__ = ["ZipAmbiguous", "ZipMember", "read_members", "read_member"]

_EOCD = b"PK\x05\x06"
_EOCD64 = b"PK\x06\x06"
_LOC64 = b"PK\x06\x07"
_CENTRAL = b"PK\x01\x02"
_LOCAL = b"PK\x03\x04"
_DESCRIPTOR = b"PK\x07\x08"
_EOCD_SIZE = 22
_MAX_COMMENT = 0xFFFF
_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_STORED, _DEFLATED = 0, 8


class ZipAmbiguous(Exception):
    """The archive is damaged or could be read differently by another zip reader."""


@dataclass(frozen=True)
class ZipMember:
    name: str
    offset: int  # the local header
    method: int
    crc: int
    compressed: int
    size: int
    data_start: int  # where miniz reads the member's bytes
    end: int  # end of the member's bytes (data descriptor included)


def _unpack(fmt: str, data: bytes, offset: int = 0) -> tuple:
    try:
        return struct.unpack_from(fmt, data, offset)
    except struct.error:
        raise ZipAmbiguous("truncated zip record") from None


def _read_at(stream: IO[bytes], offset: int, n: int) -> bytes:
    if offset < 0 or n < 0 or offset > (1 << 62) or n > (1 << 62):
        raise ZipAmbiguous(f"offset {offset} or length {n} out of range (corrupt archive)")
    try:
        end = stream.seek(0, 2)
        if offset + n > end:
            raise ZipAmbiguous(f"truncated: {n} bytes expected at byte {offset}, the file has {end}")
        stream.seek(offset)
        data = stream.read(n)
    except (OverflowError, ValueError, MemoryError, OSError) as exc:
        raise ZipAmbiguous(f"cannot read {n} bytes at byte {offset} ({exc})") from None
    if len(data) != n:
        raise ZipAmbiguous(f"truncated: {n} bytes expected at byte {offset}, {len(data)} present")
    return data


def _find_end(stream: IO[bytes], size: int) -> tuple[int, bytes]:
    """The end record: the only one in the last 64 KiB, and ending the file."""
    tail_start = max(0, size - _EOCD_SIZE - _MAX_COMMENT)
    tail = _read_at(stream, tail_start, size - tail_start)
    found = []
    pos = tail.rfind(_EOCD)
    while pos >= 0:
        if pos + _EOCD_SIZE <= len(tail):
            found.append(pos)
        pos = tail.rfind(_EOCD, 0, pos)
    if not found:
        raise ZipAmbiguous("no end-of-central-directory record (truncated or not a zip archive)")
    plausible = []
    for pos in found:
        comment = _unpack("<H", tail, pos + 20)[0]
        ends_file = pos + _EOCD_SIZE + comment == len(tail)
        cd_size, cd_offset = _unpack("<II", tail, pos + 12)
        points_here = cd_offset + cd_size == tail_start + pos
        if ends_file or points_here:
            plausible.append((pos, ends_file))
    if len(plausible) > 1:
        raise ZipAmbiguous(f"{len(plausible)} end-of-central-directory records: the archive has "
                           "several central directories, which zip readers resolve differently")
    if not plausible or not plausible[0][1]:
        raise ZipAmbiguous("data after the end of the zip archive (trailing bytes), which zip "
                           "readers treat differently")
    pos = plausible[0][0]
    return tail_start + pos, tail[pos:pos + _EOCD_SIZE]


def _directory(stream: IO[bytes], size: int) -> tuple[int, int, int]:
    """(entries, central directory offset, its size) from the end record (zip64 when flagged)."""
    eocd_at, rec = _find_end(stream, size)
    disk, cd_disk, n_disk, n_total, cd_size, cd_offset = _unpack("<HHHHII", rec, 4)
    if disk or cd_disk or n_disk != n_total:
        raise ZipAmbiguous("multi-disk (spanned) zip archives are not supported")
    directory_end = eocd_at
    loc = _read_at(stream, eocd_at - 20, 20) if eocd_at >= 20 else b""
    if loc[:4] == _LOC64:  # torch writes zip64 records into every archive
        rec64_at = _unpack("<Q", loc, 8)[0]
        rec64 = _read_at(stream, rec64_at, 56)
        if rec64[:4] != _EOCD64 or rec64_at + 56 > eocd_at - 20:
            raise ZipAmbiguous("bad zip64 end-of-central-directory record")
        n_total, cd_size, cd_offset = _unpack("<QQQ", rec64, 32)
        if rec64_at + 12 + _unpack("<Q", rec64, 4)[0] != eocd_at - 20:
            raise ZipAmbiguous("data between the zip64 end record and its locator")
        directory_end = rec64_at
    elif _U32 in (cd_size, cd_offset) or n_total == _U16:
        raise ZipAmbiguous("zip64 archive without its zip64 locator")
    if cd_offset + cd_size != directory_end:
        raise ZipAmbiguous("the central directory is not where the end record says (data before "
                           "or inside the archive), which zip readers resolve differently")
    return n_total, cd_offset, cd_size


def _zip64_extra(extra: bytes, usize: int, csize: int, offset: int) -> tuple[int, int, int]:
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = _unpack("<HH", extra, pos)
        if tag == 1:
            body, at = extra[pos + 4:pos + 4 + length], 0
            values = []
            for value in (usize, csize, offset):
                if value == _U32:
                    values.append(_unpack("<Q", body, at)[0])
                    at += 8
                else:
                    values.append(value)
            return values[0], values[1], values[2]
        pos += 4 + length
    if _U32 in (usize, csize, offset):
        raise ZipAmbiguous("zip64 sizes without a zip64 extra field")
    return usize, csize, offset


def _central_entries(stream: IO[bytes], n: int, cd_offset: int, cd_size: int) -> list[tuple]:
    data = _read_at(stream, cd_offset, cd_size)
    pos, entries = 0, []
    for _ in range(n):
        if data[pos:pos + 4] != _CENTRAL:
            raise ZipAmbiguous("bad central directory entry (corrupt archive)")
        (flags, method, _t, _d, crc, csize, usize, nlen, xlen, clen, _disk, _ia, _ea,
         offset) = _unpack("<8xHHHHIIIHHHHHII", data, pos)
        name_raw = data[pos + 46:pos + 46 + nlen]
        extra = data[pos + 46 + nlen:pos + 46 + nlen + xlen]
        if len(name_raw) != nlen or len(extra) != xlen:
            raise ZipAmbiguous("truncated central directory")
        usize, csize, offset = _zip64_extra(extra, usize, csize, offset)
        entries.append((name_raw, flags, method, crc, csize, usize, offset))
        pos += 46 + nlen + xlen + clen
    if pos != len(data):
        raise ZipAmbiguous("the central directory holds more than its entries")
    return entries


def _member(stream: IO[bytes], entry: tuple, size: int) -> ZipMember:
    name_raw, flags, method, crc, csize, usize, offset = entry
    name = name_raw.decode("utf-8" if flags & 0x800 else "cp437", errors="replace")
    if flags & 0x41:
        raise ZipAmbiguous(f"member {name!r} is encrypted")
    if method not in (_STORED, _DEFLATED):
        raise ZipAmbiguous(f"member {name!r} uses compression method {method} (torch reads stored "
                           "or deflated members only)")
    local = _read_at(stream, offset, 30)
    if local[:4] != _LOCAL:
        raise ZipAmbiguous(f"member {name!r}: no local header where the central directory points")
    (lflags, lmethod, _t, _d, lcrc, lcsize, lusize, lnlen, lxlen) = _unpack("<4xHHHHIIIHH", local, 2)
    lname = _read_at(stream, offset + 30, lnlen)
    if lname != name_raw or lmethod != method:
        raise ZipAmbiguous(f"member {name!r}: its local header disagrees with the central "
                           "directory (name or method)")
    sizes_agree = lcsize in (_U32, csize) and lusize in (_U32, usize)
    if not lflags & 0x8 and (lcrc != crc or not sizes_agree):
        raise ZipAmbiguous(f"member {name!r}: its local header disagrees with the central "
                           "directory (sizes or CRC)")
    data_start = offset + 30 + lnlen + lxlen
    end = data_start + csize
    if lflags & 0x8:  # a data descriptor follows the data
        if end + 4 <= size and _read_at(stream, end, 4) == _DESCRIPTOR:
            end += 4
        end += 20 if max(csize, usize) >= _U32 else 12
    if method == _STORED and csize != usize:
        raise ZipAmbiguous(f"stored member {name!r} has different stored and real sizes")
    return ZipMember(name, offset, method, crc, csize, usize, data_start, end)


def read_members(stream: IO[bytes]) -> list[ZipMember]:
    """Every member as torch's reader sees it, or :class:`ZipAmbiguous` with the cause."""
    stream.seek(0, 2)
    size = stream.tell()
    n, cd_offset, cd_size = _directory(stream, size)
    if n > (cd_size // 46 if cd_size else 0):
        raise ZipAmbiguous(f"the end record claims {n} entries, more than the central directory holds")
    members = [_member(stream, e, size) for e in _central_entries(stream, n, cd_offset, cd_size)]
    seen: dict[str, str] = {}
    for m in members:
        key = m.name.lower()
        if key in seen:
            raise ZipAmbiguous(f"two members named {m.name!r} (torch matches names ignoring case), "
                               "so readers may load different ones")
        seen[key] = m.name
    spans = sorted((m.offset, m.end, m.name) for m in members)
    for (s0, e0, n0), (s1, _e1, n1) in zip(spans, spans[1:]):
        if s1 < e0:
            raise ZipAmbiguous(f"members {n0!r} and {n1!r} overlap, so readers may see different bytes")
    if spans and spans[-1][1] > cd_offset:
        raise ZipAmbiguous(f"member {spans[-1][2]!r} overlaps the central directory")
    return members


def read_member(stream: IO[bytes], member: ZipMember) -> bytes:
    """The member's bytes, decompressed within its declared size, CRC checked."""
    raw = _read_at(stream, member.data_start, member.compressed)
    if member.method == _DEFLATED:
        inflater = zlib.decompressobj(-15)
        try:
            data = inflater.decompress(raw, member.size + 1)
        except zlib.error as exc:
            raise ZipAmbiguous(f"member {member.name!r}: corrupt compressed data ({exc})") from None
        if len(data) != member.size:
            raise ZipAmbiguous(f"member {member.name!r}: decompresses to a different size than declared")
    else:
        data = raw
    if zlib.crc32(data) != member.crc:
        raise ZipAmbiguous(f"member {member.name!r}: CRC mismatch (corrupt archive)")
    return data
