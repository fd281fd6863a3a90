"""initaudit: a linter for neural-network weight initialisation.

    >>> import initaudit
    >>> report = initaudit.audit(model)          # an nn.Module, a checkpoint path, an ONNX file
    >>> print(report.summary()); report.to_json()

The command line (``initaudit TARGET``) is a thin layer over :func:`audit`. Both read
``[tool.initaudit]`` from the nearest ``pyproject.toml`` (``audit(..., config=False)`` opts out).

The names below load on first use, so that ``import initaudit`` (and ``initaudit --version``,
``rules``, ``explain``, ``config``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {"audit": "initaudit.engine", "Report": "initaudit.report", "Finding": "initaudit.rule",
         "Rule": "initaudit.rule", "Severity": "initaudit.rule"}

__all__ = ["audit", "Report", "Finding", "Rule", "Severity", "__version__"]

if TYPE_CHECKING:
    from initaudit.engine import audit
    from initaudit.report import Report
    from initaudit.rule import Finding, Rule, Severity


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'initaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
