"""initaudit: a linter for neural-network weight initialisation.

    >>> import initaudit
    >>> report = initaudit.audit(model)          # an nn.Module, a checkpoint path, an ONNX file
    >>> print(report.summary()); report.to_json()

The command line (``initaudit TARGET``) is a thin layer over :func:`audit`.
"""

__version__ = "0.1.0"

from initaudit.engine import audit  # noqa: E402
from initaudit.report import Report  # noqa: E402
from initaudit.rule import Finding, Rule, Severity  # noqa: E402

__all__ = ["audit", "Report", "Finding", "Rule", "Severity", "__version__"]
