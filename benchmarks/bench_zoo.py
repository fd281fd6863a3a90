"""Audit time of the real-model zoo (tests/zoo), per model, probe on, as a ratio of a plain
forward + backward of the same model on the same inputs.

    python benchmarks/bench_zoo.py [--rounds N] [--only NAME,NAME]

For each zoo model (built once, its library's default init, the zoo's small configs): the
median over rounds of the time of ``initaudit.audit(model, inputs=...)`` (static pass, stage
evidence, forward + backward probe, every rule) and of a plain forward + backward with the same
loss shape (sum of the outputs' squares), measured in the same round; the ratio is the median of
the per-round ratios (robust to load drifting on a shared machine). The zoo's models are tiny
(hidden 32, 2 layers for most), so the ratio is dominated by the audit's fixed costs (graph
capture, per-tensor statistics, rules) rather than by the probe's overhead on the forward pass:
it says what a user pays for auditing a small real model, not the probe's overhead on large
ones (bench_probe.py measures that).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from zoo.forms import call
from zoo.registry import ZOO

import initaudit


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


def plain_step(model, inputs) -> float:
    start = time.perf_counter()
    loss = sum(t.float().pow(2).mean() for t in _tensors(call(model, inputs)) if t.is_floating_point())
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return elapsed


def audit_time(model, inputs) -> float:
    start = time.perf_counter()
    initaudit.audit(model, inputs=inputs)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(ZOO)
    warnings.filterwarnings("ignore")
    print(f"{'model':22s} {'params':>10s} {'fwd+bwd ms':>11s} {'audit ms':>9s} {'ratio':>7s}")
    ratios = []
    for name in names:
        z = ZOO[name]
        if z.available():
            print(f"{name:22s} skipped: {z.available()}")
            continue
        model, inputs = z.build(), z.inputs()
        plain_step(model, inputs)  # warm-up (lazy init, allocator)
        audit_time(model, inputs)
        plain, audit, per_round = [], [], []
        for _ in range(args.rounds):
            p, a = plain_step(model, inputs), audit_time(model, inputs)
            plain.append(p)
            audit.append(a)
            per_round.append(a / p)
        ratio = statistics.median(per_round)
        ratios.append(ratio)
        params = sum(p.numel() for p in model.parameters())
        print(f"{name:22s} {params:10,d} {statistics.median(plain) * 1e3:11.1f} "
              f"{statistics.median(audit) * 1e3:9.0f} {ratio:7.1f}x", flush=True)
    if ratios:
        print(f"median ratio over {len(ratios)} models: {statistics.median(ratios):.1f}x "
              f"(range {min(ratios):.1f}x .. {max(ratios):.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
