"""The onnxruntime side of the ONNX probe, run in its own process (``python -I -S ort_worker.py``).

onnxruntime is native code; a model that passes onnx.checker can still crash it (a
LayerNormalization without its optional bias segfaults some versions). Running it here keeps a
crash, a runaway allocation (the process has an address-space limit) or a hang (the parent
kills it after a timeout) away from initaudit's own process, which reports one line and still
writes the static report.

Start-up is the cost of the imports: only the standard library, numpy and onnxruntime (no
initaudit, no torch), run as ``python -I -S`` (no site: no ``.pth`` file of the environment
runs) with the folders that hold numpy and onnxruntime as the only extra ``sys.path`` entries
(given as arguments). The imports run as soon as the process starts, before the first request:
the parent starts the worker while its static pass runs, and one worker serves every run of the
probe. Nothing is unpickled in either direction: requests and replies are length-prefixed JSON
headers followed by raw bytes and ``.npy`` arrays read with ``allow_pickle=False``. Anything
onnxruntime prints goes to stderr, never to the reply stream.

Request: {"model": N, "inputs": [...], "initializers": [...], "fetch": [...], "threads": T,
"external_dir": D, "memory": M} + N model bytes + one array per input, then per initializer.
``memory`` (bytes, 0 = none) is the address-space limit, set before the first model is read
and never raised afterwards.
Reply: {"ok": true, "outputs": [name or null]} + one array per non-null name, or
{"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from typing import IO, Any

if __name__ == "__main__":  # python -I -S: the folders of numpy and onnxruntime, nothing else
    sys.path[1:1] = [p for p in sys.argv[1:] if os.path.isabs(p)]

import numpy as np  # noqa: E402

_LEN = struct.Struct("<Q")


def write_frame(stream: IO[bytes], payload: bytes) -> None:
    stream.write(_LEN.pack(len(payload)))
    stream.write(payload)


def read_exact(stream: IO[bytes], n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = stream.read(min(left, 1 << 24))
        if not chunk:
            raise EOFError("stream ended")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def read_frame(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_LEN.size)
    if not head:
        return None
    if len(head) != _LEN.size:
        raise EOFError("stream ended inside a frame header")
    return read_exact(stream, _LEN.unpack(head)[0])


def write_array(stream: IO[bytes], arr: np.ndarray) -> None:
    """An array as a JSON header (dtype, shape) and its raw bytes: no pickle, no file position
    needed (pipes have none)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"cannot send a {arr.dtype} array")
    write_frame(stream, json.dumps({"dtype": arr.dtype.str, "shape": list(arr.shape)}).encode())
    write_frame(stream, memoryview(arr).cast("B") if arr.size else b"")


def read_array(stream: IO[bytes]) -> np.ndarray:
    frame = read_frame(stream)
    if frame is None:
        raise EOFError("stream ended before an array")
    head = json.loads(frame)
    dtype = np.dtype(str(head["dtype"]))
    if dtype.kind not in "biufc":
        raise ValueError(f"refusing a {dtype} array")
    shape = tuple(int(d) for d in head["shape"])
    n = _LEN.unpack(read_exact(stream, _LEN.size))[0]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize if shape else dtype.itemsize
    if n != expected or any(d < 0 for d in shape):
        raise ValueError("array size does not match its header")
    arr = np.empty(shape, dtype=dtype)
    view, got = memoryview(arr).cast("B") if n else memoryview(b""), 0
    while got < n:  # straight into the array: no intermediate copies of large outputs
        k = stream.readinto(view[got:got + (1 << 26)])
        if not k:
            raise EOFError("stream ended inside an array")
        got += k
    return arr


def session_options(ort: Any, threads: int, external_dir: str | None) -> Any:
    """SessionOptions: ``threads`` intra-op threads, no spinning, errors only in the log."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    so.add_session_config_entry("session.inter_op.allow_spinning", "0")
    so.log_severity_level = 3
    if external_dir:
        so.add_session_config_entry("session.model_external_initializers_file_folder_path", external_dir)
    return so


def _run(ort: Any, request: dict, blob: bytes, inputs: dict, inits: dict) -> list:
    so = session_options(ort, int(request.get("threads") or 1), request.get("external_dir"))
    if inits:
        names = list(inits)
        so.add_external_initializers(names, [ort.OrtValue.ortvalue_from_numpy(inits[n]) for n in names])
    session = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    return session.run(list(request["fetch"]), inputs)


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    import onnxruntime as ort  # before the first request: the import overlaps the parent's work

    limited = False
    while True:
        frame = read_frame(requests)
        if frame is None:
            return
        request = json.loads(frame)
        if not limited and int(request.get("memory") or 0) > 0:
            _limit_memory(int(request["memory"]))  # before any byte of the model is read
            limited = True
        blob = read_exact(requests, int(request["model"]))
        inputs = {name: read_array(requests) for name in request["inputs"]}
        inits = {name: read_array(requests) for name in request["initializers"]}
        try:
            outs = _run(ort, request, blob, inputs, inits)
        except MemoryError:
            reply: dict = {"ok": False, "error": "out of memory (beyond the probe's memory limit)"}
            write_frame(replies, json.dumps(reply).encode())
            replies.flush()
            continue
        except Exception as exc:
            text = " ".join(str(exc).split()) or type(exc).__name__
            write_frame(replies, json.dumps({"ok": False, "error": text[:2000]}).encode())
            replies.flush()
            continue
        del blob, inputs, inits
        arrays = [np.asarray(o) if o is not None else None for o in outs]
        names = [n if a is not None and a.dtype.kind in "biufc" else None
                 for n, a in zip(request["fetch"], arrays)]
        write_frame(replies, json.dumps({"ok": True, "outputs": names}).encode())
        for name, arr in zip(names, arrays):
            if name is not None:
                write_array(replies, arr)
        replies.flush()
        del outs, arrays


def _limit_memory(limit: int) -> None:
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    except (ImportError, ValueError, OSError):
        pass


def main(argv: list[str]) -> int:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # onnxruntime's own prints go to stderr, never into the reply stream
    sys.stdout = sys.stderr
    try:
        serve(sys.stdin.buffer, replies)
    except (EOFError, BrokenPipeError):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
