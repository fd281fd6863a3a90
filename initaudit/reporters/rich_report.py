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
    if report.capture:
        t.add_row("dataflow", CAPTURE_LABELS.get(report.capture, report.capture))
    probe = report.probe
    if probe is not None and getattr(probe, "ran", False):
        convention = getattr(probe, "convention", None)
        t.add_row("probe", f"batch {probe.batch_size}, seed {probe.seed}, {probe.inputs} inputs"
                  + (f" ({convention})" if convention else ""))
    elif probe is not None:
        t.add_row("probe", f"not run: {probe.skipped_reason}")
    for note in report.notes:
        t.add_row("note", Text(note, style="dim"))
    for name, reason in report.skipped:
        t.add_row("not analysed", f"{name}: {reason}")
    if report.baseline:
        b = report.baseline
        t.add_row("baseline", f"{b['suppressed']} finding(s) suppressed by {b['path']} "
                              f"({b['entries']} entries); {b['no_longer_found']} baseline entr"
                              f"{'y no longer occurs' if b['no_longer_found'] == 1 else 'ies no longer occur'}")
    if report.suppressed.get("per-layer-ignores"):
        t.add_row("suppressed", f"{report.suppressed['per-layer-ignores']} finding(s) by per-layer ignores")
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
        t.add_column("|dW|/|W|", justify="right")
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
            cells += [_num(p.get("std")), _pct(p.get("dead_fraction")), _pct(p.get("saturated_fraction")),
                      _num(p.get("grad_to_weight"))]
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
    measured = any(s.get("measured_std") is not None for s in report.signal)  # the probe, per call site
    t = Table(title="Signal through depth (predicted std of each layer's output, relative to where its "
                    "segment starts)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for col in ("layer", "depth", "predicted std", "ratio", "0.01x ← 1 → 100x"):
        t.add_column(col, justify="right" if col in ("depth", "predicted std", "ratio") else "left")
    if measured:
        t.add_column("measured std", justify="right")
        t.add_column("measured ratio", justify="right")
    signal = report.signal
    if len(signal) > _MAX_ROWS:
        step = math.ceil(len(signal) / _MAX_ROWS)
        signal = signal[::step] + ([signal[-1]] if (len(signal) - 1) % step else [])
    for s in signal:
        cells = [s["layer"], str(s["depth"]), _num(s["predicted_std"]), f"{s['ratio']:.3g}x",
                 _bar(s["ratio"])]
        if measured:
            ratio = s.get("measured_ratio")
            cells += [_num(s.get("measured_std")), f"{ratio:.3g}x" if ratio is not None else "-"]
        t.add_row(*cells)
    return t


_SPARK = " ▁▂▃▄▅▆▇█"


def _histograms(report: Report) -> Table | None:
    """One line per site: the activation's output distribution (--histograms), so sigmoid
    piling at 0 and 1, tanh at -1 and 1, ReLU at 0 show at a glance."""
    probe = report.probe
    sites = [s for s in getattr(probe, "sites", None) or [] if s.histogram is not None
             and s.kind in ("layer", "norm", "act", "input")]
    if not sites:
        return None
    t = Table(title="Activation histograms (layer and norm sites show the output of the activation "
                    "that follows them)", box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False)
    for col, justify in (("site", "left"), ("activation", "left"), ("min", "right"),
                         ("distribution", "left"), ("max", "right")):
        t.add_column(col, justify=justify)
    for s in sites[:_MAX_ROWS]:
        edges, counts = s.histogram
        top = max(counts) or 1
        bars = "".join(_SPARK[0 if c == 0 else max(1, round(c / top * (len(_SPARK) - 1)))] for c in counts)
        t.add_row(s.name, str(s.activation) if s.activation else "-", _num(edges[0]),
                  Text(bars, style="cyan"), _num(edges[-1]))
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


CAPTURE_LABELS = {"trace": "recorded from a forward pass", "fx": "torch.fx symbolic trace",
                  "onnx": "ONNX graph", "module-order": "module registration order (a guess; see notes)"}


def render(report: Report) -> RenderableType:
    parts: list[RenderableType] = [Panel(_header(report), title="initaudit", title_align="left",
                                         box=box.ROUNDED), _layer_table(report)]
    signal = _signal_table(report)
    if signal is not None:
        parts.append(signal)
    histograms = _histograms(report)
    if histograms is not None:
        parts.append(histograms)
    parts += [_findings(report), verdict(report)]
    return Group(*parts)
