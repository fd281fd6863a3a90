"""initaudit.audit() and initaudit.testing.assert_healthy_init() read [tool.initaudit] as the
command line does, with config=False to opt out."""

from __future__ import annotations

import json

import pytest
import torch.nn as nn
from click.testing import CliRunner

import initaudit
from initaudit.cli import main
from initaudit.engine import Settings
from initaudit.testing import assert_healthy_init, run_rules

MODEL = '''
import torch, torch.nn as nn
def build():
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 10))
    nn.init.normal_(m[0].weight, std=0.01)   # IA104: far below Xavier before tanh
    nn.init.zeros_(m[0].bias)                # IA109: the hidden signal at m[2] falls to ~0.03x
    return m
'''


@pytest.fixture
def project(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.initaudit]\nignore = ["init-scale"]\nfail-on = "info"\n')
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.py").write_text(MODEL)
    return tmp_path


def codes(report) -> set[str]:
    return {f.rule for f in report.findings}


def test_audit_reads_the_config_found_from_the_target_and_can_opt_out(project):
    spec = f"{project / 'models' / 'm.py'}:build"
    report = initaudit.audit(spec, probe_enabled=False)
    assert "IA104" not in codes(report) and report.fail_on == "info"
    assert "IA104" in codes(initaudit.audit(spec, probe_enabled=False, config=False))
    cli = json.loads(CliRunner().invoke(main, [spec, "--no-probe", "--format", "json"]).stdout)
    assert {f["rule"] for f in cli["findings"]} == codes(report)  # the CLI and the API agree
    other = project / "other.toml"
    other.write_text('select = ["IA104"]\n')
    assert codes(initaudit.audit(spec, probe_enabled=False, config=str(other))) == {"IA104"}


def test_keyword_arguments_add_to_and_override_the_config(project):
    spec = f"{project / 'models' / 'm.py'}:build"
    report = initaudit.audit(spec, probe_enabled=False, ignore=["IA109"], fail_on="error")
    assert not codes(report) & {"IA104", "IA109"} and report.fail_on == "error"
    with pytest.raises(TypeError, match="unexpected keyword argument 'fail_onn'"):
        initaudit.audit(spec, fail_onn="error")


def test_a_live_module_reads_the_config_of_the_current_folder(project, monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("m_for_test", project / "models" / "m.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.chdir(project)
    assert "IA104" not in codes(initaudit.audit(module.build(), probe_enabled=False))
    assert "IA104" in codes(initaudit.audit(module.build(), probe_enabled=False, config=False))
    assert "IA104" in codes(initaudit.audit(module.build(), settings=Settings(probe_enabled=False)))


def test_assert_healthy_init_uses_the_same_discovery(project):
    spec = f"{project / 'models' / 'm.py'}:build"
    with pytest.raises(AssertionError, match="IA104"):
        assert_healthy_init(spec, config=False, probe_enabled=False)
    with pytest.raises(AssertionError) as info:  # the config's fail-on = "info" applies
        assert_healthy_init(spec, probe_enabled=False)
    assert "IA104 init-scale" not in str(info.value) and "IA109" in str(info.value)
    assert_healthy_init(spec, probe_enabled=False, fail_on="error")


def test_run_rules_ignores_the_project_config(project, monkeypatch):
    from initaudit.rules.init_scale import InitScale

    monkeypatch.chdir(project)
    model = nn.Sequential(nn.Linear(32, 64), nn.Tanh(), nn.Linear(64, 10))
    nn.init.normal_(model[0].weight, std=0.01)
    assert [f.rule for f in run_rules(model, [InitScale], probe_enabled=False)] == ["IA104"]
