"""False alarms on held-out real architectures: audit each model of a model list in the four
forms a user meets it in, each (model, form) in its own process, and tally the findings.

    python benchmarks/sweep/run.py benchmarks/sweep/text.py [--forms module,onnx] [--only a,b]
        [--out results.jsonl] [--timeout 900]
    python benchmarks/sweep/run.py --tally results.jsonl

A model list is a Python file whose ``MODELS`` maps a name to a factory that builds the model
from its library's config with the library's own default initialisation (no download). Every
model is healthy as built, so every error or warning is a false alarm unless a measurement shows
the defect is there (the zoo tests pin the true ones). The audit is what a user runs: no
``--inputs``; the probe makes its own by the ecosystem's conventions. The ONNX form exports with
the inputs that convention makes, or for a plain torch.nn program the probe's inputs for its first
layer (the legacy exporter, opset 17, eval mode, as tests/zoo does).

Each line of the output is one (model, form): the findings at warning and error severity, the
capture and probe sections of the report, the time taken, or the failure (exit code 2 and its
message are kept: a held-out model the tool cannot read is a result too).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "tests"))

FORMS = ("module", "safetensors-model", "safetensors-bare", "onnx")


def _models(path: str) -> dict:
    spec = importlib.util.spec_from_file_location("sweep_models", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.MODELS


def _convention_inputs(model):
    import torch

    from initaudit.probe.conventions import from_convention

    made = from_convention(model, 2, torch.Generator().manual_seed(0))
    if made is None:  # a plain torch.nn program: the inputs the probe makes for its first layer
        from initaudit.loaders.torch_module import graph_from_module
        from initaudit.probe.inputs import synthesize

        made = synthesize(model, graph_from_module(model, type(model).__name__), 2, 0)
    return made.kwargs if made.kwargs else made.args


def audit_one(models_file: str, name: str, form: str) -> dict:
    """Build ``name`` and audit it in ``form``; the report's alarms, capture and probe sections."""
    import torch

    import initaudit
    from zoo.forms import export_onnx, save_safetensors

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = _models(models_file)[name]()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if form == "module":
            report = initaudit.audit(model)
        elif form in ("safetensors-model", "safetensors-bare"):
            path = save_safetensors(model, tmp / "model.safetensors")
            report = initaudit.audit(path, model=model) if form == "safetensors-model" else initaudit.audit(path)
        else:
            path = export_onnx(model, _convention_inputs(model), tmp / "model.onnx")
            report = initaudit.audit(path)
        data = report.to_json()
    alarms = [{"severity": f["severity"], "rule": f["rule"], "layer": f.get("layer"), "message": f["message"]}
              for f in data["findings"] if f["severity"] in ("error", "warning")]
    return {"capture": data.get("capture"), "probe": data.get("probe"), "alarms": alarms,
            "seconds": round(time.perf_counter() - start, 1)}


def _run(models_file: str, name: str, form: str, timeout: float) -> dict:
    cmd = [sys.executable, str(HERE), "--one", models_file, name, form]
    row = {"model": name, "form": form}
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return row | {"failed": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode == 0 and lines:
        return row | json.loads(lines[-1])
    tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
    return row | {"failed": f"exit {done.returncode}: {tail[:300]}"}


def tally(path: str) -> None:
    rows = [json.loads(ln) for ln in Path(path).read_text().splitlines() if ln.strip()]
    by_form = collections.defaultdict(lambda: collections.Counter())
    causes = collections.Counter()
    for r in rows:
        c = by_form[r["form"]]
        c["runs"] += 1
        if "failed" in r:
            c["failed"] += 1
            continue
        c["probe ran"] += bool((r.get("probe") or {}).get("ran"))
        for a in r["alarms"]:
            c[a["severity"]] += 1
            causes[(a["severity"], a["rule"], r["form"], r["model"])] += 1
        c["gate fails"] += any(a["severity"] == "error" for a in r["alarms"])
    print(f"{'form':20} runs failed probe  errors warnings gate-fails")
    for form in FORMS:
        c = by_form.get(form)
        if c:
            print(f"{form:20} {c['runs']:4} {c['failed']:6} {c['probe ran']:5} {c['error']:7} {c['warning']:8}"
                  f" {c['gate fails']:10}")
    print("\nalarms by (severity, rule, form, model):")
    for (sev, rule, form, model), n in causes.most_common():
        print(f"  {n:3}  {sev:7} {rule:6} {form:18} {model}")
    for r in rows:
        if "failed" in r:
            print(f"  FAILED {r['model']} [{r['form']}]: {r['failed']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="?", help="a model list (a .py file defining MODELS)")
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--only", default="", help="comma-separated model names")
    ap.add_argument("--out", default="sweep.jsonl")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--tally", metavar="JSONL", help="print the tally of a results file and exit")
    ap.add_argument("--one", nargs=3, metavar=("MODELS", "NAME", "FORM"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(audit_one(*args.one)))
        return
    if args.tally:
        tally(args.tally)
        return
    names = [n for n in _models(args.models) if not args.only or n in args.only.split(",")]
    with open(args.out, "a") as out:
        for name in names:
            for form in args.forms.split(","):
                row = _run(args.models, name, form, args.timeout)
                out.write(json.dumps(row) + "\n")
                out.flush()
                alarms = row.get("alarms", [])
                print(f"{name:28} {form:18} " + (row["failed"] if "failed" in row else
                      f"{sum(a['severity'] == 'error' for a in alarms)} errors, "
                      f"{sum(a['severity'] == 'warning' for a in alarms)} warnings, {row['seconds']} s"),
                      flush=True)
    tally(args.out)


if __name__ == "__main__":
    main()
