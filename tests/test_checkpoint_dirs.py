"""Checkpoint folders: torch.distributed.checkpoint directories and safetensors shards without an
index. Same findings as the module they were saved from; no code from the folder ever runs; no
byte is read from a file that is not the checkpoint's own."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from safetensors.torch import save_file

import initaudit
from initaudit.cli import main as cli_main
from initaudit.errors import TargetError, UnsafeCheckpointError

dcp = pytest.importorskip("torch.distributed.checkpoint")
TESTS = Path(__file__).resolve().parent
FACTORY = f"{TESTS / 'defective.py'}:build"


def _findings(report):
    return sorted((f.rule, f.layer, f.severity.value) for f in report.findings)


def _dcp_save(state: dict, folder: Path) -> Path:
    with warnings.catch_warnings():  # "torch.distributed is not initialised": a one-process save
        warnings.simplefilter("ignore")
        dcp.save(state, checkpoint_id=str(folder))
    return folder


@pytest.fixture()
def defective():
    import defective as module

    return module.build()


def test_dcp_folder_gives_the_findings_of_the_module(tmp_path, defective):
    folder = _dcp_save(defective.state_dict(), tmp_path / "step-0")
    bare = initaudit.audit(folder, probe_enabled=False)
    assert bare.format == "distributed-checkpoint"
    assert {f.rule for f in bare.findings} >= {"IA101", "IA102", "IA103"}
    with_model = initaudit.audit(folder, model=FACTORY, probe_enabled=False)
    module = initaudit.audit(FACTORY, probe_enabled=False)
    assert _findings(with_model) == _findings(module)


def test_dcp_tensors_equal_the_saved_ones(tmp_path):
    from initaudit.loaders.directory import read_directory

    torch.manual_seed(0)
    state = {"a": torch.randn(7, 5), "b": torch.randn(3, dtype=torch.float64),
             "c": torch.randn(4, 4).to(torch.bfloat16)}
    ckpt = read_directory(_dcp_save(state, tmp_path / "ck"))
    for name, value in state.items():
        assert torch.equal(ckpt.load(name), value)
        assert ckpt.dtypes[name] == str(value.dtype).replace("torch.", "")


def test_dcp_with_optimizer_state_is_trained_and_state_not_judged(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(8, 16)).sum().backward()
    opt.step()
    folder = _dcp_save({"model": model.state_dict(), "optim": opt.state_dict()}, tmp_path / "ck")
    report = initaudit.audit(folder, probe_enabled=False)
    assert report.stage == "trained"
    assert {layer["param"] for layer in report.layers} == {"0.weight", "2.weight"}
    assert "optim" in report.stage_reason


def test_hostile_dcp_metadata_runs_nothing(tmp_path):
    folder = _dcp_save({"w": torch.randn(4, 4)}, tmp_path / "ck")
    sentinel = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    (folder / ".metadata").write_bytes(pickle.dumps(Payload()))
    with pytest.raises(UnsafeCheckpointError, match="imports posix.system|imports os.system"):
        initaudit.audit(folder, probe_enabled=False)
    result = CliRunner().invoke(cli_main, [str(folder), "--no-probe"])
    assert result.exit_code == 2
    assert not sentinel.exists()


def test_corrupt_dcp_metadata_is_one_line(tmp_path):
    folder = _dcp_save({"w": torch.randn(4, 4)}, tmp_path / "ck")
    data = (folder / ".metadata").read_bytes()
    (folder / ".metadata").write_bytes(data[: len(data) // 2])
    result = subprocess.run([sys.executable, "-m", "initaudit", str(folder), "--no-probe"],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and ".metadata" in result.stderr


def _retarget(folder: Path, relative: str) -> None:
    """Point every storage entry of the metadata at ``relative`` (as a hostile writer would)."""
    from initaudit.loaders.directory import _MetadataUnpickler

    meta = _MetadataUnpickler(open(folder / ".metadata", "rb")).load()
    for info in meta.storage_data.values():
        info.relative_path = relative
    (folder / ".metadata").write_bytes(pickle.dumps(meta))


def test_chunk_outside_the_folder_is_refused(tmp_path):
    folder = _dcp_save({"w": torch.randn(4, 4)}, tmp_path / "ck")
    outside = tmp_path / "secret.distcp"
    os.replace(folder / "__0_0.distcp", outside)
    _retarget(folder, "../secret.distcp")
    with pytest.raises(TargetError, match="outside the checkpoint folder"):
        initaudit.audit(folder, probe_enabled=False)


def test_hard_linked_or_symlinked_chunk_is_refused(tmp_path):
    folder = _dcp_save({"w": torch.randn(4, 4)}, tmp_path / "ck")
    os.link(folder / "__0_0.distcp", tmp_path / "elsewhere.distcp")
    with pytest.raises(TargetError, match="hard links"):
        initaudit.audit(folder, probe_enabled=False)
    os.unlink(tmp_path / "elsewhere.distcp")
    os.replace(folder / "__0_0.distcp", tmp_path / "real.distcp")
    os.symlink(tmp_path / "real.distcp", folder / "__0_0.distcp")
    with pytest.raises(TargetError):
        initaudit.audit(folder, probe_enabled=False)


def test_truncated_chunk_file_is_refused(tmp_path):
    folder = _dcp_save({"w": torch.randn(64, 64)}, tmp_path / "ck")
    chunk = folder / "__0_0.distcp"
    chunk.write_bytes(chunk.read_bytes()[:100])
    with pytest.raises(TargetError, match="do not lie inside"):
        initaudit.audit(folder, probe_enabled=False)


def test_safetensors_shards_without_index(tmp_path, defective):
    state = {k: v.detach().clone() for k, v in defective.state_dict().items()}
    names = list(state)
    folder = tmp_path / "shards"
    folder.mkdir()
    save_file({k: state[k] for k in names[: len(names) // 2]}, folder / "model-00001-of-00002.safetensors")
    save_file({k: state[k] for k in names[len(names) // 2:]}, folder / "model-00002-of-00002.safetensors")
    single = tmp_path / "one.safetensors"
    save_file(state, single)
    assert _findings(initaudit.audit(folder, probe_enabled=False)) == \
        _findings(initaudit.audit(single, probe_enabled=False))
    assert _findings(initaudit.audit(folder, model=FACTORY, probe_enabled=False)) == \
        _findings(initaudit.audit(FACTORY, probe_enabled=False))


def test_shards_storing_one_tensor_twice_are_ambiguous(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    save_file({"w": torch.randn(4, 4)}, folder / "a.safetensors")
    save_file({"w": torch.randn(4, 4)}, folder / "b.safetensors")
    with pytest.raises(TargetError, match="both a.safetensors and b.safetensors"):
        initaudit.audit(folder, probe_enabled=False)


def test_empty_folder_is_one_clear_line(tmp_path):
    result = CliRunner().invoke(cli_main, [str(tmp_path), "--no-probe"])
    assert result.exit_code == 2
    assert "no checkpoint in it" in result.output


def _one_line_exit_2(folder: Path) -> str:
    result = CliRunner().invoke(cli_main, [str(folder), "--no-probe", "--isolated"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(folder) in lines[0]
    return lines[0]


def test_trainer_folder_reads_the_safetensors_and_names_what_it_left(tmp_path, defective):
    """A Hugging Face Trainer checkpoint folder: the weights as safetensors beside pickles of the
    optimizer and the training arguments, which are not weights and are never unpickled."""
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    state = {k: v.detach().clone() for k, v in defective.state_dict().items()}
    save_file(state, folder / "model.safetensors")
    torch.save({"state": {}, "param_groups": []}, folder / "optimizer.pt")
    (folder / "training_args.bin").write_bytes(b"\x80\x04not even a pickle")
    report = initaudit.audit(folder, probe_enabled=False)
    assert _findings(report) == _findings(initaudit.audit(folder / "model.safetensors", probe_enabled=False))
    assert any("not read from the folder: optimizer.pt, training_args.bin" in n for n in report.notes)


def test_dcp_beside_safetensors_is_ambiguous(tmp_path):
    folder = _dcp_save({"w": torch.randn(4, 4)}, tmp_path / "ck")
    save_file({"w": torch.randn(4, 4)}, folder / "model.safetensors")
    line = _one_line_exit_2(folder)
    assert "torch.distributed.checkpoint" in line and "model.safetensors" in line and "ambiguous" in line


def test_folder_of_pickles_only_names_the_file_to_give(tmp_path):
    folder = tmp_path / "ck"
    folder.mkdir()
    torch.save({"w": torch.randn(4, 4)}, folder / "model.pt")
    line = _one_line_exit_2(folder)
    assert "only model.pt" in line and str(folder / "model.pt") in line


def test_missing_shard_of_a_numbered_set_is_one_line(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    for i in (1, 3):
        save_file({f"l{i}.weight": torch.randn(8, 8)}, folder / f"model-0000{i}-of-00003.safetensors")
    line = _one_line_exit_2(folder)
    assert "model-00002-of-00003.safetensors is missing" in line and "3 shards and 2 are here" in line


def test_corrupt_shard_without_index_names_the_shard(tmp_path):
    folder = tmp_path / "shards"
    folder.mkdir()
    save_file({"a.weight": torch.randn(8, 8)}, folder / "model-00001-of-00002.safetensors")
    (folder / "model-00002-of-00002.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{broken")
    result = CliRunner().invoke(cli_main, [str(folder), "--no-probe", "--isolated"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "model-00002-of-00002.safetensors" in lines[0] and "cannot read safetensors" in lines[0]
