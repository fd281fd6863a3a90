"""Audit the twelve classic MLPs (examples/classic_mlp.py) and print a Markdown table of what
initaudit says about each: the README's table is this script's output."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import initaudit  # noqa: E402
from classic_mlp import ACTIVATIONS, INITS, build  # noqa: E402


def verdict(report) -> str:
    worst = {}
    for f in report.findings:
        worst.setdefault(f.rule, f)
    if not worst:
        return "clean"
    parts = []
    for code, f in sorted(worst.items()):
        extra = ""
        if "ratio" in f.evidence and f.rule in ("IA104", "IA109", "IA110"):
            extra = f" {f.evidence['ratio']:.2g}x"
        parts.append(f"{code} {f.name}{extra} ({f.severity.value})")
    return "; ".join(parts)


def main() -> None:
    print("| init | " + " | ".join(ACTIVATIONS) + " |")
    print("|---|" + "---|" * len(ACTIVATIONS))
    for init, title in INITS.items():
        cells = [verdict(initaudit.audit(build(act, init))) for act in ACTIVATIONS]
        print(f"| {title} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
