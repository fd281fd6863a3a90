"""Markdown output (``--format markdown`` / ``--markdown FILE``): a pull-request comment or a
GitHub job summary. Verdict, counts, a findings table, and the per-layer table folded away in
``<details>``. Deterministic (no timestamps, versions or absolute paths beyond the target as given)
so that it can be compared with a golden file, and bounded in size (GitHub caps a comment at
65,536 characters).
"""

from __future__ import annotations

from typing import Any

from initaudit.report import Report
from initaudit.reporters.grouping import explain_hint, group_findings
from initaudit.rule import fmt

MARKER = "<!-- initaudit-report -->"  # lets a CI script find and update its own comment
BADGES = {"error": "🔴 error", "warning": "🟡 warning", "info": "🔵 info"}
MAX_FINDINGS = 100  # groups of findings (by rule and cause), one table row each
MAX_LAYERS = 300
MAX_CHARS = 60_000  # GitHub caps a comment at 65,536 characters; room for a CI script's own text
GROUP_LAYERS = 8  # layers named in a group's row


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
    if getattr(report, "code_ran", None):
        lines += ["", f"⚠️ **Code ran**: {_text(report.code_ran)}"]
    return lines


def _findings(report: Report, limit: int = MAX_FINDINGS) -> list[str]:
    if not report.findings:
        return ["No findings."]
    groups = group_findings(report.findings)
    lines = ["| Severity | Rule | Layers | Finding |", "|---|---|---|---|"]
    for g in groups[:limit]:
        body = _text(g.message())
        if g.fix:
            body += f"<br>fix: {_code(g.fix)}"
        names = ", ".join(_code(n) for n in g.layers[:GROUP_LAYERS])
        if len(g.layers) > GROUP_LAYERS:
            names += f" … (+{len(g.layers) - GROUP_LAYERS} more)"
        count = f" ×{len(g.findings)}" if len(g.findings) > 1 else ""
        lines.append(f"| {BADGES[g.severity.value]} | {_code(g.rule)} {_text(g.name)}{count} | {names} | {body} |")
    if len(groups) > limit:
        rest = groups[limit:]
        lines += ["", f"… and {_plural(sum(len(g.findings) for g in rest), 'more finding')} in "
                      f"{_plural(len(rest), 'more group')} left out to stay under GitHub's comment limit "
                      "(the JSON and SARIF reports have every finding)."]
    if len(groups) < len(report.findings):
        lines += ["", f"{_plural(len(report.findings), 'finding')} in {_plural(len(groups), 'group')} "
                      "(same rule and cause); the JSON and SARIF reports list each layer."]
    hint = explain_hint(report.findings, quote=lambda s: f"`{s}`")
    if hint:
        lines += ["", hint + "."]
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
        lines += ["", f"… and {len(report.layers) - limit} more layers (see the JSON report)."]
    return lines


def _details(summary: str, body: list[str]) -> list[str]:
    return ["<details>", f"<summary>{summary}</summary>", "", *body, "", "</details>"]


def render(report: Report) -> str:
    """The Markdown document for ``report``, at most MAX_CHARS characters; whatever is left out to
    stay under that is named in the document."""
    notes = [*report.notes, *(f"not analysed: {n}: {r}" for n, r in report.skipped)]
    finding_limit, layer_limit, note_limit = MAX_FINDINGS, MAX_LAYERS, len(notes)
    while True:
        head = [MARKER, *_verdict(report), ""]
        status = _status(report)
        if status:
            head += [*status, ""]
        head += [*_findings(report, finding_limit), ""]
        extra: list[str] = []
        if notes:
            shown = [f"- {_text(n)}" for n in notes[:note_limit]]
            if note_limit < len(notes):
                shown.append(f"- … and {len(notes) - note_limit} more notes (see the JSON report)")
            extra += _details(f"Notes ({len(notes)})", shown) + [""]
        layers = _details(f"Per-layer details ({_plural(len(report.layers), 'layer')})",
                          _layer_rows(report, layer_limit)) + [""] if layer_limit else \
            [f"Per-layer details ({_plural(len(report.layers), 'layer')}) left out to stay under GitHub's "
             "comment limit; see the JSON report.", ""]
        text = "\n".join([*head, *layers, *extra]).rstrip() + "\n"
        if len(text) <= MAX_CHARS:
            return text
        if layer_limit > 10:
            layer_limit //= 2
        elif layer_limit:
            layer_limit = 0
        elif note_limit > 5:
            note_limit //= 2
        elif finding_limit > 5:
            finding_limit //= 2
        else:  # pathological messages: cut, and say so
            cut = "\n\n… (report cut at GitHub's comment limit; see the JSON report)\n"
            return text[: MAX_CHARS - len(cut)] + cut
