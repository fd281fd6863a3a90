"""Static pass on LLaMA-shaped sharded safetensors checkpoints (125M, 1B, 3B; bf16 and fp32).

For every size and dtype it builds the checkpoint (benchmarks/make_llama_checkpoint.py), warms
the page cache, then runs, interleaved and each in its own subprocess (after imports):

- floor: open every shard with safetensors and sum every tensor (``float(t.sum())``);
- tool:  ``initaudit.audit(index)``, the whole static pass (a worker pool on every core above
         initaudit.pool.PARALLEL_MIN_BYTES).

and prints per row the medians of ``--repeat`` runs: seconds of each, their ratio (target
<= 2x at 1B and above), ns per parameter, peak RSS above a bare ``import torch`` process over the
largest tensor (the caller's and each worker's, sampled every 10 ms and summed as an upper bound;
target <= 3x), CPU
time over wall time (caller and workers; target >= 1.8 on two cores) and the load average of
the machine during the runs. The last line extrapolates to 70B from the cost per parameter of
the largest size measured. Each checkpoint is deleted after its row unless ``--keep``.

    python benchmarks/bench_scale.py [--sizes 125m,1b,3b] [--dtypes bf16,fp32] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_checkpoint import SIZES, build, parameter_count  # noqa: E402
from measure import PRELUDE  # noqa: E402

_PRELUDE = PRELUDE

FLOOR = _PRELUDE + """
from safetensors import safe_open
index = json.loads(open(path).read())
shards = sorted(set(index["weight_map"].values()))
folder = os.path.dirname(path)
sampler = Sampler()
sampler.start()
cpu0, start = usage(), time.perf_counter()
total = 0.0
for shard in shards:
    with safe_open(os.path.join(folder, shard), framework="pt") as f:
        for name in f.keys():
            total += float(f.get_tensor(name).sum())
wall = time.perf_counter() - start
print(json.dumps({"seconds": wall, "cpu": (usage() - cpu0) / wall, "load": os.getloadavg()[0],
                  "above_kb": sampler.above_kb()}))
"""

TOOL = _PRELUDE + """
import initaudit, initaudit.engine, initaudit.context, initaudit.pool, initaudit.analysis, initaudit.schemes
sampler = Sampler()
sampler.start()
cpu0, start = usage(), time.perf_counter()
report = initaudit.audit(path, config=False)
wall = time.perf_counter() - start
print(json.dumps({"seconds": wall, "cpu": (usage() - cpu0) / wall, "load": os.getloadavg()[0],
                  "above_kb": sampler.above_kb(), "workers": initaudit.pool.worker_count(10**15),
                  "findings": len(report.findings)}))
"""


def run(code: str, path: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark subprocess failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(folder: Path) -> None:
    for f in sorted(folder.glob("*.safetensors")):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass


def measure(size: str, dtype: str, root: Path, repeat: int, keep: bool) -> dict:
    folder = root / f"llama-{size}-{dtype}"
    index = folder / "model.safetensors.index.json"
    if not index.exists():
        build(size, dtype, folder)
    warm(folder)
    floors, tools = [], []
    for _ in range(repeat):  # interleaved: both sides see the same load
        floors.append(run(FLOOR, index))
        tools.append(run(TOOL, index))
    if not keep:
        shutil.rmtree(folder)
    d, _, _, vocab = SIZES[size]
    itemsize = 2 if dtype in ("bf16", "fp16") else 4
    largest = vocab * d * itemsize
    params = parameter_count(size)
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    workers = tools[0]["workers"]
    peak_kb = [r["above_kb"] for r in tools]
    floor_s, tool_s = med(floors, "seconds"), med(tools, "seconds")
    return {"size": size, "dtype": dtype, "params": params, "floor": floor_s, "tool": tool_s,
            "ratio": statistics.median(t["seconds"] / f["seconds"] for t, f in zip(tools, floors)),
            "ns_per_param": tool_s / params * 1e9, "floor_ns_per_param": floor_s / params * 1e9,
            "peak_mb": statistics.median(peak_kb) / 1024, "floor_peak_mb": med(floors, "above_kb") / 1024,
            "peak_ratio": statistics.median(peak_kb) * 1024 / largest, "largest_mb": largest / 2**20,
            "cpu": med(tools, "cpu"), "floor_cpu": med(floors, "cpu"),
            "load": statistics.median(r["load"] for r in floors + tools), "workers": workers}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="125m,1b,3b")
    ap.add_argument("--dtypes", default="bf16,fp32")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of each side (medians)")
    ap.add_argument("--dir", type=Path, help="where to build (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the checkpoints (and reuse them)")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="initaudit-scale-")
        args.dir = Path(tmp.name)
    rows = []
    print(f"{'size':>5} {'dtype':>5} {'params':>7} {'floor s':>8} {'tool s':>7} {'ratio':>6} {'ns/param':>8} "
          f"{'peak MB':>8} {'/largest':>8} {'CPU/wall':>8} {'load':>5}", flush=True)
    from make_llama_checkpoint import SIZES

    sizes = [s.strip().lower() for s in args.sizes.split(",")]
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        ap.error(f"--sizes: unknown {', '.join(unknown)} (choose from {', '.join(SIZES)})")
    for size in sizes:
        for dtype in args.dtypes.split(","):
            r = measure(size, dtype, args.dir, args.repeat, args.keep)
            rows.append(r)
            print(f"{size:>5} {dtype:>5} {r['params'] / 1e9:>6.2f}B {r['floor']:>8.2f} {r['tool']:>7.2f} "
                  f"{r['ratio']:>5.2f}x {r['ns_per_param']:>8.2f} {r['peak_mb']:>8.0f} {r['peak_ratio']:>7.2f}x "
                  f"{r['cpu']:>8.2f} {r['load']:>5.1f}", flush=True)
    for dtype in args.dtypes.split(","):
        mine = [r for r in rows if r["dtype"] == dtype]
        if mine:
            big = max(mine, key=lambda r: r["params"])
            print(f"70B {dtype} extrapolated from {big['size']} ({big['ns_per_param']:.2f} ns/param, floor "
                  f"{big['floor_ns_per_param']:.2f}): {70e9 * big['ns_per_param'] / 1e9 / 60:.1f} min "
                  f"(floor {70e9 * big['floor_ns_per_param'] / 1e9 / 60:.1f} min)")
    print(f"{os.cpu_count()} CPUs; {rows[0]['workers'] if rows else 0} workers; load average is the "
          "machine's 1-minute figure during the runs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
