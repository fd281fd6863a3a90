"""Audit the twelve classic MLPs (examples/classic_mlp.py) and print a Markdown table of what
initaudit says about each: the README's table is this script's output."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import initaudit  # noqa: E402
from classic_mlp import ACTIVATIONS, INITS, build, example_inputs  # noqa: E402


def measured(report) -> str:
    """Probe figures: pre-activation std of the first and last hidden layer, saturation."""
    rows = [r for r in report.layers if r.get("probe")][:-1]  # hidden layers (not the head)
    if not rows:
        return ""
    first, last = rows[0]["probe"], rows[-1]["probe"]
    text = f"std {first['std']:.2g} → {last['std']:.2g}"
    sat = [r["probe"].get("saturated_fraction") for r in rows]
    if any(s is not None for s in sat):
        text += f", {max(s for s in sat if s is not None):.0%} saturated"
    return text


def verdict(report) -> str:
    worst = {}
    for f in report.findings:
        worst.setdefault(f.rule, f)
    if not worst:
        return "clean"
    parts = []
    for code, f in sorted(worst.items()):
        extra = ""
        if "ratio" in f.evidence and f.rule in ("IA104", "IA109", "IA110", "IA111", "IA210"):
            extra = f" {f.evidence['ratio']:.2g}x"
        parts.append(f"{code} {f.name}{extra} ({f.severity.value})")
    return "; ".join(parts)


def main() -> None:
    print("| init | " + " | ".join(ACTIVATIONS) + " |")
    # each cell: measured pre-activation std (first -> last hidden layer), then the findings
    print("|---|" + "---|" * len(ACTIVATIONS))
    for init, title in INITS.items():
        reports = [initaudit.audit(build(act, init), inputs=example_inputs()) for act in ACTIVATIONS]
        cells = [f"{measured(r)}: {verdict(r)}" for r in reports]
        print(f"| {title} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
