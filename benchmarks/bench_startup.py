"""Start-up time of the commands that touch no model.

    python benchmarks/bench_startup.py [--rounds N]

Runs each command as a fresh process (the console script, as a user or a pre-commit hook runs
it) and prints the median wall time over the rounds, beside two baselines measured in the same
run: a bare interpreter (``python -c pass``) and ``python -c "import torch"`` (what every
command cost while the CLI imported torch at start-up). Target: ``initaudit --version`` under
0.3 s. Rounds interleave the commands so that load drifting on a shared machine hits them alike.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = str(Path(sys.executable).with_name("initaudit"))
COMMANDS = {
    "python -c pass (floor)": [sys.executable, "-c", "pass"],
    "python -c 'import torch'": [sys.executable, "-c", "import torch"],
    "initaudit --version": [SCRIPT, "--version"],
    "initaudit --help": [SCRIPT, "--help"],
    "initaudit rules": [SCRIPT, "rules"],
    "initaudit explain IA104": [SCRIPT, "explain", "IA104"],
    "initaudit config": [SCRIPT, "config", "--isolated"],
}
TARGET_S = 0.3


def wall(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for cmd in COMMANDS.values():  # warm the page cache once
        wall(cmd)
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, cmd in COMMANDS.items():
            times[name].append(wall(cmd))
    floor = statistics.median(times["python -c pass (floor)"])
    torch_s = statistics.median(times["python -c 'import torch'"])
    print(f"{'command':<28} {'median s':>9} {'x floor':>8} {'x import torch':>15}")
    for name, values in times.items():
        m = statistics.median(values)
        print(f"{name:<28} {m:>9.3f} {m / floor:>8.1f} {m / torch_s:>15.2f}")
    version = statistics.median(times["initaudit --version"])
    verdict = "meets" if version < TARGET_S else "MISSES"
    print(f"\ninitaudit --version: {version:.3f} s, {verdict} the {TARGET_S} s target "
          f"({args.rounds} rounds, medians)")
    return 0 if version < TARGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
