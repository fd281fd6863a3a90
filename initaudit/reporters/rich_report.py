"""The terminal report: header, per-layer table, depth profile, findings, verdict.

Rich renders colour on a terminal and plain text when piped or when NO_COLOR is set.
"""

from __future__ import annotations

import math
from typing import Any

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from initaudit.report import Report
from initaudit.rule import fmt

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_MAX_ROWS = 60  # larger models: the table shows flagged layers plus the first rows


def _num(x: Any) -> str:
    return "-" if x is None else fmt(float(x))


def _header(report: Report) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("target", report.target)
    t.add_row("format", report.format)
    t.add_row("parameters", f"{report.parameter_count:,}")
    t.add_row("stage", f"{report.stage} ({report.stage_reason})")
    probe = report.probe
    if probe is not None and getattr(probe, "ran", False):
        t.add_row("probe", f"batch {probe.batch_size}, seed {probe.seed}, {probe.inputs} inputs")
    elif probe is not None:
        t.add_row("probe", f"not run: {probe.skipped_reason}")
    for note in report.notes:
        t.add_row("note", Text(note, style="dim"))
    for name, reason in report.skipped:
        t.add_row("not analysed", f"{name}: {reason}")
    for err in report.rule_errors:
        t.add_row(Text("rule error", style="red"), err)
    return t


def _layer_table(report: Report) -> Table:
    flagged = {f.layer for f in report.findings}
    rows = report.layers
    if len(rows) > _MAX_ROWS:
        rows = [r for i, r in enumerate(rows) if i < _MAX_ROWS // 2 or r["param"] in flagged
                or r["name"] in flagged]
    probe = any(r.get("probe") for r in rows)
    t = Table(title=f"Layers ({len(rows)} of {len(report.layers)} shown)" if len(rows) < len(report.layers)
              else "Layers", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for col, kw in [("param", {"overflow": "fold"}), ("op", {}), ("shape", {}), ("fan in→out", {}),
                    ("next", {}), ("scheme", {}), ("std", {"justify": "right"}),
                    ("expected", {"justify": "right"}), ("ratio", {"justify": "right"})]:
        t.add_column(col, **kw)
    if probe:
        t.add_column("act std", justify="right")
        t.add_column("dead", justify="right")
        t.add_column("sat", justify="right")
    for r in rows:
        style = "red" if r["param"] in flagged else None
        nxt = r["activation"] or ("norm" if r["normalized_after"] else "output" if r["is_output"] else "-")
        if r["normalized_after"] and r["activation"]:
            nxt += "+norm"
        exp = r["expected"]
        cells = [r["param"], r["op"], "×".join(map(str, r["shape"])),
                 f"{r['fan_in']}→{r['fan_out']}" if r["fan_in"] else "-", nxt,
                 ", ".join(r["matched_schemes"][:2]) or "-", _num(r["stats"]["std"]),
                 _num(exp["std"]) if exp else "-", f"{r['ratio']:.2f}x" if r.get("ratio") else "-"]
        if probe:
            p = r.get("probe") or {}
            cells += [_num(p.get("std")), _pct(p.get("dead_fraction")), _pct(p.get("saturated_fraction"))]
        t.add_row(*cells, style=style)
    return t


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def _bar(ratio: float, width: int = 24) -> Text:
    """log-scale bar: 1.0 in the middle, 100x either side at the ends."""
    if not ratio or not math.isfinite(ratio):
        return Text("")
    pos = max(-1.0, min(1.0, math.log10(ratio) / 2))
    half = width // 2
    n = int(round(abs(pos) * half))
    style = "green" if abs(pos) < 0.35 else "yellow" if abs(pos) < 1 else "red"
    if pos < 0:
        return Text(" " * (half - n) + "█" * n + "│", style=style)
    return Text(" " * half + "│" + "█" * n, style=style)


def _signal_table(report: Report) -> Table | None:
    if not report.signal:
        return None
    measured = {}
    probe = report.probe
    if probe is not None and getattr(probe, "ran", False):
        for row in report.layers:
            if row.get("probe") and row["probe"].get("std") is not None:
                measured[row["param"]] = row["probe"]["std"]
    t = Table(title="Signal through depth (predicted std of each layer's output, relative to where its "
                    "segment starts)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for col in ("layer", "depth", "predicted std", "ratio", "0.01x ← 1 → 100x"):
        t.add_column(col, justify="right" if col in ("depth", "predicted std", "ratio") else "left")
    if measured:
        t.add_column("measured std", justify="right")
    signal = report.signal
    if len(signal) > _MAX_ROWS:
        step = math.ceil(len(signal) / _MAX_ROWS)
        signal = signal[::step] + ([signal[-1]] if (len(signal) - 1) % step else [])
    for s in signal:
        cells = [s["layer"], str(s["depth"]), _num(s["predicted_std"]), f"{s['ratio']:.3g}x",
                 _bar(s["ratio"])]
        if measured:
            cells.append(_num(measured.get(s["param"])))
        t.add_row(*cells)
    return t


def _findings(report: Report) -> RenderableType:
    if not report.findings:
        return Text("No findings.", style="green")
    t = Table(title="Findings", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
              show_lines=False)
    t.add_column("severity")
    t.add_column("rule")
    t.add_column("layer", overflow="fold")
    t.add_column("message and fix", overflow="fold", ratio=1)
    for f in report.findings:
        body = Text(f.message)
        if f.fix:
            body.append("\nfix: ", style="bold").append(f.fix, style="green")
        t.add_row(Text(f.severity.value, style=SEVERITY_STYLE[f.severity.value]),
                  f"{f.rule} {f.name}".strip(), f.layer, body)
    return t


def verdict(report: Report) -> Text:
    s = report.summary()
    counts = f"{s['errors']} error(s), {s['warnings']} warning(s), {s['infos']} info"
    if report.failed:
        return Text(f"FAIL: {counts} (fail-on {report.fail_on})", style="bold red")
    return Text(f"PASS: {counts} (fail-on {report.fail_on})", style="bold green")


def render(report: Report) -> RenderableType:
    parts: list[RenderableType] = [Panel(_header(report), title="initaudit", title_align="left",
                                         box=box.ROUNDED), _layer_table(report)]
    signal = _signal_table(report)
    if signal is not None:
        parts.append(signal)
    parts += [_findings(report), verdict(report)]
    return Group(*parts)
