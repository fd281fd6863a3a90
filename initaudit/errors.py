"""Errors that end an audit with exit code 2 and one clear line naming the file and the cause."""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """The first non-empty line of an exception's message ("" when it has none): causes in
    exit-2 messages and reports stay on one line."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else ""


class InitAuditError(Exception):
    """Could not run: bad arguments, unreadable/corrupt/unsupported target, bad config (exit 2)."""

    exit_code = 2


class TargetError(InitAuditError):
    """A target that cannot be read. ``str()`` is ``"<target>: <cause>"``."""

    def __init__(self, target: object, cause: str):
        self.target = str(target)
        self.cause = cause
        super().__init__(f"{self.target}: {cause}")

    def __reduce__(self):  # rebuilt from (target, cause) when it crosses from a pool worker
        return type(self), (self.target, self.cause)


class UnsafeCheckpointError(TargetError):
    """A pickle that would import something outside the allow-list, i.e. could run code."""


class ConfigError(InitAuditError):
    """A bad configuration key or value."""


class RequestError(InitAuditError):
    """Something the user asked for explicitly (a flag, an ``audit()`` argument) that this run
    cannot honour: ``--model`` with a target that has its own architecture, ``--device cuda``
    without CUDA, probe inputs the model rejects. Never silently ignored (exit 2)."""


class ProbeRequestError(RequestError):
    """An explicit probe request (``--probe``, ``--inputs``, ``--input-shape``, ``--batch-size``,
    ``--device``) that the probe cannot honour. A probe raises it for such a request; a probe
    that was not asked for and cannot run returns ``ran=False`` instead (a warning and a note)."""
