"""The ONNX probe's isolated onnxruntime worker (issue 10): started while the static pass runs,
one worker for every run of the probe (the parts of a segmented graph), run as ``python -I -S``
with only numpy's and onnxruntime's folders added to ``sys.path``, and ended at once when the
probe does not run. Controls: ``--no-probe`` and a torch model start no worker."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import onnx
import pytest
from click.testing import CliRunner

import initaudit.context
import initaudit.probe.ort_process as ort_process
from initaudit.cli import main
from onnx_models import mlp_onnx


@pytest.fixture()
def workers(monkeypatch):
    """Every worker process the audit starts, and whether one existed when the static pass began."""
    started: list[subprocess.Popen] = []
    seen_at_analysis: list[int] = []
    real_popen = subprocess.Popen

    def popen(cmd, *a, **kw):
        proc = real_popen(cmd, *a, **kw)
        if str(ort_process.WORKER) in map(str, cmd):
            started.append(proc)
        return proc

    real_analyze = initaudit.context.Context.analyze_all

    def analyze_all(self, *a, **kw):
        seen_at_analysis.append(len(started))
        return real_analyze(self, *a, **kw)

    monkeypatch.setattr(ort_process.subprocess, "Popen", popen)
    monkeypatch.setattr(initaudit.context.Context, "analyze_all", analyze_all)
    return started, seen_at_analysis


def run(*args: str):
    return CliRunner().invoke(main, [*args, "--isolated", "-q"])


def test_worker_starts_before_the_static_pass_and_serves_every_part(tmp_path, workers, monkeypatch):
    started, seen_at_analysis = workers
    model = mlp_onnx(tmp_path / "m.onnx", depth=6, width=256)
    # a budget below one exposed output: the graph runs in several parts, all in one worker
    monkeypatch.setattr("initaudit.probe.onnx_probe.default_memory_budget", lambda: 1)
    res = run(str(model), "--format", "json", "--batch-size", "64")
    assert res.exit_code in (0, 1), res.output
    doc = json.loads(res.stdout)
    assert doc["probe"]["ran"]
    assert any("graph run in" in n and "parts" in n for n in doc["probe"]["notes"])
    assert len(started) == 1 and seen_at_analysis == [1]  # already running when the analysis began
    assert started[0].poll() == 0  # ended cleanly after serving its runs


def test_worker_of_a_probe_that_cannot_run_is_ended_at_once(tmp_path, workers):
    started, _ = workers
    model = onnx.load(mlp_onnx(tmp_path / "m.onnx"))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 1  # a fixed batch of 1
    onnx.save(model, tmp_path / "fixed.onnx")
    res = run(str(tmp_path / "fixed.onnx"), "--batch-size", "32")  # refused before any run
    assert res.exit_code == 2 and "fixed batch" in res.stderr
    assert len(started) == 1
    assert started[0].poll() == -signal.SIGKILL  # killed at once, not left to finish its imports


@pytest.mark.parametrize("args", [["--no-probe"], []])
def test_control_no_worker_without_an_onnx_probe(tmp_path, workers, args):
    started, _ = workers
    if args:
        target = str(mlp_onnx(tmp_path / "m.onnx"))
    else:  # a torch model: the probe runs in-process
        (tmp_path / "net.py").write_text("import torch.nn as nn\ndef build():\n"
                                         "    return nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))\n")
        target = f"{tmp_path / 'net.py'}:build"
    res = run(target, "--format", "json", *args)
    assert res.exit_code in (0, 1), res.output
    assert json.loads(res.stdout)["probe"]["ran"] is (not args)
    assert started == []


REPORTING_WORKER = (
    "import json, sys\n"
    "open({out!r}, 'w').write(json.dumps({{'isolated': sys.flags.isolated, 'no_site': sys.flags.no_site,\n"
    "    'path': sys.path, 'argv': sys.argv[1:]}}))\n"
    "sys.stdin.buffer.read(8)\n"
    "sys.exit(3)\n")


def test_worker_runs_isolated_without_site(tmp_path):
    """The worker's own flags, as the process sees them: -I (no environment, no user site, no
    script folder on sys.path) and -S (no site-packages .pth files run); the only extra path
    entries are the folders of numpy and onnxruntime."""
    model = mlp_onnx(tmp_path / "m.onnx")
    worker = tmp_path / "report_worker.py"
    seen_file = tmp_path / "seen.json"
    worker.write_text(REPORTING_WORKER.format(out=str(seen_file)))
    code = ("import sys; from pathlib import Path; import initaudit.probe.ort_process as p; "
            f"p.WORKER = Path({str(worker)!r}); from initaudit.cli import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, str(model), "--isolated", "--format", "json", "-q"],
                          capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path / "not-used")})
    assert proc.returncode in (0, 1), proc.stderr
    seen = json.loads(seen_file.read_text())
    assert seen["isolated"] == 1 and seen["no_site"] == 1
    assert str(tmp_path / "not-used") not in seen["path"] and str(tmp_path) not in seen["path"]
    assert seen["argv"] == ort_process.worker_paths() and seen["argv"]
    # the probe is lost (the worker exited 3), one line says so, the static report still comes out
    doc = json.loads(proc.stdout)
    assert doc["probe"]["ran"] is False and "exit status 3" in doc["probe"]["skipped_reason"]
    assert doc["layers"]
