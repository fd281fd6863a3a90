"""The terminal report: header, per-layer table (when it helps), depth profile, findings grouped
by rule and cause, verdict.

Rich renders colour on a terminal and plain text when piped or when NO_COLOR is set. Layouts
hold at 80 columns: a table leaves out its least useful columns rather than cut a cell, so
parameter names and numbers are never split, and fix code is printed on a line of its own that
is never wrapped (the terminal soft-wraps it, so copy-paste keeps it whole).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.measure import Measurement
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from initaudit.report import Report
from initaudit.reporters.grouping import FindingGroup, explain_hint, group_findings, statistics
from initaudit.rule import fmt

SEVERITY_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
SMALL_MODEL_LAYERS = 40  # the per-layer table is shown by default up to this many rows
SIGNAL_ROWS = 12  # rows of the depth profile by default (all sampled rows with --layers)
_MAX_ROWS = 60
_MAX_LISTED_LAYERS = 6  # layers named in a finding group's line
_CODE = re.compile(r"^[A-Za-z_][\w.]*\(")  # a fix that is code, not prose

CAPTURE = {"trace": "recorded from a forward pass", "fx": "torch.fx symbolic trace",
           "onnx": "the ONNX graph",
           "module-order": "module registration order (a guess: depth rules stay at info; see notes)"}


@dataclass
class ViewOptions:
    """What the terminal report shows (CLI flags)."""

    layers: bool | None = None  # None: the per-layer table for small models only
    statistics: bool = False  # a count of findings by rule (--statistics)


def _num(x: Any) -> str:
    return "-" if x is None else fmt(float(x))


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


# --- tables that fit the width ----------------------------------------------------------------

@dataclass
class Column:
    header: str
    priority: int  # lower is kept longer when the width is short
    justify: str = "left"


class FittedTable:
    """A table that leaves out its lowest-priority columns until it fits the console width,
    rather than cut or wrap a cell. Cells never wrap (names and numbers stay whole)."""

    def __init__(self, title: str, columns: list[Column], rows: list[list[Any]], note: str = "",
                 styles: list[str | None] | None = None):
        self.title, self.columns, self.rows, self.note = title, columns, rows, note
        self.styles = styles or [None] * len(rows)

    def _table(self, keep: list[int], dropped: list[str]) -> Table:
        title = self.title
        if dropped:
            title += f" (left out at this width: {', '.join(dropped)}; --format json has every value)"
        t = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False,
                  collapse_padding=True)
        for i in keep:
            c = self.columns[i]
            t.add_column(c.header, justify=c.justify, no_wrap=True, overflow="ignore")
        for row, style in zip(self.rows, self.styles):
            t.add_row(*(row[i] for i in keep), style=style)
        return t

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        keep = list(range(len(self.columns)))
        order = sorted(keep, key=lambda i: -self.columns[i].priority)
        dropped: list[str] = []
        table = self._table(keep, dropped)
        wide = options.update_width(1_000_000)  # Measurement.get clamps to the width it is given
        for i in order:
            if Measurement.get(console, wide, table).maximum <= options.max_width or len(keep) == 1:
                break
            keep.remove(i)
            dropped.append(self.columns[i].header)
            table = self._table(keep, dropped)
        yield table
        if self.note:
            yield Text(self.note, style="dim")


# --- the parts of the report ------------------------------------------------------------------

def _header(report: Report) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold", no_wrap=True)
    t.add_column()
    t.add_row("target", report.target)
    t.add_row("format", report.format)
    if getattr(report, "code_ran", None):  # --unsafe-pickle: never let this go unsaid
        t.add_row(Text("code ran", style="bold red"), Text(report.code_ran, style="red"))
    capture = getattr(report, "capture", None)
    if capture:  # how the dataflow between layers was found (ModelGraph.capture)
        t.add_row("dataflow", f"{capture}: {CAPTURE.get(capture, 'found by the loader')}")
    t.add_row("parameters", f"{report.parameter_count:,}")
    t.add_row("stage", f"{report.stage} ({report.stage_reason})")
    probe = report.probe
    if probe is not None and getattr(probe, "ran", False):
        how = [x for x in (getattr(probe, "convention", None), getattr(probe, "inputs_source", None)) if x]
        t.add_row("probe", f"batch {probe.batch_size}, seed {probe.seed}, {probe.inputs} inputs"
                  + (f" ({'; '.join(how)})" if how else ""))
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


_LAYER_COLUMNS = [Column("param", 0), Column("op", 12), Column("shape", 10), Column("fan in→out", 11),
                  Column("next", 3), Column("scheme", 8), Column("std", 2, "right"),
                  Column("expected", 6, "right"), Column("ratio", 1, "right")]
_PROBE_COLUMNS = [Column("out std", 7, "right"), Column("dead", 4, "right"), Column("sat", 5, "right"),
                  Column("|dW|/|W|", 9, "right")]


def _ratio(r: dict[str, Any]) -> str:
    ratio = r.get("ratio")
    if ratio is None:
        return "-"
    return f"{ratio:.2f}x" if ratio >= 0.01 else f"{ratio:.2g}x"


def _layer_rows(rows: list[dict[str, Any]], probe: bool) -> list[list[Any]]:
    out = []
    for r in rows:
        nxt = r["activation"] or ("norm" if r["normalized_after"] else "output" if r["is_output"]
                                  else "?" if r.get("follows_unknown_op") else "-")
        if r["normalized_after"] and r["activation"]:
            nxt += "+norm"
        exp = r["expected"]
        cells: list[Any] = [r["param"], r["op"], "×".join(map(str, r["shape"])),
                            f"{r['fan_in']}→{r['fan_out']}" if r["fan_in"] else "-", nxt,
                            ", ".join(r["matched_schemes"][:2]) or "-", _num(r["stats"]["std"]),
                            _num(exp["std"]) if exp else "-", _ratio(r)]
        if probe:
            p = r.get("probe") or {}
            out_std = p.get("signal_std") if p.get("signal_std") is not None else p.get("std")
            cells += [_num(out_std), _pct(p.get("dead_fraction")), _pct(p.get("saturated_fraction")),
                      _num(p.get("grad_to_weight"))]
        out.append(cells)
    return out


def _layer_styles(report: Report, rows: list[dict[str, Any]]) -> list[str | None]:
    flagged = {f.layer for f in report.findings}
    return ["red" if r["param"] in flagged or r["name"] in flagged else None for r in rows]


def _layer_table(report: Report, view: ViewOptions) -> RenderableType | None:
    rows = report.layers
    if not rows:
        return None
    show = view.layers if view.layers is not None else len(rows) <= SMALL_MODEL_LAYERS
    if not show:
        return Text(f"Per-layer table: {len(rows)} rows, not shown for a model this size "
                    "(--layers shows it; --format json has every value).", style="dim")
    probe = any(r.get("probe") for r in rows)
    columns = _LAYER_COLUMNS + (_PROBE_COLUMNS if probe else [])
    note = ("out std: the layer's output spread on the probe batch, its own bias taken off (as the "
            "depth profile); std, expected and ratio are the weight's" if probe else "")
    return FittedTable("Layers", columns, _layer_rows(rows, probe), note, _layer_styles(report, rows))


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


def _sample(items: list[Any], limit: int) -> list[Any]:
    """At most about ``limit`` evenly spaced items, always the last."""
    if len(items) <= limit:
        return items
    step = math.ceil(len(items) / limit)
    return items[::step] + ([items[-1]] if (len(items) - 1) % step else [])


def _signal_table(report: Report, view: ViewOptions) -> RenderableType | None:
    if not report.signal:
        return None
    measured = any(s.get("measured_std") is not None for s in report.signal)  # the probe, per call site
    columns = [Column("layer", 0), Column("depth", 3, "right"), Column("predicted std", 4, "right"),
               Column("ratio", 1, "right"), Column("0.01x ← 1 → 100x", 6)]
    if measured:
        columns += [Column("measured std", 5, "right"), Column("measured ratio", 2, "right")]
    signal = _sample(report.signal, _MAX_ROWS if view.layers else SIGNAL_ROWS)
    rows = []
    for s in signal:
        cells: list[Any] = [s["layer"], str(s["depth"]), _num(s["predicted_std"]), f"{s['ratio']:.3g}x",
                            _bar(s["ratio"])]
        if measured:
            ratio = s.get("measured_ratio")
            spread = s.get("measured_signal_std", s.get("measured_std"))  # what the ratio uses
            cells += [_num(spread), f"{ratio:.3g}x" if ratio is not None else "-"]
        rows.append(cells)
    shown = f", {len(signal)} of {len(report.signal)} layers" if len(signal) < len(report.signal) else ""
    return FittedTable(f"Signal through depth: each layer's predicted output std relative to its "
                       f"segment's start{shown}", columns, rows)


_SPARK = " ▁▂▃▄▅▆▇█"


def _histograms(report: Report) -> RenderableType | None:
    """One line per site: the activation's output distribution (--histograms), so sigmoid
    piling at 0 and 1, tanh at -1 and 1, ReLU at 0 show at a glance."""
    probe = report.probe
    sites = [s for s in getattr(probe, "sites", None) or [] if s.histogram is not None
             and s.kind in ("layer", "norm", "act", "input")]
    if not sites:
        return None
    columns = [Column("site", 0), Column("activation", 3), Column("min", 2, "right"),
               Column("distribution", 1), Column("max", 2, "right")]
    rows = []
    for s in sites[:_MAX_ROWS]:
        edges, counts = s.histogram
        top = max(counts) or 1
        bars = "".join(_SPARK[0 if c == 0 else max(1, round(c / top * (len(_SPARK) - 1)))] for c in counts)
        rows.append([s.name, str(s.activation) if s.activation else "-", _num(edges[0]),
                     Text(bars, style="cyan"), _num(edges[-1])])
    return FittedTable("Activation histograms (layer and norm sites show the output of the activation "
                       "that follows them)", columns, rows)


class _Indented:
    """Text wrapped at spaces under a 4-column indent, with no trailing padding."""

    def __init__(self, text: Text, indent: int = 4):
        self.text, self.indent = text, indent

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for line in self.text.wrap(console, max(options.max_width - self.indent, 20)):
            line.rstrip()
            yield Text(" " * self.indent) + line


def _indented(text: Text) -> RenderableType:
    return _Indented(text)


def _fix_line(fix: str) -> tuple[RenderableType, bool]:
    """(renderable, soft_wrap): code is never wrapped by rich (the terminal soft-wraps it, so
    copy-paste keeps it whole); prose wraps at spaces under its indent."""
    if _CODE.match(fix):
        return Text("    fix: ", style="bold") + Text(fix, style="green"), True
    return _indented(Text.assemble(Text("fix: ", style="bold"), Text(fix))), False


def _group_parts(g: FindingGroup) -> Iterator[tuple[RenderableType, bool]]:
    head = Text()
    head.append(f"{g.severity.value:<7}", style=SEVERITY_STYLE[g.severity.value])
    head.append(f" {g.rule} {g.name}".rstrip(), style="bold")
    if len(g.findings) > 1:
        head.append(f" ×{len(g.findings)}")
    head.append(f": {g.layer_list(_MAX_LISTED_LAYERS)}")
    yield head, False
    yield _indented(Text(g.message())), False
    if g.fix:
        yield _fix_line(g.fix)


def _findings(report: Report) -> Iterator[tuple[RenderableType, bool]]:
    if not report.findings:
        yield Text("No findings.", style="green"), False
        return
    groups = group_findings(report.findings)
    n = len(report.findings)
    title = f"Findings: {n}" + (f" in {len(groups)} groups (by rule and cause)" if len(groups) < n else "")
    yield Text(title, style="bold italic"), False
    for g in groups:
        yield from _group_parts(g)


def statistics_table(report: Report) -> RenderableType:
    """``--statistics``: findings counted by rule."""
    columns = [Column("count", 0, "right"), Column("code", 0), Column("name", 1), Column("category", 3),
               Column("severity", 2)]
    rows = [[str(r.count), r.rule, r.name, r.category, r.severity_text()] for r in statistics(report.findings)]
    return FittedTable("Findings by rule", columns, rows)


def verdict(report: Report) -> Text:
    s = report.summary()
    counts = f"{s['errors']} error(s), {s['warnings']} warning(s), {s['infos']} info"
    if report.failed:
        return Text(f"FAIL: {counts} (fail-on {report.fail_on})", style="bold red")
    return Text(f"PASS: {counts} (fail-on {report.fail_on})", style="bold green")


def parts(report: Report, view: ViewOptions | None = None) -> Iterator[tuple[RenderableType, bool]]:
    """The report as (renderable, soft_wrap) pairs, in order; print each with
    ``console.print(part, soft_wrap=soft)`` so that fix code is never wrapped."""
    view = view or ViewOptions()
    yield Panel(_header(report), title="initaudit", title_align="left", box=box.ROUNDED), False
    for part in (_layer_table(report, view), _signal_table(report, view), _histograms(report)):
        if part is not None:
            yield part, False
    yield Text(""), False
    yield from _findings(report)
    if view.statistics and report.findings:
        yield Text(""), False
        yield statistics_table(report), False
    hint = explain_hint(report.findings)
    if hint:
        yield Text(""), False
        yield Text(hint, style="dim"), False
    yield verdict(report), False


def print_report(console: Console, report: Report, view: ViewOptions | None = None) -> None:
    for part, soft in parts(report, view):
        console.print(part, soft_wrap=soft)


def render(report: Report, view: ViewOptions | None = None) -> RenderableType:
    """The report as one renderable (``rich.print(report)``); the CLI uses :func:`print_report`."""
    return Group(*(part for part, _ in parts(report, view)))
