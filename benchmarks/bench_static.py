"""Static pass on a GPT-2-small-sized safetensors file (124M parameters, built locally).

Prints, measured in the same run:
- time:   initaudit's whole static pass (duplicate-row search included) / reading the file and
          summing every tensor (target <= 10x);
- memory: peak RSS above the process after ``import torch`` (worker processes included, sampled
          every 10 ms: benchmarks/measure.py) / the largest tensor (target <= 3x).

Each measurement runs in its own subprocess after one warm-up read, so page cache is equal;
medians of ``--repeat`` interleaved runs; the load average is printed beside the figures.
    python benchmarks/bench_static.py [--dir DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import PRELUDE  # noqa: E402

VOCAB, CTX, D, LAYERS = 50257, 1024, 768, 12


def build(path: Path) -> int:
    """GPT-2 small's tensor names and shapes, N(0, 0.02) weights: returns the parameter count."""
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {"wte.weight": torch.randn(VOCAB, D, generator=g) * 0.02,
               "wpe.weight": torch.randn(CTX, D, generator=g) * 0.01}
    for i in range(LAYERS):
        p = f"h.{i}."
        tensors.update({
            p + "ln_1.weight": torch.ones(D), p + "ln_1.bias": torch.zeros(D),
            p + "attn.c_attn.weight": torch.randn(D, 3 * D, generator=g) * 0.02,
            p + "attn.c_attn.bias": torch.zeros(3 * D),
            p + "attn.c_proj.weight": torch.randn(D, D, generator=g) * (0.02 / (2 * LAYERS) ** 0.5),
            p + "attn.c_proj.bias": torch.zeros(D),
            p + "ln_2.weight": torch.ones(D), p + "ln_2.bias": torch.zeros(D),
            p + "mlp.c_fc.weight": torch.randn(D, 4 * D, generator=g) * 0.02,
            p + "mlp.c_fc.bias": torch.zeros(4 * D),
            p + "mlp.c_proj.weight": torch.randn(4 * D, D, generator=g) * (0.02 / (2 * LAYERS) ** 0.5),
            p + "mlp.c_proj.bias": torch.zeros(D),
        })
    tensors["ln_f.weight"], tensors["ln_f.bias"] = torch.ones(D), torch.zeros(D)
    save_file(tensors, path)
    return sum(t.numel() for t in tensors.values())


_PRELUDE = PRELUDE + """
torch.set_num_threads({threads})
"""

BASELINE = _PRELUDE + """
from safetensors import safe_open
sampler = Sampler()
sampler.start()
start = time.perf_counter()
total = 0.0
with safe_open(path, framework="pt") as f:
    for name in f.keys():
        total += float(f.get_tensor(name).sum())
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "above_kb": sampler.above_kb()}))
"""

TOOL = _PRELUDE + """
import initaudit, initaudit.engine, initaudit.context, initaudit.pool, initaudit.analysis, initaudit.schemes
sampler = Sampler()
sampler.start()
start = time.perf_counter()
report = initaudit.audit(path, config=False)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "above_kb": sampler.above_kb(),
                  "findings": len(report.findings), "layers": len(report.layers)}))
"""

def measure(code: str, path: Path, threads: int) -> dict:
    out = subprocess.run([sys.executable, "-c", code.replace("{threads}", str(threads)), str(path)],
                         capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"benchmark subprocess failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, help="where to build the file (default: a temporary folder)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved runs of each side; medians count")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    tmp = None
    if args.dir is None:
        tmp = tempfile.TemporaryDirectory()
        args.dir = Path(tmp.name)
    path = args.dir / "gpt2-small.safetensors"
    if not path.exists():
        t0 = time.perf_counter()
        n = build(path)
        print(f"built {path} ({n / 1e6:.1f}M parameters, {path.stat().st_size / 1e6:.0f} MB) "
              f"in {time.perf_counter() - t0:.1f}s")
    path.read_bytes()  # warm the page cache for both sides
    largest = VOCAB * D * 4
    base, tool = [], []
    for _ in range(args.repeat):  # interleaved: both sides see the same load
        base.append(measure(BASELINE, path, args.threads))
        tool.append(measure(TOOL, path, args.threads))
    b = statistics.median(r["seconds"] for r in base)
    t = statistics.median(r["seconds"] for r in tool)
    peak_kb = statistics.median(r["above_kb"] for r in tool)
    base_kb = statistics.median(r["above_kb"] for r in base)
    print(f"baseline (read + sum every tensor): {b:.3f} s, peak +{base_kb / 1024:.0f} MB")
    print(f"initaudit static pass:              {t:.3f} s, peak +{peak_kb / 1024:.0f} MB "
          f"({tool[0]['layers']} layers, {tool[0]['findings']} findings)")
    print(f"time ratio   {t / b:.2f}x   (target <= 10x; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} CPUs)")
    print(f"memory ratio {peak_kb * 1024 / largest:.2f}x the largest tensor ({largest / 1e6:.0f} MB) "
          f"(target <= 3x)")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
