"""The worker pool on zip ``.pt`` checkpoints and torch.distributed.checkpoint folders: the pooled
audit equals the serial one; workers read only their tensors, unpickle nothing from a zip and read
a DCP's metadata through the restricted unpickler themselves; a file that goes bad under them is
one clear line."""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import initaudit
from initaudit import pool
from initaudit.cli import main
from initaudit.context import Context
from initaudit.errors import TargetError, UnsafeCheckpointError
from initaudit.loaders.target import load_target
from initaudit.loaders.zip_records import ZipRecordSource
from test_pool import _summary

dcp = pytest.importorskip("torch.distributed.checkpoint")


def _state() -> dict[str, torch.Tensor]:
    """Defects (copied rows, near-copied rows, a zeroed layer, a NaN), a bf16 tensor, a
    transposed view sharing another tensor's storage, a sliced storage, and healthy layers."""
    g = torch.Generator().manual_seed(0)
    copied = torch.randn(128, 64, generator=g) / 8
    copied[64:] = copied[:64]
    near = torch.randn(96, 256, generator=g) / 16
    near[50] = near[10] + 1e-3 * torch.randn(256, generator=g)
    nan = torch.randn(10, 64, generator=g) / 8
    nan[0, 0] = float("nan")
    base = torch.randn(64, 64, generator=g) / 8
    wide = torch.randn(40, 64, generator=g) / 8
    return {"a.weight": base, "a.bias": torch.zeros(64), "copied.weight": copied, "near.weight": near,
            "zero.weight": torch.zeros(32, 64), "half.weight": (torch.randn(64, 32, generator=g) / 6).bfloat16(),
            "ln.weight": torch.ones(64), "nan.weight": nan, "tied.weight": base.t(),
            "slice.weight": wide[8:40]}


def _zip(tmp_path: Path) -> Path:
    path = tmp_path / "model.pt"
    torch.save({"state_dict": _state(), "epoch": 0}, path)
    return path


def _dcp(tmp_path: Path) -> Path:
    folder = tmp_path / "step-0"
    with warnings.catch_warnings():  # "torch.distributed is not initialised": a one-process save
        warnings.simplefilter("ignore")
        dcp.save({"model": _state()}, checkpoint_id=str(folder))
    return folder


