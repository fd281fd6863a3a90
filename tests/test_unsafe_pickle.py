"""``--unsafe-pickle`` on a full pickled module (``torch.save(model)``, issue 10): the module it
loads is the architecture (recorded dataflow, probe), and every report says that code from the
file ran; a state_dict under the same flag is still read the safe way and says nothing ran."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

from initaudit.cli import main


def tanh_stack() -> nn.Sequential:
    """Six 64-unit tanh layers at N(0, 0.01^2): the signal collapses 10x per layer."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(6):
        lin = nn.Linear(64, 64)
        nn.init.normal_(lin.weight, std=0.01)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(64, 10))


def audit_json(*args: str) -> tuple[int, dict]:
    res = CliRunner().invoke(main, [*args, "--isolated", "--format", "json", "-q"])
    assert res.exit_code in (0, 1), res.output
    return res.exit_code, json.loads(res.stdout)


@pytest.fixture()
def files(tmp_path):
    model = tanh_stack()
    torch.save(model, tmp_path / "full.pt")
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    return tmp_path


def test_full_module_is_audited_in_its_own_architecture(files):
    _, doc = audit_json(str(files / "full.pt"), "--unsafe-pickle")
    assert doc["format"] == "torch-module" and doc["capture"] == "trace"
    assert doc["probe"]["ran"]  # a live module: the probe runs, as for a factory
    rows = {r["param"]: r for r in doc["layers"]}
    assert [rows[f"{i}.weight"]["activation"] for i in range(0, 12, 2)] == ["tanh"] * 6
    scale = [f for f in doc["findings"] if f["rule"] == "IA104"]
    assert scale and {f["evidence"]["scheme"] for f in scale} == {"xavier"}  # Xavier(tanh), not "unknown"
    assert any(f["rule"] == "IA204" for f in doc["findings"])  # measured collapse: the probe ran
    assert "code from the file ran" in doc["code_ran"] and "--unsafe-pickle" in doc["code_ran"]
    assert "freshly built" not in doc["stage_reason"]  # unpickled, not built by a factory


def test_every_report_says_code_ran(files, tmp_path):
    env = {"NO_COLOR": "1", "COLUMNS": "100"}
    rich = CliRunner(env=env).invoke(main, [str(files / "full.pt"), "--unsafe-pickle", "--isolated",
                                            "--no-probe"])
    assert rich.exit_code in (0, 1)
    assert "code ran" in rich.stdout and "your permissions" in rich.stdout
    md = CliRunner().invoke(main, [str(files / "full.pt"), "--unsafe-pickle", "--isolated", "--no-probe",
                                   "--format", "markdown"])
    assert "**Code ran**" in md.stdout


def test_state_dict_under_the_flag_is_read_safely_and_says_nothing_ran(files):
    code_a, plain = audit_json(str(files / "sd.pt"))
    code_b, flagged = audit_json(str(files / "sd.pt"), "--unsafe-pickle")
    assert flagged["code_ran"] is None and plain["code_ran"] is None
    assert flagged["format"] == "state-dict" and code_a == code_b
    assert flagged["findings"] == plain["findings"]
    rich = CliRunner(env={"NO_COLOR": "1"}).invoke(main, [str(files / "sd.pt"), "--unsafe-pickle", "--isolated"])
    assert "code ran" not in rich.stdout


def test_trained_batchnorm_module_is_judged_trained(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 30 * 30, 4))
    model.train()
    model(torch.randn(4, 3, 32, 32))  # one training-mode step updates the running statistics
    torch.save(model, tmp_path / "trained.pt")
    _, doc = audit_json(str(tmp_path / "trained.pt"), "--unsafe-pickle", "--no-probe")
    assert doc["stage"] == "trained" and "num_batches_tracked" in doc["stage_reason"]


def test_full_module_with_model_flag_takes_the_values_into_that_architecture(files, monkeypatch):
    (files / "arch.py").write_text("import sys\nsys.path.insert(0, %r)\nfrom test_unsafe_pickle import tanh_stack\n"
                                   "def build():\n    return tanh_stack()\n" % os.path.dirname(__file__))
    _, doc = audit_json(str(files / "full.pt"), "--unsafe-pickle", "--model", f"{files / 'arch.py'}:build",
                        "--no-probe")
    assert doc["format"] == "state-dict" and doc["capture"] == "trace"
    assert doc["code_ran"] and "code from the file ran" in doc["code_ran"]
