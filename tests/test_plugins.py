"""Rules as plugins: the initaudit.rules entry point (built-ins and third parties alike), --rules
files, --no-plugins / plugins = false, and plugins that fail to load or raise without taking the
audit down. Entry points are simulated with a *.dist-info folder on sys.path (fast, offline);
one test installs examples/custom_rule for real (pip --no-index --target, offline)."""

from __future__ import annotations

import importlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from click.testing import CliRunner

import initaudit
from initaudit.cli import main
from initaudit.registry import ENTRY_POINT_GROUP, discover

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
MODELS = DATA / "ci_models.py"
EXAMPLE = ROOT / "examples" / "custom_rule"

RULE_SOURCE = '''
from initaudit.rule import Rule, Severity


class OutputLayer(Rule):
    """Flags the output layer (a test rule).

    What it checks
    --------------
    Nothing useful.

    Why it matters
    --------------
    It does not.

    Example
    -------
    ```python
    model = nn.Linear(2, 2)
    ```

    Fix
    ---
    ```python
    model = nn.Identity()
    ```

    Options
    -------
    None.
    """

    code = "{code}"
    name = "output-layer"
    category = "scale"
    severity = Severity.WARNING

    def check(self, ctx):
        for p in ctx.graph.weights():
            if p.is_output:
                yield self.finding(p.name, "the output layer")


RULES = [OutputLayer]
'''

