"""initaudit.audit() inside a torch.distributed job: an FSDP2-sharded model audited on two gloo
ranks gives the report of the unsharded model on every rank, a 64M-element weight that exists
only as shards is audited without any rank holding it whole, and the distributed checkpoint
(every tensor in two chunks) audits like the module it was saved from."""

from __future__ import annotations

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import initaudit

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("this torch has no FSDP2 (fully_shard)", allow_module_level=True)
import torch.distributed as dist  # noqa: E402

if not dist.is_available() or not dist.is_gloo_available():
    pytest.skip("torch.distributed with gloo is not available", allow_module_level=True)

TESTS = Path(__file__).resolve().parent
FACTORY = f"{TESTS / 'defective.py'}:build"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_addr", "127.0.0.1", "--master_port", str(_free_port()),
           str(TESTS / "dist_worker.py"), str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def _key(finding: dict) -> tuple:
    return finding["rule"], finding["layer"], finding["severity"]


def _close(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-7)


def test_sharded_audit_equals_the_unsharded_one(sharded_run):
    sharded = json.loads((sharded_run / "report0.json").read_text())
    assert json.loads((sharded_run / "report1.json").read_text()) == sharded  # every rank agrees
    single = initaudit.audit(FACTORY).to_json()
    assert sharded["probe"]["ran"] and single["probe"]["ran"]
    assert sorted(map(_key, sharded["findings"])) == sorted(map(_key, single["findings"]))
    # the planted defects are there: zero layer, copies, NaN, and the dead units the probe sees
    assert {"IA101", "IA102", "IA103"} <= {f["rule"] for f in sharded["findings"]}
    for a, b in zip(sharded["layers"], single["layers"], strict=True):
        assert a["param"] == b["param"] and a["shape"] == b["shape"]
        for stat in ("mean", "std", "min", "max", "zero_fraction"):
            assert _close(a["stats"][stat], b["stats"][stat]), (a["param"], stat)
    grads_a = {s["name"]: s for s in sharded["probe"]["sites"]}
    grads_b = {s["name"]: s for s in single["probe"]["sites"]}
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert _close(grads_a[name]["std"], grads_b[name]["std"]), name


def test_replicated_parameters_are_counted_once(sharded_run):
    """DTensors replicated on every rank: each box is counted by one rank, not by both."""
    single = initaudit.audit(FACTORY, probe_enabled=False).to_json()
    for rank in (0, 1):
        report = json.loads((sharded_run / f"replicated{rank}.json").read_text())
        assert sorted(map(_key, report["findings"])) == sorted(map(_key, single["findings"]))
        for a, b in zip(report["layers"], single["layers"], strict=True):
            assert a["stats"]["nonfinite"] == b["stats"]["nonfinite"], a["param"]  # 2 if counted twice
            for stat in ("mean", "std", "min", "max", "zero_fraction"):
                assert _close(a["stats"][stat], b["stats"][stat]), (a["param"], stat)


def test_distributed_checkpoint_of_the_sharded_model(sharded_run):
    folder = sharded_run / "dcp"
    assert sorted(p.name for p in folder.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    from initaudit.loaders.directory import _read_metadata

    meta = _read_metadata(folder)
    assert all(len(md.chunks) == 2 for k, md in meta.state_dict_metadata.items() if k.endswith("weight"))
    via_folder = initaudit.audit(folder, model=FACTORY, probe_enabled=False)
    via_module = initaudit.audit(FACTORY, probe_enabled=False)
    assert sorted((f.rule, f.layer, f.severity.value) for f in via_folder.findings) == \
        sorted((f.rule, f.layer, f.severity.value) for f in via_module.findings)


def test_no_rank_holds_the_whole_weight(sharded_run):
    """Each rank's peak memory during the static pass stays far below the 256 MB weight (gathering
    it, as ``full_tensor()`` did, costs twice that on each rank), and the statistics are the
    whole tensor's: the float64 merge of the two shards' sums, to fp32 rounding."""
    runs = [json.loads((sharded_run / f"big{r}.json").read_text()) for r in (0, 1)]
    assert runs[0]["report"]["layers"] == runs[1]["report"]["layers"]
    whole = runs[0]["whole_bytes"]
    for run in runs:
        assert run["peak_growth_bytes"]["analysis"] < whole / 2, run["peak_growth_bytes"]
    n = sum(r["local_elements"] for r in runs)
    mean = sum(r["local_sum"] for r in runs) / n
    std = math.sqrt(sum(r["local_sumsq"] for r in runs) / n - mean * mean)
    stats = runs[0]["report"]["layers"][0]["stats"]
    assert math.isclose(stats["mean"], mean, rel_tol=1e-4, abs_tol=1e-9)
    assert math.isclose(stats["std"], std, rel_tol=1e-6)
    assert stats["min"] == min(r["local_min"] for r in runs)
    assert stats["max"] == max(r["local_max"] for r in runs)
    assert not [f for f in runs[0]["report"]["findings"] if f["severity"] == "error"]
