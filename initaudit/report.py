"""The result of an audit: findings, the per-layer table and a summary (JSON schema_version 1)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from initaudit import __version__
from initaudit.rule import Finding, Severity

SCHEMA_VERSION = 1
FAIL_ON = ("error", "warning", "info", "never")


@dataclass
class Report:
    target: str
    format: str
    stage: str
    stage_reason: str
    layers: list[dict[str, Any]]
    findings: list[Finding]
    fail_on: str = "error"
    probe: Any = None  # ProbeResult
    parameter_count: int = 0
    notes: list[str] = field(default_factory=list)  # what could not be determined
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, reason)
    rule_errors: list[str] = field(default_factory=list)  # plugins/rules that failed
    signal: list[dict[str, Any]] = field(default_factory=list)  # static depth profile
    rules_run: list[str] = field(default_factory=list)
    rule_meta: dict[str, dict[str, Any]] = field(default_factory=dict)  # code -> name, summary, ...
    suppressed: dict[str, int] = field(default_factory=dict)  # e.g. {"baseline": 3}
    source_path: str | None = None
    files_read: set[str] = field(default_factory=set)  # resolved paths; never written to
    #: {"path", "entries", "suppressed", "no_longer_found"} when a baseline was applied
    baseline: dict[str, Any] | None = None
    baselined: list[Finding] = field(default_factory=list)  # findings the baseline suppressed
    #: How the graph's dataflow was found (ModelGraph.capture): "fx", "trace", "onnx",
    #: "module-order", or None when there is no architecture.
    capture: str | None = None
    #: Warnings for stderr (the CLI prints them): e.g. a probe that was not asked for and could
    #: not run. Each is also in ``notes``.
    warnings: list[str] = field(default_factory=list)
    #: Why code from the target ran while it was loaded (``--unsafe-pickle``), or None.
    code_ran: str | None = None

    def count(self, severity: Severity) -> int:
        return sum(1 for f in self.findings if f.severity is severity)

    @property
    def failed(self) -> bool:
        if self.fail_on == "never":
            return False
        threshold = Severity(self.fail_on).rank
        return any(f.severity.rank >= threshold for f in self.findings)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0

    def summary(self) -> dict[str, Any]:
        return {"errors": self.count(Severity.ERROR), "warnings": self.count(Severity.WARNING),
                "infos": self.count(Severity.INFO), "fail_on": self.fail_on, "failed": self.failed}

    def to_json(self) -> dict[str, Any]:
        """The public JSON document (docs/json-output.md)."""
        probe = self.probe.to_json() if self.probe is not None else {
            "ran": False, "batch_size": None, "seed": None, "inputs": None,
            "skipped_reason": "probe not run"}
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": {"name": "initaudit", "version": __version__},
            "target": self.target,
            "format": self.format,
            "code_ran": self.code_ran,
            "capture": self.capture,
            "stage": self.stage,
            "stage_reason": self.stage_reason,
            "parameter_count": self.parameter_count,
            "probe": probe,
            "layers": self.layers,
            "findings": [f.to_json() for f in self.findings],
            "signal": self.signal,
            "not_analysed": [{"name": n, "reason": r} for n, r in self.skipped],
            "notes": self.notes,
            "rule_errors": self.rule_errors,
            "suppressed": self.suppressed,
            "baseline": self.baseline,
            "summary": self.summary(),
        }

    def to_json_str(self, indent: int | None = 2) -> str:
        return json.dumps(clean_json(self.to_json()), indent=indent, allow_nan=False, default=_jsonable)

    def to_html(self) -> str:
        """The self-contained HTML page (:mod:`initaudit.reporters.html`); its activation and
        weight histograms need ``audit(..., probe_histograms=True)``."""
        from initaudit.reporters.html import render

        return render(self)

    def __rich__(self):
        from initaudit.reporters.rich_report import render

        return render(self)


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    return str(obj)


def clean_json(obj: Any) -> Any:
    """JSON has no NaN/Inf: such values are written as null (the finding's message says why)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: clean_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean_json(v) for v in obj]
    return obj
