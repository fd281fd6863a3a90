"""ONNX benchmarks: the onnxruntime probe against a plain onnxruntime run, and the static pass
on a GPT-2-small-sized ONNX file with external data against a plain ``onnx.load``.

    python benchmarks/bench_onnx.py            # everything (a few minutes on 2 cores)
    python benchmarks/bench_onnx.py --quick    # smaller models, for a smoke test
    python benchmarks/bench_onnx.py --keep DIR # keep (and reuse) the generated files in DIR

Every measurement runs in its own subprocess, so peak memory (VmHWM) is that of the
operation alone; "+peak" is the peak minus the process's RSS just before the timed operation
(the imports). Files are read once before timing, so every variant reads from the page cache.

Targets: the probe step of an audit (its isolated onnxruntime worker started while the static
pass runs) <= 2x a plain run of the same model and batch (a new session and one batch,
onnxruntime already imported); static pass <= 1.5x onnx.load. Medians of several rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # onnx_models: the test-suite's model builders


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak() -> int:
    """Peak RSS of this process (VmHWM: fresh after exec, unlike ru_maxrss, which Linux
    carries over from the parent)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# ---- child processes: one measurement each --------------------------------------------------


def _plain_run(path: str, graph, batch: int) -> None:
    """What a user's plain inference costs: a new onnxruntime session and one batch."""
    import onnxruntime as ort

    from initaudit.probe.onnx_inputs import synthetic_inputs
    from initaudit.probe.onnx_probe import session_options

    sess = ort.InferenceSession(path, session_options(), providers=["CPUExecutionProvider"])
    feeds, _ = synthetic_inputs(sess, batch_size=batch, seed=0, embedding_rows=graph.onnx.embedding_inputs)
    sess.run(None, feeds)


def _median(xs: list[float]) -> float:
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2


