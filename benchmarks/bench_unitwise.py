"""Cost of the per-unit pass (initaudit.unitwise) in the static audit of a module.

Prints, per model, the median over ``--rounds`` interleaved rounds of the time of
``initaudit.audit(model, probe_enabled=False)`` (graph capture, per-tensor statistics, the
static prediction, every static rule) with the per-unit pass on, as a ratio of the same audit
with it off (``unitwise.UNITWISE_MAX_ELEMENTS = 0``: the per-tensor prediction only), measured in
the same round (the order alternating). Models:

- the zoo's largest module (torchvision VGG-11, 10.8M parameters): its dense layers follow a
  conv trunk, so no chain starts at the input and the pass reads nothing;
- a 12-layer ReLU MLP of width 2048 (50.3M weight elements): a chain from the input at the size
  bound, the most the pass reads (the last layer falls past the bound and keeps the per-tensor
  prediction).

    python benchmarks/bench_unitwise.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import initaudit
from initaudit import unitwise


def wide_mlp(depth: int = 12, width: int = 2048) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def vgg11() -> nn.Module:
    from zoo.registry import ZOO

    return ZOO["vgg11_tv"].build()


def timed(model: nn.Module, per_unit: bool) -> float:
    bound = unitwise.UNITWISE_MAX_ELEMENTS
    unitwise.UNITWISE_MAX_ELEMENTS = bound if per_unit else 0
    try:
        start = time.perf_counter()
        initaudit.audit(model, probe_enabled=False, config=False)
        return time.perf_counter() - start
    finally:
        unitwise.UNITWISE_MAX_ELEMENTS = bound


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}, {args.rounds} rounds, medians")
    print("| model | weight elements | static pass, per-unit off (s) | per-unit on / off |")
    print("|---|---|---|---|")
    for name, build in (("VGG-11 (zoo's largest)", vgg11), ("ReLU MLP 12x2048", wide_mlp)):
        model = build()
        timed(model, True)  # warm-up: imports, first capture
        off, ratios = [], []
        for i in range(args.rounds):  # the order alternates: neither side always runs warm
            if i % 2:
                b, a = timed(model, True), timed(model, False)
            else:
                a, b = timed(model, False), timed(model, True)
            off.append(a)
            ratios.append(b / a)
        n = sum(p.numel() for p in model.parameters() if p.dim() > 1)
        print(f"| {name} | {n / 1e6:.1f}M | {statistics.median(off):.2f} | {statistics.median(ratios):.2f} |")
    print(f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