def _shards(tmp_path: Path) -> Path:
    """Safetensors shards without an index (one folder, read as one checkpoint)."""
    from safetensors.torch import save_file

    folder = tmp_path / "shards"
    folder.mkdir()
    state = {k: v.contiguous().clone() for k, v in _state().items()}
    names = sorted(state)
    save_file({k: state[k] for k in names[:5]}, folder / "model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in names[5:]}, folder / "model-00002-of-00002.safetensors")
    return folder


def _compiled_shards(tmp_path: Path) -> Path:
    """The same shards as torch.compile'd models name them (``_orig_mod.*``): read and pooled
    under the model's names, the stored names read in the workers."""
    from safetensors.torch import save_file

    folder = _shards(tmp_path)
    for shard in folder.iterdir():
        from safetensors.torch import load_file

        save_file({"_orig_mod." + k: v for k, v in load_file(str(shard)).items()}, str(shard))
    return folder


@pytest.fixture()
def pooled(monkeypatch):
    """The pool on for any size, one tensor per batch (several in flight); the list of what
    was sent to the workers."""
    calls: list[list[str]] = []
    real = pool.analyze_in_workers
    monkeypatch.setattr(pool, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(pool, "BATCH_BYTES", 1)
    monkeypatch.setattr(pool, "available_cores", lambda: 2)
    monkeypatch.setattr(pool, "analyze_in_workers",
                        lambda *a, **k: calls.append([p.name for p in a[0]]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("build", [_zip, _dcp, _shards, _compiled_shards],
                         ids=["zip-pt", "dcp", "shards-no-index", "compiled-shards"])
def test_pooled_audit_equals_the_serial_one(tmp_path, build, request):
    target = build(tmp_path)
    serial = initaudit.audit(str(target), config=False)
    assert {(f.rule, f.layer) for f in serial.findings} >= {  # the defects are seen
        ("IA101", "nan.weight"), ("IA102", "zero.weight"), ("IA103", "copied.weight"),
        ("IA103", "near.weight")}
    calls = request.getfixturevalue("pooled")
    parallel = initaudit.audit(str(target), config=False)
    assert len(calls) == 1 and set(calls[0]) == {row["param"] for row in serial.layers} | {"a.bias", "ln.weight"}
    assert _summary(parallel) == _summary(serial)


def test_zip_records_are_the_tensors_torch_loads(tmp_path, pooled):
    path = _zip(tmp_path)
    graph, _ = load_target(str(path))
    source = graph.tensor_source
    assert isinstance(source, ZipRecordSource)
    loaded = torch.load(path, weights_only=True)["state_dict"]
    reader = source.open()
    for name in loaded:
        value = reader(name)
        assert value.dtype == loaded[name].dtype and torch.equal(value.nan_to_num(7.0), loaded[name].nan_to_num(7.0))
    reader.close()


@pytest.mark.parametrize("save", [
    lambda sd, p: torch.save(sd, p, _use_new_zipfile_serialization=False),  # legacy: no records
    lambda sd, p: torch.save(sd, p, pickle_protocol=4),  # rewritten in memory before loading
], ids=["legacy", "protocol-4"])
def test_checkpoints_without_exact_records_stay_serial(tmp_path, pooled, save):
    path = tmp_path / "model.pt"
    save(_state(), path)
    graph, _ = load_target(str(path))
    assert graph.tensor_source is None
    report = initaudit.audit(str(path), config=False)
    assert pooled == [] and ("IA103", "copied.weight") in {(f.rule, f.layer) for f in report.findings}


def test_zip_replaced_after_loading_is_one_line(tmp_path, pooled):
    path = _zip(tmp_path)
    graph, _ = load_target(str(path))
    os.replace(tmp_path / "model.pt", tmp_path / "old.pt")  # keep the inode alive: a new one below
    torch.save({"state_dict": {k: torch.ones_like(v) for k, v in _state().items()}}, path)
    with pytest.raises(TargetError, match="changed while it was being audited"):
        Context(graph, "init").analyze_all()


def test_hostile_dcp_metadata_is_refused_in_the_workers(tmp_path, pooled):
    """The caller read a sound .metadata; the file is swapped for a hostile pickle before the
    workers start: each reads it itself, through the restricted unpickler, and runs nothing."""
    folder = _dcp(tmp_path)
    graph, _ = load_target(str(folder))
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    (folder / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeCheckpointError, match=r"\.metadata: refused: the metadata pickle imports"):
        Context(graph, "init").analyze_all()
    assert pooled and not sentinel.exists()


def _truncate(folder: Path) -> None:
    chunk = folder / "__0_0.distcp"
    chunk.write_bytes(chunk.read_bytes()[:1000])


def test_truncated_distcp_shard_is_one_line_and_exit_2(tmp_path, pooled):
    folder = _dcp(tmp_path)
    _truncate(folder)
    result = CliRunner().invoke(main, [str(folder), "--no-probe", "--isolated"])
    assert result.exit_code == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "__0_0.distcp" in result.stderr and "truncated or corrupt checkpoint" in result.stderr


def test_distcp_shard_truncated_under_the_workers_is_one_line_and_exit_2(tmp_path, pooled, monkeypatch):
    folder = _dcp(tmp_path)
    real = Context.analyze_all

    def truncate_then_analyze(self):  # the shard goes bad after the caller checked it
        _truncate(folder)
        return real(self)

    monkeypatch.setattr(Context, "analyze_all", truncate_then_analyze)
    result = CliRunner().invoke(main, [str(folder), "--no-probe", "--isolated"])
    assert result.exit_code == 2 and pooled
    assert len(result.stderr.strip().splitlines()) == 1
    assert "__0_0.distcp" in result.stderr and "truncated or corrupt checkpoint" in result.stderr
