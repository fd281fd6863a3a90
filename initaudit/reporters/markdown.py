"""Markdown output (``--format markdown`` / ``--markdown FILE``): a pull-request comment or a
GitHub job summary. Verdict, counts, a findings table, and the per-layer table folded away in
``<details>``. Deterministic (no timestamps, versions or absolute paths beyond the target as given)
so that it can be compared with a golden file, and bounded in size (GitHub caps a comment at
65,536 characters).
"""

from __future__ import annotations

from typing import Any

from initaudit.report import Report
from initaudit.rule import fmt

MARKER = "<!-- initaudit-report -->"  # lets a CI script find and update its own comment
BADGES = {"error": "🔴 error", "warning": "🟡 warning", "info": "🔵 info"}
MAX_FINDINGS = 100
MAX_LAYERS = 300
MAX_CHARS = 60_000


def _text(s: Any) -> str:
    """Plain text safe inside a Markdown table cell."""
    out = str(s).replace("\\", "\\\\")
    for ch in "*_`[]|":
        out = out.replace(ch, "\\" + ch)
    return out.replace("<", "&lt;").replace(">", "&gt;").replace("\r", "").replace("\n", "<br>")


def _code(s: Any) -> str:
    """An inline code span safe inside a table cell."""
    text = str(s).replace("\n", " ").replace("|", "\\|")
    fence = "``" if "`" in text else "`"
    pad = " " if fence == "``" else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _num(x: Any) -> str:
    return "–" if x is None else fmt(float(x))


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _verdict(report: Report) -> list[str]:
    s = report.summary()
    icon, word = ("❌", "FAIL") if report.failed else ("✅", "PASS")
    counts = (f"{_plural(s['errors'], 'error')} · {_plural(s['warnings'], 'warning')} · "
              f"{s['infos']} info")
    lines = [f"## {icon} initaudit: {word}", "",
             f"**{counts}** (fail-on `{report.fail_on}`)", "",
             f"Target {_code(report.target)} · {report.format} · {report.parameter_count:,} parameters · "
             f"stage {report.stage}"]
    probe = report.probe
    if probe is not None and getattr(probe, "ran", False):
        lines[-1] += f" · probe: batch {probe.batch_size}, seed {probe.seed}"
    return lines


def _findings(report: Report) -> list[str]:
    if not report.findings:
        return ["No findings."]
    lines = ["| Severity | Rule | Layer | Finding |", "|---|---|---|---|"]
    for f in report.findings[:MAX_FINDINGS]:
        body = _text(f.message)
        if f.fix:
            body += f"<br>fix: {_code(f.fix)}"
        lines.append(f"| {BADGES[f.severity.value]} | {_code(f.rule)} {_text(f.name)} | {_code(f.layer)} | {body} |")
    if len(report.findings) > MAX_FINDINGS:
        lines += ["", f"… and {len(report.findings) - MAX_FINDINGS} more findings (see the JSON or SARIF report)."]
    return lines


def _status(report: Report) -> list[str]:
    lines = []
    if report.baseline:
        b = report.baseline
        gone = b["no_longer_found"]
        lines.append(f"> {_plural(b['suppressed'], 'finding')} suppressed by the baseline "
                     f"{_code(b['path'])}; {_plural(gone, 'baseline entry', 'baseline entries')} no longer "
                     f"{'occurs' if gone == 1 else 'occur'}.")
    if report.suppressed.get("per-layer-ignores"):
        n = report.suppressed["per-layer-ignores"]
        lines.append(f"> {_plural(n, 'finding')} suppressed by per-layer ignores.")
    for err in report.rule_errors:
        lines.append(f"> ⚠️ **rule error:** {_text(err)}")
    return [line for pair in zip(lines, [""] * len(lines)) for line in pair][:-1] if lines else []


def _layer_rows(report: Report, limit: int) -> list[str]:
    flagged = {f.layer for f in report.findings}
    lines = ["| | Parameter | Op | Shape | Fan in→out | Next | Schemes | Std | Expected | Ratio |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in report.layers[:limit]:
        mark = "⚠️" if r["param"] in flagged or r["name"] in flagged else ""
        nxt = r.get("activation") or ("norm" if r.get("normalized_after") else
                                      "output" if r.get("is_output") else "–")
        if r.get("normalized_after") and r.get("activation"):
            nxt += "+norm"
        exp = r.get("expected")
        fans = f"{r['fan_in']}→{r['fan_out']}" if r.get("fan_in") else "–"
        ratio = f"{r['ratio']:.2f}x" if r.get("ratio") else "–"
        lines.append(f"| {mark} | {_code(r['param'])} | {_text(r['op'])} | {'×'.join(map(str, r['shape']))} | "
                     f"{fans} | {_text(nxt)} | {_text(', '.join(r.get('matched_schemes') or []) or '–')} | "
                     f"{_num(r['stats']['std'])} | {_num(exp['std']) if exp else '–'} | {ratio} |")
    if len(report.layers) > limit:
        lines += ["", f"… and {len(report.layers) - limit} more layers."]
    return lines


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>"]


def render(report: Report) -> str:
    """The Markdown document for ``report``."""
    head = [MARKER, *_verdict(report), ""]
    status = _status(report)
    if status:
        head += [*status, ""]
    head += [*_findings(report), ""]
    extra: list[str] = []
    notes = [*report.notes, *(f"not analysed: {n}: {r}" for n, r in report.skipped)]
    if notes:
        extra += _details(f"Notes ({len(notes)})", [f"- {_text(n)}" for n in notes]) + [""]
    limit = MAX_LAYERS
    while True:
        layers = _details(f"Per-layer details ({_plural(len(report.layers), 'layer')})",
                          _layer_rows(report, limit)) + [""]
        text = "\n".join([*head, *layers, *extra]).rstrip() + "\n"
        if len(text) <= MAX_CHARS or limit <= 10:
            return text
        limit //= 2
