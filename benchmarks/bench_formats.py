"""Static pass on a LLaMA-shaped checkpoint saved as a zip ``.pt`` state_dict and as a
torch.distributed.checkpoint folder (the formats initaudit.pool reads beside safetensors).

For every size, dtype and format it saves the checkpoint (the tensors of
benchmarks/make_llama_checkpoint.py), warms the page cache, then runs, interleaved and each in
its own subprocess (after imports):

- floor: the library's own reader reads every tensor and sums it: ``torch.load(mmap=True,
         weights_only=True)`` for ``.pt``; ``torch.distributed.checkpoint.load`` into tensors
         allocated from the folder's metadata for DCP;
- tool:  ``initaudit.audit(target)``, the whole static pass (a worker pool on every core above
         initaudit.pool.PARALLEL_MIN_BYTES).

and prints per row the medians of ``--repeat`` runs: seconds of each, their ratio, ns per
parameter, peak RSS above a bare ``import torch`` process over the largest tensor (caller and
workers summed: benchmarks/measure.py), CPU time over wall time, and the machine's load average.

    python benchmarks/bench_formats.py [--sizes 125m,1b] [--dtypes fp32,bf16] [--formats pt,dcp] [--repeat 3]
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
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_llama_checkpoint import SIZES, parameter_count, tensor_shapes  # noqa: E402
from measure import PRELUDE  # noqa: E402

_TIMED = """
sampler = Sampler()
sampler.start()
cpu0, start = usage(), time.perf_counter()
{body}
wall = time.perf_counter() - start
print(json.dumps({{"seconds": wall, "cpu": (usage() - cpu0) / wall, "load": os.getloadavg()[0],
                  "above_kb": sampler.above_kb(), "extra": extra}}))
"""

FLOOR = {
    "pt": PRELUDE + _TIMED.format(body="""
total = 0.0
for t in torch.load(path, mmap=True, weights_only=True).values():
    total += float(t.sum())
extra = None"""),
    "dcp": PRELUDE + """
import warnings
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
warnings.simplefilter("ignore")
""" + _TIMED.format(body="""
meta = FileSystemReader(path).read_metadata().state_dict_metadata
state = {k: torch.empty(tuple(m.size), dtype=m.properties.dtype) for k, m in meta.items()}
dcp.load(state, checkpoint_id=path)
total = 0.0
for t in state.values():
    total += float(t.sum())
extra = None"""),
}

TOOL = PRELUDE + """
import initaudit, initaudit.engine, initaudit.context, initaudit.pool, initaudit.analysis, initaudit.schemes
""" + _TIMED.format(body="""
report = initaudit.audit(path, config=False)
extra = {"findings": len(report.findings), "workers": initaudit.pool.worker_count(10**15)}""")


def save(size: str, dtype: str, fmt: str, folder: Path) -> Path:
    """The checkpoint of ``size``/``dtype`` in ``fmt`` under ``folder``; returns the target."""
    import torch

    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    g = torch.Generator().manual_seed(0)
    state = {name: torch.ones(shape, dtype=torch_dtype) if std == 0.0
             else (torch.randn(shape, generator=g) * std).to(torch_dtype)
             for name, shape, std in tensor_shapes(size)}
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "pt":
        target = folder / "model.pt"
        torch.save(state, target)
        return target
    import torch.distributed.checkpoint as dcp

    target = folder / "step-0"
    with warnings.catch_warnings():  # a one-process save: "torch.distributed is not initialised"
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(target))
    return target


def run(code: str, target: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark subprocess failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def warm(target: Path) -> None:
    for f in [target] if target.is_file() else sorted(target.iterdir()):
        with open(f, "rb") as fh:
            while fh.read(64 << 20):
                pass


def measure(size: str, dtype: str, fmt: str, root: Path, repeat: int) -> dict:
    folder = root / f"llama-{size}-{dtype}-{fmt}"
    target = save(size, dtype, fmt, folder)
    warm(target)
    floors, tools = [], []
    for _ in range(repeat):  # interleaved: both sides see the same load
        floors.append(run(FLOOR[fmt], target))
        tools.append(run(TOOL, target))
    shutil.rmtree(folder)
    d, _, _, vocab = SIZES[size]
    largest = vocab * d * (2 if dtype in ("bf16", "fp16") else 4)
    params = parameter_count(size)
    med = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    tool_s = med(tools, "seconds")
    return {"size": size, "dtype": dtype, "format": fmt, "params": params, "floor": med(floors, "seconds"),
            "tool": tool_s, "ratio": statistics.median(t["seconds"] / f["seconds"] for t, f in zip(tools, floors)),
            "ns_per_param": tool_s / params * 1e9, "peak_ratio": med(tools, "above_kb") * 1024 / largest,
            "floor_peak_ratio": med(floors, "above_kb") * 1024 / largest, "cpu": med(tools, "cpu"),
            "floor_cpu": med(floors, "cpu"), "load": statistics.median(r["load"] for r in floors + tools),
            "workers": tools[0]["extra"]["workers"], "findings": tools[0]["extra"]["findings"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="125m")
    ap.add_argument("--dtypes", default="fp32")
    ap.add_argument("--formats", default="pt,dcp")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of each side (medians)")
    ap.add_argument("--dir", type=Path, help="where to save (default: a temporary folder)")
    ap.add_argument("--json", type=Path, help="also write the rows to this file")
    args = ap.parse_args()
    sizes = [s.strip().lower() for s in args.sizes.split(",")]
    formats = [f.strip().lower() for f in args.formats.split(",")]
    if [s for s in sizes if s not in SIZES] or [f for f in formats if f not in FLOOR]:
        ap.error(f"--sizes from {', '.join(SIZES)}; --formats from {', '.join(FLOOR)}")
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="initaudit-formats-")
        args.dir = Path(tmp.name)
    print(f"{'size':>5} {'dtype':>5} {'fmt':>4} {'floor s':>8} {'tool s':>7} {'ratio':>6} {'ns/param':>8} "
          f"{'peak/largest':>12} {'floor':>6} {'CPU/wall':>8} {'floor':>6} {'load':>5}", flush=True)
    rows = []
    for size in sizes:
        for dtype in args.dtypes.split(","):
            for fmt in formats:
                r = measure(size, dtype, fmt, args.dir, args.repeat)
                rows.append(r)
                print(f"{size:>5} {dtype:>5} {fmt:>4} {r['floor']:>8.2f} {r['tool']:>7.2f} {r['ratio']:>5.2f}x "
                      f"{r['ns_per_param']:>8.2f} {r['peak_ratio']:>11.2f}x {r['floor_peak_ratio']:>5.2f}x "
                      f"{r['cpu']:>8.2f} {r['floor_cpu']:>6.2f} {r['load']:>5.1f}", flush=True)
    print(f"{os.cpu_count()} CPUs; {rows[0]['workers'] if rows else 0} workers; medians of {args.repeat} "
          "interleaved runs; load is the machine's 1-minute average during the runs")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
