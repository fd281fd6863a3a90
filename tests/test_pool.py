"""The static pass of large checkpoints: worker pool, shards unmapped once analysed, row searches
only where a rule reads them, ``initaudit files --jobs N``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

import initaudit
from initaudit import pool
from initaudit.analysis import AnalysisOptions, duplicate_rows, orthogonal_gain
from initaudit.cli import main
from initaudit.context import Context
from initaudit.loaders.shards import ShardReader
from initaudit.loaders.target import load_target


def _sharded(folder: Path) -> Path:
    """A two-shard checkpoint with defects: copied rows, near-copied rows, a zeroed layer, a
    bf16 tensor, and healthy layers around them."""
    g = torch.Generator().manual_seed(0)
    copied = torch.randn(128, 64, generator=g) / 8
    copied[64:] = copied[:64]
    near = torch.randn(96, 256, generator=g) / 16
    near[50] = near[10] + 1e-3 * torch.randn(256, generator=g)
    first = {"a.weight": torch.randn(64, 64, generator=g) / 8, "a.bias": torch.zeros(64),
             "copied.weight": copied, "near.weight": near}
    second = {"zero.weight": torch.zeros(32, 64), "half.weight": (torch.randn(64, 32, generator=g) / 6).bfloat16(),
              "ln.weight": torch.ones(64)}
    folder.mkdir()
    save_file(first, folder / "model-00001-of-00002.safetensors")
    save_file(second, folder / "model-00002-of-00002.safetensors")
    index = folder / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {**{k: "model-00001-of-00002.safetensors" for k in first},
                                                **{k: "model-00002-of-00002.safetensors" for k in second}}}))
    return index


def _summary(report) -> tuple:
    """Findings and per-layer schemes exactly; statistics to fp32 rounding (a worker sums on one
    thread, the caller on several: the order of additions differs)."""
    return ([(f.rule, f.layer, f.severity.value, f.message) for f in report.findings],
            [(row["param"], row["matched_schemes"], {k: pytest.approx(v, rel=1e-5, abs=1e-9)
                                                     for k, v in row["stats"].items()})
             for row in report.layers])


def test_worker_pool_gives_the_serial_report(tmp_path, monkeypatch):
    index = _sharded(tmp_path / "ckpt")
    serial = initaudit.audit(str(index), config=False)
    assert pool.worker_count(sum(p.stat().st_size for p in index.parent.glob("*.safetensors"))) == 0
    calls = []
    real = pool.analyze_in_workers
    monkeypatch.setattr(pool, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(pool, "BATCH_BYTES", 1)  # one tensor per batch: several in flight
    monkeypatch.setattr(pool, "available_cores", lambda: 2)
    monkeypatch.setattr(pool, "analyze_in_workers", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    parallel = initaudit.audit(str(index), config=False)
    assert len(calls) == 1 and len(calls[0]) == 7  # every tensor went to the workers
    assert _summary(parallel) == _summary(serial)
    assert {(f.rule, f.layer) for f in serial.findings} >= {  # the defects are seen
        ("IA102", "zero.weight"), ("IA103", "copied.weight"), ("IA103", "near.weight")}


def test_shards_are_unmapped_once_analysed(tmp_path):
    index = _sharded(tmp_path / "ckpt")
    graph, _ = load_target(str(index))
    ctx = Context(graph, "init")
    ctx.analyze_all()
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("no /proc/self/maps on this platform")
    mapped = [line for line in maps.read_text().splitlines() if str(index.parent) in line]
    assert mapped == [] and len(ctx._cache) == 7


def test_shard_reader_holds_one_file_within_its_budget(tmp_path):
    save_file({"x": torch.ones(1000), "y": torch.ones(1000)}, tmp_path / "a.safetensors")
    save_file({"z": torch.full((10,), 2.0)}, tmp_path / "b.safetensors")
    files = {"x": tmp_path / "a.safetensors", "y": tmp_path / "a.safetensors", "z": tmp_path / "b.safetensors"}
    within = ShardReader(files)
    assert [float(within(n).sum()) for n in ("x", "y", "z")] == [1000.0, 1000.0, 20.0]
    assert within.opens == 2  # a.safetensors once for both of its tensors, then b
    tight = ShardReader(files, budget=1)
    for name in ("x", "y", "z"):
        tight(name)
    assert tight.opens == 3  # over budget after each tensor: reopened
    tight.close()
    assert tight._handle is None
    # x and y are 4000 bytes each: y would take a 6000-byte budget to 8000, so the handle is
    # closed before y is read (not once the budget was already passed), and z opens b.
    before = ShardReader(files, budget=6000)
    for name in ("x", "y", "z"):
        before(name)
    assert before.opens == 3


def _linear_with_copies() -> torch.nn.Module:
    model = torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight[32:] = model[0].weight[:32]
    return model


def test_row_search_runs_only_when_a_rule_reads_it(monkeypatch):
    import initaudit.analysis as analysis

    calls = []
    real = analysis.duplicate_rows
    monkeypatch.setattr(analysis, "duplicate_rows", lambda *a: calls.append(1) or real(*a))
    without = initaudit.audit(_linear_with_copies(), config=False, ignore=["IA103"], probe_enabled=False)
    assert calls == [] and "IA103" not in {f.rule for f in without.findings}
    with_rule = initaudit.audit(_linear_with_copies(), config=False, probe_enabled=False)
    assert calls and "IA103" in {f.rule for f in with_rule.findings}


@pytest.mark.parametrize("shape", [(256, 64), (64, 256), (64, 64)])
def test_orthogonal_gain_tall_wide_and_square(shape):
    w = torch.empty(shape)
    torch.nn.init.orthogonal_(w, gain=1.5)
    assert abs(orthogonal_gain(w) - 1.5) < 1e-3
    assert orthogonal_gain(torch.randn(shape, generator=torch.Generator().manual_seed(1))) is None


def test_near_duplicates_of_wide_rows_found_through_the_window():
    """Rows wider than the hash window: candidates are screened on the window, then checked on
    full rows; recall against all pairs stays >= 0.95 with no false pair."""
    g = torch.Generator().manual_seed(0)
    d = 1024
    rows = torch.randn(2000, d, generator=g) + 2.0 * torch.randn(d, generator=g)
    centre = rows.mean(0)
    for k in range(40):
        a, b = 2 * k, 2 * k + 1001
        noise = (0.01 + 0.002 * k) * (rows[a] - centre).norm() / d ** 0.5
        rows[b] = rows[a] + noise * torch.randn(d, generator=g)
    c = rows - rows.mean(0)
    c = c / c.norm(dim=1, keepdim=True)
    truth = {tuple(p) for p in torch.nonzero(torch.triu(c @ c.T, diagonal=1) >= 0.995).tolist()}
    assert len(truth) >= 30
    found = duplicate_rows(rows, AnalysisOptions(near_duplicate_cosine=0.995))
    pairs = {(grp[0], x) for grp in found.near_groups for x in grp[1:]}
    assert len(pairs & truth) / len(truth) >= 0.95 and pairs <= truth


def test_files_jobs_prints_every_report_in_order_with_the_exit_code(tmp_path):
    g = torch.Generator().manual_seed(0)
    copied = torch.randn(64, 32, generator=g) / 6
    copied[32:] = copied[:32]
    save_file({"fc.weight": copied}, tmp_path / "dup.safetensors")
    save_file({"fc.weight": torch.randn(64, 32, generator=g) / 32 ** 0.5}, tmp_path / "ok.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a checkpoint")
    paths = [str(tmp_path / n) for n in ("ok.safetensors", "dup.safetensors", "bad.safetensors")]
    serial = CliRunner().invoke(main, ["files", *paths, "--isolated", "--format", "concise"])
    parallel = CliRunner().invoke(main, ["files", "--jobs", "2", *paths, "--isolated", "--format", "concise"])
    assert serial.exit_code == parallel.exit_code == 2  # bad.safetensors could not be read
    assert parallel.stdout == serial.stdout and "IA103" in parallel.stdout
    assert "bad.safetensors" in parallel.stderr
    ok_first = CliRunner().invoke(main, ["files", "-j", "0", *paths[:2], "--isolated"])
    assert ok_first.exit_code == 1
    assert ok_first.stdout.index("ok.safetensors") < ok_first.stdout.index("dup.safetensors")
