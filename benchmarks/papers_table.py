"""Findings of the published init schemes (tests/papers.py) per load form: the module, a bare
.safetensors, .safetensors with --model (the factory's architecture) and ONNX (classic exporter).

    python benchmarks/papers_table.py [--forms module,bare,model,onnx] [--names a,b] [--out f.json]

Prints one line per scheme and form (errors/warnings and the serious findings) and the totals.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import warnings
from pathlib import Path

import torch
from safetensors.torch import save_file
from torch.nn.utils import parametrize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import papers  # noqa: E402

import initaudit  # noqa: E402


def _report(name: str, form: str, tmp: Path) -> initaudit.Report:
    build, x = {**papers.SCHEMES, **papers.DEFECTS}[name], papers.inputs(name)
    if form == "module":
        return initaudit.audit(build(), inputs=x, config=False)
    if form == "onnx":
        path = tmp / f"{name}.onnx"
        model = build().eval()
        for m in model.modules():  # the exporter cannot trace spectral_norm / orthogonal: bake them
            if parametrize.is_parametrized(m, "weight"):
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (x,), str(path), dynamo=False, opset_version=17,
                              input_names=["x"], dynamic_axes={"x": {0: "batch"}})
        return initaudit.audit(path, inputs=x, config=False)
    path = tmp / f"{name}.safetensors"
    state = {k: v.detach().contiguous() for k, v in build().state_dict().items()}
    save_file(state, str(path))
    if form == "bare":
        return initaudit.audit(path, config=False)
    return initaudit.audit(path, model=build(), inputs=x, config=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--forms", default="module,bare,model,onnx")
    ap.add_argument("--names", default=",".join(papers.SCHEMES))
    ap.add_argument("--out")
    args = ap.parse_args()
    rows, totals = [], {}
    with tempfile.TemporaryDirectory() as d:
        for form in args.forms.split(","):
            for name in args.names.split(","):
                try:
                    rep = _report(name, form, Path(d))
                    serious = [(f.rule, f.severity.value, f.layer) for f in rep.findings
                               if f.severity.value in ("error", "warning")]
                except Exception as exc:  # a form that cannot be built is a row, not a crash
                    serious = [("FAILED", "error", f"{type(exc).__name__}: {exc}"[:160])]
                e = sum(s[1] == "error" for s in serious)
                w = len(serious) - e
                t = totals.setdefault(form, [0, 0])
                t[0] += e
                t[1] += w
                rows.append({"form": form, "name": name, "errors": e, "warnings": w, "findings": serious})
                print(f"{form:7s} {name:18s} E{e:<3d} W{w:<3d} {serious[:8]}", flush=True)
    for form, (e, w) in totals.items():
        print(f"TOTAL {form}: {e} errors / {w} warnings")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "totals": totals}, indent=1))


if __name__ == "__main__":
    main()
