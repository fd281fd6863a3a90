"""``--format concise``: one line per finding, for terminals and CI logs (as ruff's and flake8's
``path:line: CODE message``), then one summary line. Grep-able and diff-able: the layer is where
a file would have its line number.

    model.onnx:layers.3.weight: IA104 [warning] std 0.010 is 0.06x the Xavier std 0.167 ...
    Found 1 finding (0 errors, 1 warning, 0 info); fail-on error: PASS
"""

from __future__ import annotations

from initaudit.report import Report
from initaudit.reporters.grouping import explain_hint, statistics


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def finding_lines(report: Report) -> list[str]:
    return [f"{report.target}:{f.layer}: {f.rule} [{f.severity.value}] {_one_line(f.message)}"
            for f in report.findings]


def statistics_lines(report: Report) -> list[str]:
    """``--statistics``: ``count  CODE  name  (severities)``, most frequent first."""
    rows = statistics(report.findings)
    width = max((len(str(r.count)) for r in rows), default=1)
    return [f"{r.count:>{width}}  {r.rule:<6} {r.name}  ({r.severity_text()})" for r in rows]


def summary_line(report: Report) -> str:
    s = report.summary()
    n = len(report.findings)
    verdict = "FAIL" if report.failed else "PASS"
    return (f"Found {n} finding{'' if n == 1 else 's'} ({s['errors']} error{'' if s['errors'] == 1 else 's'}, "
            f"{s['warnings']} warning{'' if s['warnings'] == 1 else 's'}, {s['infos']} info); "
            f"fail-on {report.fail_on}: {verdict}")


def render(report: Report, statistics: bool = False) -> str:
    lines = finding_lines(report)
    if statistics and report.findings:
        lines += ["", *statistics_lines(report)]
    lines.append(summary_line(report))
    hint = explain_hint(report.findings)
    if hint:
        lines.append(hint)
    return "\n".join(lines) + "\n"
