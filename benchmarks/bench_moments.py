"""Whole-tensor statistics in the stored dtype (``initaudit.moments.tensor_stats``) against the
floor (one ``sum`` over the tensor as stored) and against the previous path (an fp32 copy of the
whole tensor, then four separate reductions over it), on 16M-element fp32 and bf16 tensors.

Prints, per dtype, the medians over interleaved repeats of:
- time / floor (target: fp32 no slower than the previous path; bf16 well below it);
- the previous path / floor.
In-process, one thread per the environment (OMP_NUM_THREADS).
    python benchmarks/bench_moments.py [--numel 16000000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch

from initaudit.moments import tensor_stats


def previous(t: torch.Tensor) -> tuple:
    """The statistics as computed before the moments: fp32 copy, sum, dot, aminmax, count."""
    flat = t.reshape(-1).to(torch.float32)
    total, sumsq = float(flat.sum()), float(torch.dot(flat, flat))
    lo, hi = torch.aminmax(flat)
    zeros = flat.numel() - int(torch.count_nonzero(flat))
    mean = total / flat.numel()
    return mean, math.sqrt(max(sumsq / flat.numel() - mean * mean, 0.0)), float(lo), float(hi), zeros


def _time(fn, t) -> float:
    start = time.perf_counter()
    fn(t)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--numel", type=int, default=16_000_000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    base = torch.randn(args.numel, generator=torch.Generator().manual_seed(0)) * 0.02
    for dtype in (torch.float32, torch.bfloat16):
        t = base.to(dtype)
        runs = {"floor": [], "moments": [], "previous": []}
        for _ in range(args.repeat):  # interleaved, so load hits all three alike
            runs["floor"].append(_time(lambda x: float(x.sum()), t))
            runs["moments"].append(_time(tensor_stats, t))
            runs["previous"].append(_time(previous, t))
        med = {k: statistics.median(v) for k, v in runs.items()}
        print(f"{str(dtype).removeprefix('torch.'):>9}: moments {med['moments'] / med['floor']:.2f}x the floor, "
              f"previous path {med['previous'] / med['floor']:.2f}x, "
              f"moments / previous {med['moments'] / med['previous']:.2f} "
              f"(floor {med['floor'] * 1e3:.1f} ms for {args.numel:,} elements)")


if __name__ == "__main__":
    main()
