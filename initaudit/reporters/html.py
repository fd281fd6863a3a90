"""Self-contained HTML output (``--format html`` / ``--html FILE``): one file that reads offline
and can be attached to a CI run.

The page carries the report's figures as one JSON block and draws everything from it with the
inline script and style in ``assets/`` (SVG built in the browser; no network, no CDN, no font or
image fetch: a Content-Security-Policy meta forbids any request). Sections: the verdict; the
findings grouped by rule, each with its fix and the rule's documentation (its docstring) one
click away; the depth profile (predicted and measured activation std per layer on a log axis,
shaded where IA109/IA110 and IA204/IA205 fire); per-layer histograms (pre- and post-activation
with the saturated and zero regions shaded, weights against the expected scheme's density);
gradient-to-weight ratios per layer; the per-layer table, sortable and filterable. Layers of
repeated blocks (``h.0.*``, ``h.1.*``, ...) are grouped (:func:`blocks`); a run of more than
OPEN_BLOCKS blocks of the same structure is shown once as an overview (each layer of the block
with its figures' spread over the repeats), its first blocks open and the rest folded, and a
link to any layer opens the folds around it, so a 300-layer model stays readable with every
histogram reachable. The overview is computed in the page from the per-layer data, so it costs
the file nothing; numbers are rounded to 4 significant digits so the file stays small (about
1.6 KB per layer with histograms).

:func:`render_grid` draws several reports side by side (the classic 4 inits x 3 activations
figure, ``examples/classic_figure.py``) with the same script.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from initaudit import __version__
from initaudit.report import Report, clean_json
from initaudit.rule import Severity

CSP = ("default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:; "
       "base-uri 'none'; form-action 'none'")
OPEN_BLOCKS = 3  # repeated blocks shown open; the rest collapse (those with findings stay open)
_DEPTH_RULES = {"vanishing": ("IA109", "IA204"), "exploding": ("IA110", "IA205")}
_GRAD_RULES = {"vanishing": "IA206", "exploding": "IA207"}
_DEFAULT_BANDS = {"vanishing": (0.2, 0.01), "exploding": (5.0, 100.0)}
_DEFAULT_GRAD_BANDS = {"vanishing": (0.01, 1e-4), "exploding": (100.0, 1e4)}


def _asset(name: str) -> str:
    return resources.files("initaudit.reporters").joinpath("assets", name).read_text(encoding="utf-8")


def _round(obj: Any) -> Any:
    """Floats to 4 significant digits (NaN/Inf already null): the page shows no more."""
    if isinstance(obj, float):
        return float(f"{obj:.4g}") if obj else 0.0
    if isinstance(obj, dict):
        return {k: _round(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_round(v) for v in obj]
    return obj


def _hist(h: Any) -> dict[str, Any] | None:
    """(edges, counts) or {"edges", "counts"} -> {"lo", "hi", "c"} (bins are equal-width)."""
    if h is None:
        return None
    edges, counts = (h["edges"], h["counts"]) if isinstance(h, Mapping) else h
    return {"lo": edges[0], "hi": edges[-1], "c": list(counts)}


def _regions() -> dict[str, Any]:
    from initaudit.probe.stats import DEAD_BELOW, SATURATION, SATURATION_OUT

    return {"sat_pre": SATURATION, "sat_post": SATURATION_OUT, "dead": DEAD_BELOW}


def _block_of(name: str) -> str | None:
    """The repeated block a layer belongs to: its name up to the first numeric component that is
    not the last one (``h.3.attn.c_attn`` -> ``h.3``), else None."""
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.isdigit():
            return ".".join(parts[:i + 1])
    return None


def blocks(names: Sequence[str], chunk: int = 24) -> list[str]:
    """A group label per layer: repeated blocks where the model has them (at least two blocks of
    two layers or more), else chunks of ``chunk`` layers once the model is long."""
    keys = [_block_of(n) for n in names]
    sizes: dict[str, int] = {}
    for k in keys:
        if k is not None:
            sizes[k] = sizes.get(k, 0) + 1
    if sum(1 for v in sizes.values() if v >= 2) >= 2:
        # Unnumbered layers before the first block are the stem, after the last the head;
        # one between blocks goes with the block before it.
        last = max(i for i, k in enumerate(keys) if k is not None)
        out: list[str] = []
        for i, k in enumerate(keys):
            if k is None:
                k = "input side" if not out or out[-1] == "input side" else (
                    "output side" if i > last else out[-1])
            out.append(k)
        return out
    if len(names) <= 2 * chunk:
        return ["all layers"] * len(names)
    return [f"layers {i // chunk * chunk + 1}-{min(len(names), (i // chunk + 1) * chunk)}"
            for i in range(len(names))]


def _flags(report: Report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for f in report.findings:
        if f.severity.value == "info":  # legitimate patterns: shown in the findings, not flagged
            continue
        codes = out.setdefault(f.layer, [])
        if f.rule not in codes:
            codes.append(f.rule)
    return out


def _bands(report: Report, rules: Mapping[str, str], defaults: Mapping[str, tuple]) -> dict:
    out = {}
    for direction, codes in rules.items():
        codes = (codes,) if isinstance(codes, str) else codes
        opts = next((report.rule_meta[c].get("options") for c in codes
                     if c in report.rule_meta and report.rule_meta[c].get("options")), None) or {}
        warn, error = defaults[direction]
        out[direction] = {"warn": opts.get("warn_ratio", warn), "error": opts.get("error_ratio", error),
                          "rules": list(codes)}
    return out


def _layers(report: Report, probe: Any) -> list[dict[str, Any]]:
    flags = _flags(report)
    ran = probe is not None and getattr(probe, "ran", False)
    rows = []
    groups = blocks([r["name"] or r["param"] for r in report.layers])
    for r, group in zip(report.layers, groups, strict=True):
        site = probe.site_for_param(r["param"]) if ran else None
        p = r.get("probe") or {}
        exp = r.get("expected") or {}
        names = {r["param"], r["name"]} | ({site.name, site.module} if site else set())
        row = {
            "param": r["param"], "name": r["name"], "op": r["op"], "kind": r.get("kind"),
            "shape": r["shape"],
            "fan_in": r.get("fan_in"), "fan_out": r.get("fan_out"), "act": r.get("activation"),
            "norm_after": r.get("normalized_after"), "output": r.get("is_output"),
            "std": r["stats"].get("std"), "mean": r["stats"].get("mean"),
            "scheme": exp.get("scheme"), "expected_std": exp.get("std"), "ratio": r.get("ratio"),
            "schemes": r.get("matched_schemes") or [], "predicted_std": r.get("predicted_std"),
            "measured_std": p.get("std"), "dead": p.get("dead_fraction"),
            "saturated": p.get("saturated_fraction"), "grad_ratio": p.get("grad_to_weight"),
            "flags": sorted({c for n in names if n for c in flags.get(n, [])}), "block": group,
            "w": _hist(r.get("weight_histogram")),
            "w_shape": (r.get("weight_histogram") or {}).get("shape"),
        }
        if site is not None:
            row["site"] = site.name
            row["site_act"] = str(site.activation) if site.activation else None
            row["site_act_name"] = site.activation.name if site.activation else None
            row["post"] = _hist(site.histogram)
            row["pre"] = _hist(site.pre_histogram)
        rows.append(row)
    return rows


def _probe_info(report: Report) -> dict[str, Any]:
    probe = report.probe
    if probe is None or not getattr(probe, "ran", False):
        reason = getattr(probe, "skipped_reason", None) or "probe not run"
        return {"ran": False, "reason": reason, "histograms": False, "grads": False}
    return {"ran": True, "batch_size": probe.batch_size, "seed": probe.seed,
            "inputs": probe.inputs_source or probe.inputs, "device": probe.device,
            "loss": probe.loss, "grads": bool(probe.grads),
            "histograms": any(s.histogram is not None for s in probe.sites)}


def report_data(report: Report) -> dict[str, Any]:
    """Everything the page draws, as plain JSON (rounded; NaN/Inf as null)."""
    s = report.summary()
    used = {f.rule for f in report.findings}
    data = {
        "kind": "report", "version": __version__,
        "target": report.target, "format": report.format, "stage": report.stage,
        "stage_reason": report.stage_reason, "parameters": report.parameter_count,
        "summary": s, "probe": _probe_info(report),
        "notes": [*([f"code ran: {report.code_ran}"] if getattr(report, "code_ran", None) else []),
                  *report.notes, *(f"not analysed: {n}: {r}" for n, r in report.skipped)],
        "rule_errors": report.rule_errors, "suppressed": report.suppressed,
        "findings": [{"rule": f.rule, "name": f.name, "category": f.category,
                      "severity": f.severity.value, "layer": f.layer, "message": f.message,
                      "fix": f.fix} for f in report.findings],
        "rules": {c: {k: m.get(k) for k in ("name", "category", "severity", "summary", "doc")}
                  for c, m in report.rule_meta.items() if c in used},
        "rules_run": report.rules_run,
        "layers": _layers(report, report.probe),
        "signal": [{k: r.get(k) for k in ("param", "layer", "predicted_std", "ratio", "measured_std",
                                          "measured_ratio", "depth", "origin")} for r in report.signal],
        "bands": _bands(report, _DEPTH_RULES, _DEFAULT_BANDS),
        "grad_bands": _bands(report, _GRAD_RULES, _DEFAULT_GRAD_BANDS),
        "regions": _regions(), "open_blocks": OPEN_BLOCKS,
    }
    return _round(clean_json(data))


def grid_data(title: str, subtitle: str, rows: Sequence[str], cols: Sequence[str],
              cells: Mapping[tuple[str, str], Report]) -> dict[str, Any]:
    """The figures :func:`render_grid` draws: per cell, each layer's histograms and findings."""
    out = []
    for (row, col), report in cells.items():
        layers = [{k: v for k, v in layer.items() if k in (
            "param", "name", "act", "site_act_name", "site_act", "post", "pre", "measured_std",
            "saturated", "dead", "flags", "grad_ratio")} for layer in _layers(report, report.probe)]
        worst: dict[str, str] = {}
        for f in report.findings:
            if f.rule not in worst or Severity(worst[f.rule]).rank < f.severity.rank:
                worst[f.rule] = f.severity.value
        out.append({"row": row, "col": col, "summary": report.summary(), "layers": layers,
                    "findings": [{"rule": c, "name": report.rule_meta.get(c, {}).get("name", ""),
                                  "severity": sev} for c, sev in sorted(worst.items())]})
    data = {"kind": "grid", "version": __version__, "title": title, "subtitle": subtitle,
            "rows": list(rows), "cols": list(cols), "cells": out, "regions": _regions()}
    return _round(clean_json(data))