def _startup_seconds() -> tuple[float, float]:
    """(first, second): one trivial run on a fresh isolated worker (start-up included), then a
    second run on the same worker: the difference is what starting the worker costs."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper

    from initaudit.probe.ort_process import IsolatedRuntime

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()
    feeds = {"x": np.ones((1, 4), np.float32)}
    runtime = IsolatedRuntime()
    try:
        times = []
        for _ in range(2):
            t = time.perf_counter()
            runtime.run(blob, ["y"], feeds, {}, 1, None)
            times.append(time.perf_counter() - t)
    finally:
        runtime.close()
    del onnx
    return times[0], times[1]


def child(mode: str, path: str, batch: int, reps: int) -> dict:
    if mode == "startup":
        rounds = [_startup_seconds() for _ in range(max(3, reps))]
        return {"first": _median([a for a, _ in rounds]), "second": _median([b for _, b in rounds]),
                "startup": _median([a - b for a, b in rounds])}
    if mode == "time":  # the variants alternating in one process, ``reps`` rounds: medians
        import initaudit
        from initaudit.loaders.onnx_loader import load_onnx
        from initaudit.probe.onnx_probe import run_onnx_probe
        from initaudit.probe.stats import site_stats

        g = load_onnx(path)
        stats_time = [0.0]

        def timed(x, **kw):
            t0 = time.perf_counter()
            try:
                return site_stats(x, **kw)
            finally:
                stats_time[0] += time.perf_counter() - t0

        import initaudit.engine as engine

        real_run_probe, in_audit = engine.run_probe, [0.0]

        def timed_run_probe(*a, **kw):  # the probe step of an audit: its worker started earlier
            t0 = time.perf_counter()
            try:
                return real_run_probe(*a, **kw)
            finally:
                in_audit[0] = time.perf_counter() - t0

        engine.run_probe = timed_run_probe
        plain, probe, stats, audited, whole = [], [], [], [], []
        for _ in range(reps):
            t = time.perf_counter()
            _plain_run(path, g, batch)
            plain.append(time.perf_counter() - t)
            stats_time[0] = 0.0
            t = time.perf_counter()
            res = run_onnx_probe(g, path, batch_size=batch, site_stats=timed)
            probe.append(time.perf_counter() - t)
            stats.append(stats_time[0])
            assert res.ran, res.skipped_reason
            t = time.perf_counter()
            report = initaudit.audit(path, config=False, probe_batch_size=batch)
            whole.append(time.perf_counter() - t)
            assert report.probe.ran, report.probe.skipped_reason
            audited.append(in_audit[0])
        return {"plain": _median(plain), "probe": _median(probe), "stats_seconds": _median(stats),
                "in_audit": _median(audited), "audit": _median(whole),
                "sites": len(res.sites), "notes": res.notes}
    if mode == "onnx.load":
        import onnx

        base = _rss()
        t = time.perf_counter()
        model = onnx.load(path)
        secs = time.perf_counter() - t
        n = len(model.graph.initializer)
        return {"seconds": secs, "peak": _peak(), "base": base, "initializers": n}
    if mode == "load_onnx":  # the loader alone: graph + every tensor read once
        import initaudit.loaders.onnx_loader as L

        base = _rss()
        t = time.perf_counter()
        g = L.load_onnx(path)
        graph_s = time.perf_counter() - t
        total = 0.0
        for name in g.params:  # tensors are memory-mapped: sum to actually read every value
            total += float(g.load_tensor(name).float().sum())
        secs = time.perf_counter() - t
        return {"seconds": secs, "graph_seconds": graph_s, "peak": _peak(), "base": base, "checksum": total}
    if mode == "audit":
        import initaudit
        from initaudit.engine import Settings

        kw = {"probe_enabled": False} if hasattr(Settings(), "probe_enabled") else {}
        base = _rss()
        t = time.perf_counter()
        report = initaudit.audit(path, **kw)
        secs = time.perf_counter() - t
        return {"seconds": secs, "peak": _peak(), "base": base, "summary": report.summary(),
                "params": report.parameter_count}
    if mode in ("ort", "probe"):
        from initaudit.loaders.onnx_loader import load_onnx
        from initaudit.probe.onnx_probe import run_onnx_probe

        g = load_onnx(path)
        base = _rss()
        t = time.perf_counter()
        if mode == "ort":
            _plain_run(path, g, batch)
        else:
            res = run_onnx_probe(g, path, batch_size=batch)
            assert res.ran, res.skipped_reason
        return {"seconds": time.perf_counter() - t, "peak": _peak(), "base": base}
    raise SystemExit(f"unknown mode {mode}")


def measure(mode: str, path: Path, batch: int = 0, reps: int = 1) -> dict:
    cmd = [sys.executable, __file__, "--child", mode, str(path), str(batch), str(reps)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _mb(n: int) -> str:
    return f"{n / 2**20:,.0f} MB"


# ---- models ---------------------------------------------------------------------------------


def build_probe_models(folder: Path, quick: bool) -> list[tuple[str, Path, int]]:
    import torch

    from onnx_models import TinyGPT, TinyResNet, export, mlp_onnx

    out = []
    cnn = folder / "cnn.onnx"
    if not cnn.exists():
        export(TinyResNet(c=32 if quick else 64, blocks=2 if quick else 4), (torch.randn(2, 3, 32, 32),), cnn)
    out.append(("ResNet-style CNN (BN folded), 32x32 px", cnn, 16 if quick else 64))
    gpt = folder / "gpt.onnx"
    if not gpt.exists():
        export(TinyGPT(vocab=2000, d=128 if quick else 384, layers=2 if quick else 6, heads=4 if quick else 6, ctx=128),
               (torch.randint(0, 2000, (2, 128)),), gpt, input_names=["ids"],
               dynamic_axes={"ids": {0: "batch"}})
    out.append(("GPT-style transformer, 128 tokens", gpt, 4 if quick else 16))
    mlp = folder / "mlp.onnx"
    if not mlp.exists():
        mlp_onnx(mlp, depth=8, width=512 if quick else 2048)
    out.append(("MLP 8 x " + ("512" if quick else "2048"), mlp, 64 if quick else 256))
    return out


def build_gpt2(folder: Path, quick: bool) -> Path:
    from onnx_models import gpt2_sized_onnx

    path = folder / ("gpt2_small_quick.onnx" if quick else "gpt2_small.onnx")
    if not path.exists():
        t = time.perf_counter()
        if quick:
            gpt2_sized_onnx(path, layers=2, d=256, vocab=8000, ctx=256)
        else:
            gpt2_sized_onnx(path)
        print(f"  built {path.name} + external data in {time.perf_counter() - t:.1f}s")
    return path


# ---- main -----------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--keep", type=Path, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--skip-static", action="store_true")
    ap.add_argument("--child", nargs=4, metavar=("MODE", "PATH", "BATCH", "REPS"))
    args = ap.parse_args()
    if args.child:
        mode, path, batch, reps = args.child
        print(json.dumps(child(mode, path, int(batch), int(reps))))
        return 0
    tmp = None
    if args.keep:
        folder = args.keep
        folder.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="initaudit-bench-")
        folder = Path(tmp.name)
    print(f"initaudit ONNX benchmarks ({os.cpu_count()} CPUs){' [quick]' if args.quick else ''}\n")

    print("1. Probe vs a plain onnxruntime run (new session + one batch): medians of "
          f"{args.reps} rounds, the variants alternating in one process; peak memory of one run each "
          "in its own process")
    print(f"  {'model':36s} {'batch':>5s} {'plain':>8s} {'probe':>8s} {'ratio':>6s} {'cold':>8s} "
          f"{'ratio':>6s} {'stats':>7s} {'sites':>5s} {'plain +peak':>12s} {'probe +peak':>12s}")
    ok = True
    for title, path, batch in build_probe_models(folder, args.quick):
        timing = measure("time", path, batch, args.reps)
        plain_mem, probe_mem = measure("ort", path, batch), measure("probe", path, batch)
        ratio = timing["in_audit"] / timing["plain"]
        ok &= ratio <= 2.0
        print(f"  {title:36s} {batch:5d} {timing['plain']:7.3f}s {timing['in_audit']:7.3f}s {ratio:5.2f}x "
              f"{timing['probe']:7.3f}s {timing['probe'] / timing['plain']:5.2f}x "
              f"{timing['stats_seconds']:6.3f}s {timing['sites']:5d} "
              f"{_mb(plain_mem['peak'] - plain_mem['base']):>12s} "
              f"{_mb(probe_mem['peak'] - probe_mem['base']):>12s}")
        print(f"  {'':36s} (whole audit, probe on: {timing['audit']:.3f}s)")
        if timing.get("notes"):
            print(f"  {'':36s} note: {'; '.join(timing['notes'])}")
    print("  probe: the probe step of initaudit.audit(path) (engine.run_probe), its isolated worker "
          "started while the\n  static pass ran; cold: run_onnx_probe alone, starting its own worker "
          "(the imports included);\n  stats: time inside the shared site_stats (initaudit.probe.stats), "
          "included in both")
    print("  target: probe <= 2x the plain run\n")

    start = measure("startup", folder, 0, args.reps)
    print(f"  worker start-up (a fresh isolated worker's first trivial run minus its second, median): "
          f"{start['startup']:.3f}s\n  (first {start['first']:.3f}s, second {start['second']:.3f}s); "
          "in an audit it overlaps the static pass\n")
    if args.skip_static:
        return 0 if ok else 1
    print("2. Static pass on a GPT-2-small-sized ONNX file with external data")
    gpt2 = build_gpt2(folder, args.quick)
    size = sum(p.stat().st_size for p in folder.glob(gpt2.name + "*"))
    measure("onnx.load", gpt2)  # page cache
    load = [measure("onnx.load", gpt2) for _ in range(2)]
    loader = [measure("load_onnx", gpt2) for _ in range(2)]
    full = [measure("audit", gpt2) for _ in range(2)]
    best = lambda rows: min(rows, key=lambda r: r["seconds"])  # noqa: E731
    load, loader, full = best(load), best(loader), best(full)
    print(f"  file: {gpt2.name} ({size / 2**20:,.0f} MB, {full['params']:,} parameters)")
    print(f"  {'variant':44s} {'time':>8s} {'ratio':>7s} {'peak RSS':>10s} {'+peak':>10s}")
    rows = [("onnx.load (plain, loads external data)", load),
            ("initaudit loader: graph + every tensor read", loader),
            ("initaudit.audit(path), probe off", full)]
    for name, r in rows:
        print(f"  {name:44s} {r['seconds']:7.3f}s {r['seconds'] / load['seconds']:6.2f}x "
              f"{_mb(r['peak']):>10s} {_mb(r['peak'] - r['base']):>10s}")
    print(f"  (loader graph build alone: {loader['graph_seconds'] * 1000:.0f} ms; audit summary: {full['summary']})")
    static_ratio = full["seconds"] / load["seconds"]
    print(f"  target: static pass <= 1.5x onnx.load -> {static_ratio:.2f}x "
          f"({'met' if static_ratio <= 1.5 else 'NOT met'}); loader alone "
          f"{loader['seconds'] / load['seconds']:.2f}x")
    if tmp is not None:
        tmp.cleanup()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
