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


class UnsafeCheckpointError(TargetError):
    """A pickle that would import something outside the allow-list, i.e. could run code."""


class ConfigError(InitAuditError):
    """A bad configuration key or value."""


class ProbeRequestError(InitAuditError):
    """An explicit probe request the model cannot honour (--batch-size on a fixed-batch model,
    --input-shape naming no input, --inputs of the wrong shape or type)."""
