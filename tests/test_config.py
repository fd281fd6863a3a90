"""[tool.initaudit] configuration: discovery, validation, precedence, ignores, `initaudit config`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from initaudit.cli import main
from initaudit.config import find_config, resolve
from initaudit.errors import ConfigError

DATA = Path(__file__).resolve().parent / "data"


class Project(type(Path())):
    """tmp_path with ``write(body)`` for its pyproject.toml."""

    def write(self, body: str, name: str = "pyproject.toml") -> Path:
        path = Path(self) / name
        path.write_text(textwrap.dedent(body))
        return path


@pytest.fixture
def project(tmp_path):
    """A folder with the CI model factories."""
    shutil.copy(DATA / "ci_models.py", tmp_path / "ci_models.py")
    return Project(tmp_path)


# The static rules only: these tests are about configuration, not about what the probe measures.
STATIC = ("--ignore", "IA2")


def audit_json(target: str, *args: str) -> tuple[int, dict | None, str]:
    result = CliRunner().invoke(main, [target, "--format", "json", "-q", *STATIC, *args])
    doc = json.loads(result.stdout) if result.exit_code in (0, 1) else None
    return result.exit_code, doc, result.output


def found(doc: dict) -> list[tuple[str, str]]:
    return [(f["rule"], f["layer"]) for f in doc["findings"]]


# --- discovery --------------------------------------------------------------------------------

def test_defaults_without_a_config(tmp_path):
    settings = resolve(str(tmp_path / "model.onnx"), cwd=tmp_path)
    assert settings.config_path is None
    assert settings.select == ["ALL"] and settings.fail_on == "error" and settings.stage == "auto"
    assert set(settings.sources.values()) == {"default"}


def test_found_by_walking_up_from_the_target(project):
    project.write('[tool.initaudit]\nfail-on = "warning"\n')
    deeper = project / "a" / "b"
    deeper.mkdir(parents=True)
    (project / "a" / "pyproject.toml").write_text('[project]\nname = "x"\n')  # no [tool.initaudit]: skipped
    assert find_config(str(deeper / "model.onnx")) == project / "pyproject.toml"
    assert find_config(f"{project / 'ci_models.py'}:warn") == project / "pyproject.toml"
    settings = resolve(str(deeper / "model.safetensors"))
    assert settings.fail_on == "warning" and settings.sources["fail_on"] == str(project / "pyproject.toml")


def test_config_applies_through_the_cli(project):
    project.write('[tool.initaudit]\nfail-on = "warning"\n')
    code, doc, _ = audit_json(f"{project / 'ci_models.py'}:warn")
    assert code == 1 and doc["summary"]["fail_on"] == "warning"
    code, doc, _ = audit_json(f"{project / 'ci_models.py'}:warn", "--isolated")
    assert code == 0 and doc["summary"]["fail_on"] == "error"


def test_explicit_config_file(project):
    other = project / "ci" / "initaudit.toml"
    other.parent.mkdir()
    other.write_text('fail-on = "warning"\nignore = ["IA109"]\n')  # a dedicated file: top-level keys
    code, doc, _ = audit_json(f"{project / 'ci_models.py'}:warn", "--config", str(other))
    assert code == 1 and ("IA109", "2") not in found(doc)
    result = CliRunner().invoke(main, [f"{project / 'ci_models.py'}:warn", "--config", str(project / "nope.toml")])
    assert result.exit_code == 2 and "config file not found" in result.output


# --- precedence -------------------------------------------------------------------------------

def test_flags_win_over_the_file(project):
    cfg = project.write("""
        [tool.initaudit]
        select = ["IA104"]
        ignore = ["IA109"]
        fail-on = "warning"
        stage = "init"
        rules = []
    """)
    target = str(project / "ci_models.py") + ":warn"
    s = resolve(target)
    assert (s.select, s.ignore, s.fail_on) == (["IA104"], ["IA109"], "warning")
    s = resolve(target, cli={"select": ["IA1"], "fail_on": "error", "ignore": ["IA105"], "stage": "trained"})
    assert s.select == ["IA1"] and s.fail_on == "error" and s.stage == "trained"
    assert s.ignore == ["IA109", "IA105"]  # --ignore adds to the file's ignore
    assert s.sources["select"] == "command line" and s.sources["ignore"] == f"{cfg} + command line"
    s = resolve(target, cli={"extend_select": ["ia109"]})  # naming a file-ignored rule re-enables it
    assert s.ignore == [] and s.extend_select == ["ia109"]

    code, doc, _ = audit_json(target)
    assert code == 1 and {r for r, _ in found(doc)} == {"IA104"}
    code, doc, _ = audit_json(target, "--fail-on", "error", "--select", "IA109")
    assert code == 0 and found(doc) == [("IA109", "2")]


def test_precedence_in_a_subprocess(project):
    project.write('[tool.initaudit]\nfail-on = "warning"\nignore = ["IA109"]\n')
    proc = subprocess.run([sys.executable, "-m", "initaudit", f"{project / 'ci_models.py'}:warn", "-q",
                           "--format", "json", *STATIC, "--fail-on", "never"],
                          capture_output=True, text=True, env={**os.environ, "NO_COLOR": "1"}, timeout=300)
    assert proc.returncode == 0, proc.stderr  # the flag's fail-on wins over the file's
    doc = json.loads(proc.stdout)
    assert doc["summary"]["fail_on"] == "never"
    assert {f["rule"] for f in doc["findings"]} == {"IA104"}  # the file's ignore still applies


# --- selection and ignores --------------------------------------------------------------------

@pytest.mark.parametrize("ignore, gone", [
    ("IA104", {"IA104"}),            # code
    ("IA10", {"IA104", "IA109"}),    # code prefix
    ("init-scale", {"IA104"}),       # name
    ("scale", {"IA104"}),            # category
    ("vanishing", {"IA109"}),        # category
])
def test_ignore_by_code_prefix_name_category(ignore, gone):
    target = f"{DATA / 'ci_models.py'}:warn"
    _, doc, _ = audit_json(target, "--isolated", "--ignore", ignore)
    assert {r for r, _ in found(doc)} == {"IA104", "IA109"} - gone
    _, doc, _ = audit_json(target, "--isolated", "--select", ignore)
    assert {r for r, _ in found(doc)} == gone


def test_per_layer_ignores_and_suppressed_count(project):
    project.write("""
        [tool.initaudit.per-layer-ignores]
        "2.*" = ["scale"]
        "0.w*" = ["IA1"]
    """)
    code, doc, out = audit_json(f"{project / 'ci_models.py'}:warn")
    assert found(doc) == [("IA109", "2")]
    assert doc["suppressed"] == {"per-layer-ignores": 2}
    rich = CliRunner().invoke(main, [f"{project / 'ci_models.py'}:warn", "-q"])
    assert "2 finding(s) by per-layer ignores" in rich.output


def test_rule_options_and_severity_by_code_or_name(project):
    project.write("""
        [tool.initaudit]
        ignore = ["IA109"]
        [tool.initaudit.options.init-scale]
        tolerance = 100
        [tool.initaudit.severity]
        IA104 = "error"
    """)
    target = f"{project / 'ci_models.py'}:warn"
    code, doc, _ = audit_json(target)
    assert code == 0 and found(doc) == []  # tolerance 100 accepts a 0.06x spread
    project.write("""
        [tool.initaudit]
        ignore = ["IA109"]
        [tool.initaudit.severity]
        init-scale = "error"
    """)
    code, doc, _ = audit_json(target)
    assert code == 1 and {f["severity"] for f in doc["findings"]} == {"error"}


def test_rule_keys_in_any_spelling_apply():
    import initaudit
    from data.ci_models import warn

    report = initaudit.audit(warn(), select=["IA1"], rule_options={"init-scale": {"tolerance": 100}},
                             severity={"ia109": "error"})
    assert [(f.rule, f.severity.value) for f in report.findings] == [("IA109", "error")]


def test_rule_files_from_the_config_are_relative_to_it(project, monkeypatch):
    monkeypatch.chdir(project)  # the project the user works in may name rule files
    (project / "tools").mkdir()
    (project / "tools" / "local_rules.py").write_text(textwrap.dedent('''
        from initaudit.rule import Rule, Severity

        class EveryWeight(Rule):
            """Flags every weight (a test rule)."""
            code = "LOC001"
            name = "every-weight"
            category = "scale"
            severity = Severity.INFO

            def check(self, ctx):
                for p in ctx.graph.weights():
                    yield self.finding(p.name, "seen")
    '''))
    project.write('[tool.initaudit]\nrules = ["tools/local_rules.py"]\nselect = ["LOC"]\n')
    code, doc, _ = audit_json(f"{project / 'ci_models.py'}:healthy")
    assert code == 0 and [r for r, _ in found(doc)] == ["LOC001"] * 3


def test_probe_settings_are_read_and_stored(project):
    project.write("""
        [tool.initaudit.probe]
        enabled = false
        batch-size = 8
        seed = 3
        device = "cpu"
    """)
    s = resolve(str(project / "m.onnx"))
    assert (s.probe_enabled, s.probe_batch_size, s.probe_seed, s.probe_device) == (False, 8, 3, "cpu")
    assert s.sources["probe_batch_size"] == str(project / "pyproject.toml")


# --- errors -----------------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    ('fail_on = "warning"', "unknown key 'fail_on'; did you mean 'fail-on'?"),
    ('extend_select = ["IA1"]', "unknown key 'extend_select'; did you mean 'extend-select'?"),
    ('ignores = ["IA1"]', "unknown key 'ignores'; did you mean 'ignore'?"),
    ('fail-on = "warn"', "fail-on: 'warn' is not one of error, warning, info, never; did you mean 'warning'?"),
    ('stage = "training"', "stage: 'training' is not one of auto, init, trained"),
    ('select = "IA104"', "select: expected a list of strings"),
    ('plugins = "no"', "plugins: expected true or false"),
    ('rules = ["missing.py"]', "rules: no such rule file 'missing.py'"),
    ('[tool.initaudit.probe]\nbatch_size = 8', "[tool.initaudit.probe] unknown key 'batch_size'; did you mean 'batch-size'?"),
    ('[tool.initaudit.probe]\nbatch-size = 0', "batch-size: expected an integer >= 1"),
    ('[tool.initaudit.probe]\ndevice = "gpu"', "device: 'gpu' is not a device"),
    ('[tool.initaudit.severity]\nIA104 = "fatal"', "IA104: 'fatal' is not one of error, warning, info"),
    ('select = ["IA104", "IA140"]', "select: unknown rule 'IA140'; did you mean"),
    ('ignore = ["init-scal"]', "ignore: unknown rule 'init-scal'; did you mean 'init-scale'?"),
    ('[tool.initaudit.per-layer-ignores]\n"fc.*" = ["IA999"]', "per-layer-ignores: unknown rule (for 'fc.*') 'IA999'"),
    ('[tool.initaudit.severity]\nIA199 = "error"', "severity: unknown rule 'IA199'"),
    ('[tool.initaudit.options.IA104]\ntolerence = 2.0', "unknown option 'tolerence' of IA104; did you mean 'tolerance'?"),
    ('[tool.initaudit.options.IA104]\ntolerance = "2"', "option tolerance expects float"),
    ('[tool.initaudit.options.IA777]\ntolerance = 2.0', "unknown rule 'IA777'"),
    ("select = [", "invalid TOML"),
])
def test_bad_config_is_exit_2_naming_the_key(project, body, message, monkeypatch):
    monkeypatch.chdir(project)
    cfg = project.write("[tool.initaudit]\n" + body + "\n")
    result = CliRunner().invoke(main, [f"{project / 'ci_models.py'}:warn", "-q"])
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert "\n" not in line and "Traceback" not in line
    assert line.startswith(f"initaudit: error: {cfg}: ")
    assert message in line


def test_unknown_rule_on_the_command_line():
    result = CliRunner().invoke(main, [f"{DATA / 'ci_models.py'}:warn", "--isolated", "--ignore", "IA1O4"])
    assert result.exit_code == 2
    assert "--ignore: unknown rule 'IA1O4'; did you mean 'IA104'?" in result.output
    with pytest.raises(ConfigError, match="select: unknown rule 'nonsense'"):
        import initaudit
        from data.ci_models import healthy  # noqa: F401  (tests/ is on sys.path)

        initaudit.audit(healthy(), select=["nonsense"])


def test_bad_config_in_a_subprocess_is_one_line(project):
    project.write('[tool.initaudit]\nfail_on = "warning"\n')
    proc = subprocess.run([sys.executable, "-m", "initaudit", f"{project / 'ci_models.py'}:warn"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "did you mean 'fail-on'" in proc.stderr


def test_unknown_plugin_codes_tolerated_when_plugins_are_off(project):
    project.write('[tool.initaudit]\nplugins = false\nignore = ["XYZ1"]\n')
    code, doc, _ = audit_json(f"{project / 'ci_models.py'}:healthy")
    assert code == 0
    assert any("XYZ1" in n and "plugins are off" in n for n in doc["notes"])


# --- initaudit config -------------------------------------------------------------------------

def test_config_command_shows_values_and_sources(project):
    cfg = project.write('[tool.initaudit]\nfail-on = "warning"\nignore = ["IA109"]\n')
    target = f"{project / 'ci_models.py'}:warn"
    result = CliRunner().invoke(main, ["config", target, "--format", "json", "--stage", "init"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    rows = {r["key"]: r for r in doc["settings"]}
    assert doc["config_file"] == str(cfg)
    assert rows["fail-on"] == {"key": "fail-on", "value": "warning", "source": str(cfg)}
    assert rows["stage"]["source"] == "command line" and rows["stage"]["value"] == "init"
    assert rows["select"]["source"] == "default"
    assert {"probe.batch-size", "probe.seed", "probe.device", "probe.enabled", "per-layer-ignores",
            "options", "severity", "rules", "plugins", "extend-select"} <= set(rows)
    text = CliRunner().invoke(main, ["config", target])
    assert text.exit_code == 0 and f"config file: {cfg}" in text.output and "command line" not in text.output
    project.write('[tool.initaudit]\nignore = ["IA140"]\n')
    bad = CliRunner().invoke(main, ["config", target])
    assert bad.exit_code == 2 and "unknown rule 'IA140'" in bad.output