CRASH_SOURCE = '''
from initaudit.rule import Rule, Severity


class Crash(Rule):
    """Yields one finding, then raises."""

    code = "CR001"
    name = "crash"
    category = "constant"
    severity = Severity.WARNING

    def check(self, ctx):
        yield self.finding("0.weight", "before the crash")
        raise RuntimeError("boom")
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    """make(dist, module, source, entry) installs a fake distribution with an entry point."""
    root = tmp_path / "site"
    root.mkdir()
    modules: list[str] = []

    def make(dist: str, module: str, source: str, entry: str) -> Path:
        (root / f"{module}.py").write_text(textwrap.dedent(source))
        info = root / f"{dist}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n")
        (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry}\n")
        modules.append(module)
        importlib.invalidate_caches()
        return root

    monkeypatch.syspath_prepend(str(root))
    yield make
    for name in modules:
        sys.modules.pop(name, None)


def cli(*args: str):
    return CliRunner().invoke(main, list(args))


STATIC = ("--ignore", "IA2")  # built-in static rules only: these tests are about plugins, not the probe


def audit_json(*args: str) -> tuple[int, dict]:
    result = cli(*args, "--format", "json", "--isolated", "-q", *STATIC)
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


# --- discovery --------------------------------------------------------------------------------

def test_builtins_arrive_through_the_entry_point():
    eps = {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}
    assert eps.get("IA") == "initaudit.rules:BUILTIN_RULES"
    ruleset = discover(plugins=False)
    builtin = [c for c in ruleset.sorted() if c.code.startswith("IA1")]
    assert len(builtin) >= 10
    assert all(c.origin == "initaudit" and c.__module__.startswith("initaudit.rules.") for c in builtin)


def test_entry_point_plugin_is_discovered_listed_explained_and_run(site):
    site("fakeplug", "fakeplug_rules", RULE_SOURCE.format(code="FK001"), "FK = fakeplug_rules:RULES")
    ruleset = discover()
    assert not ruleset.errors
    assert ruleset.rules["FK001"].origin == "fakeplug"

    listed = {r["code"]: r for r in json.loads(cli("rules", "--format", "json", "--isolated").stdout)}
    assert listed["FK001"] == {"code": "FK001", "name": "output-layer", "category": "scale",
                               "severity": "warning", "origin": "fakeplug", "summary": "Flags the output layer (a test rule)."}
    assert listed["IA104"]["origin"] == "initaudit"
    assert "FK001" not in {r["code"] for r in json.loads(cli("rules", "--format", "json", "--no-plugins").stdout)}

    explained = cli("explain", "output-layer", "--isolated")
    assert explained.exit_code == 0 and explained.output.startswith("FK001 output-layer [scale, default warning, from fakeplug]")

    code, doc = audit_json(f"{MODELS}:warn", "--select", "FK", "--fail-on", "warning")
    assert code == 1 and [(f["rule"], f["layer"]) for f in doc["findings"]] == [("FK001", "4.weight")]
    code, doc = audit_json(f"{MODELS}:warn", "--select", "FK,IA104")
    assert {f["rule"] for f in doc["findings"]} == {"FK001", "IA104"}


def test_plugins_off_by_flag_or_config(site, tmp_path):
    site("fakeplug", "fakeplug_rules2", RULE_SOURCE.format(code="FK002"), "FK = fakeplug_rules2:RULES")
    shutil.copy(MODELS, tmp_path / "ci_models.py")
    _, doc = audit_json(f"{tmp_path / 'ci_models.py'}:warn")
    assert "FK002" in {f["rule"] for f in doc["findings"]}
    _, doc = audit_json(f"{tmp_path / 'ci_models.py'}:warn", "--no-plugins")
    assert "FK002" not in {f["rule"] for f in doc["findings"]}
    (tmp_path / "pyproject.toml").write_text("[tool.initaudit]\nplugins = false\n")
    result = cli(f"{tmp_path / 'ci_models.py'}:warn", "--format", "json", "-q", *STATIC)
    assert "FK002" not in {f["rule"] for f in json.loads(result.stdout)["findings"]}
    api = initaudit.audit(f"{tmp_path / 'ci_models.py'}:warn", plugins=False)
    assert "FK002" not in {f.rule for f in api.findings}


def test_rules_file_on_the_command_line(tmp_path):
    rules = tmp_path / "my_rules.py"
    rules.write_text(RULE_SOURCE.format(code="LF001"))
    code, doc = audit_json(f"{MODELS}:healthy", "--rules", str(rules), "--select", "LF001")
    assert [(f["rule"], f["layer"]) for f in doc["findings"]] == [("LF001", "4.weight")] and code == 0
    listed = {r["code"]: r for r in json.loads(cli("rules", "--format", "json", "--rules", str(rules)).stdout)}
    assert listed["LF001"]["origin"] == str(rules)
    assert cli("explain", "LF001", "--rules", str(rules)).exit_code == 0
    # the same file twice (config + flag) loads once
    assert not discover([rules, str(rules)]).errors


# --- failures are reported, not fatal ---------------------------------------------------------

def test_plugin_that_fails_to_import_is_reported(site):
    site("badplug", "badplug_rules", "raise ImportError('needs a GPU library')\n", "BAD = badplug_rules:RULES")
    ruleset = discover()
    assert any(e.startswith("plugin BAD (badplug) failed to load: ImportError: needs a GPU library")
               for e in ruleset.errors)
    result = cli(f"{MODELS}:broken", "--format", "json", "--isolated", "-q", *STATIC)
    assert result.exit_code == 1  # the audit ran: the findings decide the exit code
    doc = json.loads(result.stdout)
    assert {f["rule"] for f in doc["findings"]} == {"IA102", "IA104"}
    assert any("badplug" in e for e in doc["rule_errors"])
    assert "initaudit: warning: plugin BAD (badplug) failed to load" in result.stderr
    rules = cli("rules", "--isolated")
    assert rules.exit_code == 0 and "failed to load" in rules.stderr


def test_crashing_rule_keeps_the_other_findings(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text(CRASH_SOURCE)
    code, doc = audit_json(f"{MODELS}:broken", "--rules", str(crash))
    assert code == 1
    rules = [f["rule"] for f in doc["findings"]]
    assert {"IA102", "IA104"} <= set(rules) and "CR001" in rules  # its finding before the crash
    [err] = doc["rule_errors"]
    assert err.startswith("rule CR001 (crash, from ") and "RuntimeError: boom" in err
    assert "the 1 finding(s) it made before are kept" in err
    rich = cli(f"{MODELS}:broken", "--rules", str(crash), "--isolated", "-q")
    assert rich.exit_code == 1 and "rule error" in rich.output and "boom" in rich.output


@pytest.mark.parametrize("body, error", [
    ("code = 'BR001'\n    name = 'bad'\n    category = 'weird'\n    severity = Severity.ERROR\n"
     "    def check(self, ctx):\n        return []", "category 'weird' is not one of"),
    ("code = 'BR001'\n    name = 'Bad_Name'\n    category = 'scale'\n    severity = Severity.ERROR\n"
     "    def check(self, ctx):\n        return []", "is not kebab-case"),
    ("code = 'IA104'\n    name = 'dup'\n    category = 'scale'\n    severity = Severity.ERROR\n"
     "    def check(self, ctx):\n        return []", "rule code IA104 is already defined by initaudit; ignored"),
    ("code = 'BR001'\n    name = 'bad'\n    category = 'scale'\n    severity = Severity.ERROR\n"
     "    def __init__(self, *a, **k):\n        raise RuntimeError('no')\n"
     "    def check(self, ctx):\n        return []", "rule BR001 (bad, from "),
    ("code = 'BR001'\n    name = 'bad'\n    category = 'scale'\n    severity = Severity.ERROR\n"
     "    def check(self, ctx):\n        yield 'not a finding'", "check() yielded str, not a Finding"),
    ("code = 'BR001'\n    name = 'bad'\n    category = 'scale'\n    severity = Severity.ERROR", "does not implement check"),
])
def test_broken_rules_are_reported_and_the_audit_goes_on(tmp_path, body, error):
    path = tmp_path / "broken_rules.py"
    path.write_text(f"from initaudit.rule import Rule, Severity\n\nclass Broken(Rule):\n    '''Broken.'''\n    {body}\n")
    report = initaudit.audit(f"{MODELS}:broken", rule_files=[str(path)], plugins=False)
    assert any(error in e for e in report.rule_errors), report.rule_errors
    assert {"IA102", "IA104"} <= {f.rule for f in report.findings}


def test_rule_file_that_fails_to_import_or_has_no_rules(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import does_not_exist_anywhere\n")
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    report = initaudit.audit(f"{MODELS}:broken", rule_files=[str(bad), str(empty)], plugins=False)
    assert any(e.startswith(f"{bad}: failed to load rules: ModuleNotFoundError") for e in report.rule_errors)
    assert any(e == f"{empty}: defines no Rule subclass with a code" for e in report.rule_errors)
    assert report.exit_code == 1


def test_failures_in_a_subprocess(site, tmp_path):
    root = site("badplug", "badplug_sub", "raise ImportError('broken plugin')\n", "BAD = badplug_sub:RULES")
    crash = tmp_path / "crash.py"
    crash.write_text(CRASH_SOURCE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
           "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "initaudit", f"{MODELS}:broken", "--isolated", "-q",
                           "--format", "json", "--rules", str(crash)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 1, proc.stderr
    doc = json.loads(proc.stdout)
    assert {"IA102", "IA104", "CR001"} <= {f["rule"] for f in doc["findings"]}
    assert len(doc["rule_errors"]) == 2
    assert "plugin BAD (badplug) failed to load: ImportError: broken plugin" in proc.stderr
    assert "rule CR001 (crash" in proc.stderr and "Traceback" not in proc.stderr


# --- the example plugin package ---------------------------------------------------------------

def test_example_plugin_installs_and_registers(tmp_path, monkeypatch):
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path / "target"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
                           "--no-index", "--disable-pip-version-check", "-q", "--target", str(target), str(src)],
                          capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        pytest.skip(f"cannot build the example offline here: {proc.stderr.strip().splitlines()[-1:]}")
    monkeypatch.syspath_prepend(str(target))
    sys.modules.pop("initaudit_example_rule", None)
    try:
        eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
        assert eps["XMP"].value == "initaudit_example_rule:RULES" and eps["XMP"].dist.name == "initaudit-example-rule"
        ruleset = discover()
        assert ruleset.rules["XMP001"].origin == "initaudit-example-rule" and not ruleset.errors
        model = tmp_path / "biased.py"
        model.write_text(textwrap.dedent('''
            import torch, torch.nn as nn
            def build():
                torch.manual_seed(0)
                m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
                nn.init.kaiming_normal_(m[0].weight, nonlinearity="relu")
                nn.init.constant_(m[0].bias, -10.0)
                return m
        '''))
        code, doc = audit_json(f"{model}:build", "--select", "XMP", "--fail-on", "warning")
        assert code == 1 and [(f["rule"], f["layer"]) for f in doc["findings"]] == [("XMP001", "0.bias")]

        # the plugin's own test suite passes against this initaudit
        monkeypatch.syspath_prepend(str(src / "tests"))
        tests = importlib.import_module("test_initaudit_example_rule")
        for name in dir(tests):
            if name.startswith("test_"):
                getattr(tests, name)()
    finally:
        sys.modules.pop("initaudit_example_rule", None)
        sys.modules.pop("test_initaudit_example_rule", None)