def page(title: str, data: Mapping[str, Any]) -> str:
    """The HTML document: CSP meta, inline style, the data block, inline script."""
    blob = json.dumps(data, separators=(",", ":"), allow_nan=False, ensure_ascii=False)
    blob = blob.replace("<", "\\u003c")  # nothing in the data can close the script element
    return "\n".join([
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<meta name="referrer" content="no-referrer">',
        f"<title>{html.escape(title)}</title>",
        f"<style>\n{_asset('report.css')}</style>", "</head>",
        '<body data-rendered="0">',
        '<main id="app"><noscript><p>This report draws its charts with an inline script; '
        'enable JavaScript to see them (the figures are in the JSON block of this file).</p>'
        '</noscript></main>',
        '<ol id="page-errors" hidden></ol>',
        f'<script type="application/json" id="initaudit-data">{blob}</script>',
        f"<script>\n{_asset('report.js')}</script>", "</body>", "</html>", ""])


def render(report: Report) -> str:
    """The HTML report for ``report``."""
    return page(f"initaudit: {report.target}", report_data(report))


def render_grid(title: str, subtitle: str, rows: Sequence[str], cols: Sequence[str],
                cells: Mapping[tuple[str, str], Report]) -> str:
    """Several reports as one figure: ``cells[(row, col)]`` is drawn at that row and column."""
    return page(title, grid_data(title, subtitle, rows, cols, cells))

