"""onnxruntime in an isolated process: the parent side of :mod:`initaudit.probe.ort_worker`.

A native crash (a segfault), an allocation beyond the address-space limit or a run past the
timeout ends the worker, never initaudit: :class:`RuntimeCrash` carries the one-line cause and
the probe is reported as skipped while the static audit reports as usual.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from initaudit.probe import ort_worker as wire

WORKER = Path(wire.__file__)
_BASE_LIMIT = 4 << 30  # address space of the worker beyond what the model's own bytes need
DEFAULT_TIMEOUT = 600.0


class RuntimeCrash(Exception):
    """onnxruntime's process died (signal, memory limit) or did not finish in time."""


def memory_limit(model_bytes: int) -> int:
    """Address space for the worker: 4 GiB plus four times the model's bytes (the session keeps
    a copy of each initializer and arenas for the outputs); ``INITAUDIT_PROBE_MEMORY`` (bytes,
    0 = unlimited) overrides it."""
    env = os.environ.get("INITAUDIT_PROBE_MEMORY")
    if env is not None and env.strip().isdigit():
        return int(env)
    return _BASE_LIMIT + 4 * max(0, model_bytes)


def timeout_seconds() -> float:
    """Seconds one run may take (``INITAUDIT_PROBE_TIMEOUT``, default 600)."""
    try:
        return float(os.environ.get("INITAUDIT_PROBE_TIMEOUT", DEFAULT_TIMEOUT))
    except ValueError:
        return DEFAULT_TIMEOUT


def worker_paths() -> list[str]:
    """The folders that hold numpy and onnxruntime: the worker's only ``sys.path`` entries
    beyond the standard library (found without importing either)."""
    paths = []
    for name in ("numpy", "onnxruntime"):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin:
            folder = str(Path(spec.origin).resolve().parent.parent)
            if folder not in paths:
                paths.append(folder)
    return paths


class IsolatedRuntime:
    """One worker process serving every run of one probe (the parts of a segmented graph, a
    retry of the whole graph). :meth:`start` launches it early, so its imports (about 0.5 s:
    numpy and onnxruntime) run while the caller works; otherwise it starts on first use.
    ``memory`` (the address-space limit) may be set any time before the first run."""

    def __init__(self, memory: int = 0, timeout: float | None = None):
        self.memory = memory
        self.timeout = timeout_seconds() if timeout is None else timeout
        self.proc: subprocess.Popen | None = None
        self.log = None
        self.timed_out = False
        self.requests = 0

    def __enter__(self) -> IsolatedRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> IsolatedRuntime:
        """Launch the worker now (idempotent); it imports onnxruntime and waits for a request."""
        self._start()
        return self

    def _start(self) -> subprocess.Popen:
        if self.proc is None:
            self.log = tempfile.TemporaryFile()
            self.timed_out = False
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-S", str(WORKER), *worker_paths()],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
                cwd=tempfile.gettempdir())
        return self.proc

    def run(self, blob: bytes, fetch: list[str], inputs: Mapping[str, np.ndarray],
            initializers: Mapping[str, np.ndarray], threads: int, external_dir: str | None) -> list:
        """Outputs in ``fetch`` order (None for a non-numeric output). onnxruntime's own errors
        raise RuntimeError with its message; a dead or hung worker raises RuntimeCrash."""
        proc = self._start()
        self.requests += 1
        request = {"model": len(blob), "inputs": list(inputs), "initializers": list(initializers),
                   "fetch": list(fetch), "threads": int(threads), "external_dir": external_dir,
                   "memory": int(self.memory)}
        timer = threading.Timer(self.timeout, self._kill)
        timer.start()
        try:
            out = proc.stdin
            wire.write_frame(out, json.dumps(request).encode())
            out.write(blob)
            for arr in (*inputs.values(), *initializers.values()):
                wire.write_array(out, arr)
            out.flush()
            frame = wire.read_frame(proc.stdout)
            if frame is None:
                raise EOFError("no reply")
            reply = json.loads(frame)
            if not reply.get("ok"):
                raise RuntimeError(str(reply.get("error", "onnxruntime failed")))
            return [wire.read_array(proc.stdout) if name is not None else None
                    for name in reply["outputs"]]
        except (EOFError, BrokenPipeError, OSError, ValueError) as exc:
            raise RuntimeCrash(self._cause(exc)) from None
        finally:
            timer.cancel()

    def _kill(self) -> None:
        self.timed_out = True
        if self.proc is not None:
            self.proc.kill()

    def _cause(self, exc: BaseException) -> str:
        proc = self.proc
        try:
            rc = proc.wait(timeout=10) if proc is not None else None
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        if self.timed_out:
            return (f"onnxruntime did not finish within {self.timeout:g} s and was stopped "
                    "(INITAUDIT_PROBE_TIMEOUT sets the limit)")
        if rc is not None and rc < 0:
            try:
                name = signal.Signals(-rc).name
            except ValueError:
                name = f"signal {-rc}"
            what = f"onnxruntime crashed ({name}) while running the model"
        else:
            what = f"onnxruntime's process ended unexpectedly (exit status {rc})"
        last = self._last_log_line()
        return f"{what}; it ran in its own process, so only the probe is lost" + (
            f" (last output: {last})" if last else "")

    def _last_log_line(self) -> str:
        if self.log is None:
            return ""
        try:
            self.log.seek(0)
            lines = [ln.strip() for ln in self.log.read()[-4000:].decode("utf-8", "replace").splitlines()]
        except OSError:
            return ""
        lines = [ln for ln in lines if ln]
        return lines[-1][:200] if lines else ""

    def close(self) -> None:
        """End the worker: a clean exit after it served requests; at once when it never got one
        (a probe that did not run must not wait for its imports to finish)."""
        proc, self.proc = self.proc, None
        if proc is not None:
            if not self.requests:
                proc.kill()
            try:
                proc.stdin.close()
            except OSError:
                pass
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        if self.log is not None:
            self.log.close()
            self.log = None
