"""Keep the report stream clean: while models are loaded and probed, file descriptor 1 points at
stderr, so whatever a native library prints (onnxruntime's "EP Error" banner, a model's own
print()) never lands in ``--format json`` output. The report is written after the real stdout
is restored."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (AttributeError, OSError, ValueError):
            pass


@contextlib.contextmanager
def stdout_to_stderr() -> Iterator[None]:
    """Point fd 1 (and ``sys.stdout`` when it is the process's real stdout) at stderr for the
    duration; restored exactly afterwards, also on errors. A no-op where fd 1 or 2 is not open."""
    _flush()
    try:
        saved = os.dup(1)
    except OSError:
        yield
        return
    try:
        os.dup2(2, 1)
    except OSError:
        os.close(saved)
        yield
        return
    try:
        yield
    finally:
        _flush()
        os.dup2(saved, 1)
        os.close(saved)
