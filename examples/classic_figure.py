"""The classic initialisation figure as one self-contained HTML page: the activation histograms of
every layer of the 5-layer, 100-unit MLP (examples/classic_mlp.py) under four initialisations
(rows) and three activations (columns), drawn from initaudit's own report data (the probe's
per-layer histograms) with the findings of each audit under its cell.

    python examples/classic_figure.py                   # writes classic_figure.html here
    python examples/classic_figure.py -o figure.html

Each histogram shows a layer's output after its activation (the fifth layer, the linear head:
its output): N(0, 1) piles sigmoid and tanh at their flat ends and blows ReLU up; N(0, 0.01^2)
collapses every layer to a spike at zero; Xavier keeps tanh spread; He keeps ReLU at one scale.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import initaudit  # noqa: E402
from classic_mlp import ACTIVATIONS, INITS, build, example_inputs  # noqa: E402
from initaudit.reporters.html import render_grid  # noqa: E402

TITLE = "The classic experiment: activation histograms per layer"
SUBTITLE = ("5-layer, 100-unit MLP, zero biases, 256 unit-variance inputs; rows: initialisation, "
            "columns: activation; each histogram is one layer (left to right: layers 1-5). "
            "σ: the layer's pre-activation std on the probe batch; under each cell: what initaudit reports.")


def reports() -> dict[tuple[str, str], initaudit.Report]:
    """One audit per (init, activation), with the probe's histograms."""
    return {(title, act): initaudit.audit(build(act, init), inputs=example_inputs(), probe_histograms=True)
            for init, title in INITS.items() for act in ACTIVATIONS}


def figure() -> str:
    return render_grid(TITLE, SUBTITLE, list(INITS.values()), list(ACTIVATIONS), reports())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", type=Path, default=Path("classic_figure.html"))
    args = parser.parse_args()
    args.output.write_text(figure(), encoding="utf-8")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
