"""SARIF 2.1.0 output: validates against the official schema, carries rule metadata, levels,
stable fingerprints, the model (or factory source) file as artifact and the layer as logical
location; several outputs come from one run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch
from click.testing import CliRunner

import initaudit
from initaudit.baseline import FINGERPRINT_KEY
from initaudit.cli import main
from initaudit.reporters.sarif import to_sarif

DATA = Path(__file__).resolve().parent / "data"
SCHEMA = json.loads((DATA / "sarif-schema-2.1.0.json").read_text())


def _validator() -> jsonschema.Draft7Validator:
    # This copy of the schema keeps the root object's constraints under definitions/Root; a
    # validator built on the bare document would accept anything, so validate against Root.
    schema = SCHEMA if "properties" in SCHEMA else {**SCHEMA, **SCHEMA["definitions"]["Root"]}
    return jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)


VALIDATOR = _validator()
STATIC = ("--ignore", "IA2")  # the static rules only: results that do not move with the probe


def assert_valid(doc: dict) -> None:
    errors = sorted(VALIDATOR.iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_the_validator_is_not_vacuous():
    assert list(VALIDATOR.iter_errors({"version": "2.1.0"}))  # runs missing
    assert list(VALIDATOR.iter_errors({"version": "3.0", "runs": []}))
    bad_level = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "x"}},
                                               "results": [{"message": {"text": "m"}, "level": "info"}]}]}
    assert list(VALIDATOR.iter_errors(bad_level))


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    shutil.copy(DATA / "ci_models.py", tmp_path / "ci_models.py")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sarif_of(*args: str) -> tuple[int, dict]:
    result = CliRunner().invoke(main, [*args, "--format", "sarif", "--isolated", "-q", *STATIC])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, json.loads(result.stdout)


def test_factory_target_validates_and_points_at_the_factory(workdir):
    code, doc = sarif_of("ci_models.py:broken")
    assert code == 1
    assert_valid(doc)
    run = doc["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "initaudit" and driver["version"] == initaudit.__version__
    rules = {r["id"]: r for r in driver["rules"]}
    assert {"IA101", "IA102", "IA104", "IA109"} <= set(rules)
    ia104 = rules["IA104"]
    assert ia104["name"] == "init-scale"
    assert ia104["shortDescription"]["text"].startswith("Weight spread far from")
    assert "std of every linear" in ia104["fullDescription"]["text"]
    assert "Why it matters" in ia104["help"]["text"] and "```python" in ia104["help"]["markdown"]
    assert ia104["defaultConfiguration"]["level"] == "warning"
    assert rules["IA102"]["defaultConfiguration"]["level"] == "error"
    assert ia104["properties"]["category"] == "scale"

    results = {(r["ruleId"], r["locations"][0]["logicalLocations"][0]["name"]): r for r in run["results"]}
    assert set(results) == {("IA102", "2.weight"), ("IA104", "0.weight")}
    assert results[("IA102", "2.weight")]["level"] == "error"
    assert results[("IA104", "0.weight")]["level"] == "warning"
    def_line = next(i for i, line in enumerate((workdir / "ci_models.py").read_text().splitlines(), 1)
                    if line.startswith("def broken"))
    for r in run["results"]:
        assert driver["rules"][r["ruleIndex"]]["id"] == r["ruleId"]
        phys = r["locations"][0]["physicalLocation"]
        assert phys["artifactLocation"]["uri"] == "ci_models.py"
        assert phys["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
        assert phys["region"]["startLine"] == def_line
        assert len(r["partialFingerprints"][FINGERPRINT_KEY]) == 20
    assert run["artifacts"][0]["location"]["uri"] == "ci_models.py"


def test_fingerprints_are_stable_across_runs_and_reseeding(workdir):
    _, first = sarif_of("ci_models.py:warn")
    _, again = sarif_of("ci_models.py:warn")
    _, reseeded = sarif_of("ci_models.py:warn_reseeded")

    def prints(doc):
        return sorted(r["partialFingerprints"][FINGERPRINT_KEY] for r in doc["runs"][0]["results"])

    assert prints(first) == prints(again) == prints(reseeded)
    assert len(set(prints(first))) == 3


def test_checkpoint_target_is_the_artifact(workdir):
    from safetensors.torch import save_file

    sys.path.insert(0, str(workdir))
    try:
        import ci_models
    finally:
        sys.path.remove(str(workdir))
    (workdir / "models").mkdir()
    save_file({k: v.contiguous() for k, v in ci_models.broken().state_dict().items()},
              str(workdir / "models" / "ckpt.safetensors"))
    code, doc = sarif_of("models/ckpt.safetensors")
    assert_valid(doc)
    results = doc["runs"][0]["results"]
    assert results and code == 1
    for r in results:
        loc = r["locations"][0]["physicalLocation"]
        assert loc["artifactLocation"]["uri"] == "models/ckpt.safetensors"
        assert loc["region"]["startLine"] == 1


def test_outside_any_repository_and_the_working_tree_is_an_absolute_uri(tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(DATA / "ci_models.py", outside / "ci_models.py")
    report = initaudit.audit(f"{outside / 'ci_models.py'}:warn", ignore=["IA2"], config=False)
    doc = to_sarif(report, cwd=tmp_path / "cwd")
    assert_valid(doc)
    uri = doc["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert uri == (outside / "ci_models.py").as_uri()


def test_uris_are_relative_to_the_git_top_level_from_any_folder(tmp_path):
    """A job that runs from a sub-folder (or names the file by an absolute path) still gets
    repository-relative URIs with %SRCROOT%, which code scanning resolves against the checkout."""
    from safetensors.torch import save_file

    repo = tmp_path / "repo"
    (repo / "models").mkdir(parents=True)
    (repo / "tools").mkdir()
    (repo / ".git").mkdir()  # what `git init` leaves; a worktree has a .git file instead
    sys.path.insert(0, str(DATA))
    try:
        import ci_models
    finally:
        sys.path.remove(str(DATA))
    save_file({k: v.contiguous() for k, v in ci_models.broken().state_dict().items()},
              str(repo / "models" / "ckpt.safetensors"))
    for cwd, target in ((repo / "tools", "../models/ckpt.safetensors"),
                        (tmp_path, str(repo / "models" / "ckpt.safetensors"))):
        proc = subprocess.run([sys.executable, "-m", "initaudit", target, "--isolated", "-q", "--format", "sarif"],
                              capture_output=True, text=True, timeout=300, cwd=cwd)
        assert proc.returncode == 1, proc.stderr
        doc = json.loads(proc.stdout)
        assert_valid(doc)
        run = doc["runs"][0]
        for r in run["results"]:
            loc = r["locations"][0]["physicalLocation"]["artifactLocation"]
            assert loc == {"uri": "models/ckpt.safetensors", "index": 0, "uriBaseId": "%SRCROOT%"}
        assert run["originalUriBaseIds"]["%SRCROOT%"]["uri"] == repo.resolve().as_uri() + "/"


def test_information_uri_is_the_projects_url():
    import tomllib

    urls = tomllib.loads((DATA.parent.parent / "pyproject.toml").read_text())["project"]["urls"]
    report = initaudit.audit(f"{DATA / 'ci_models.py'}:warn", ignore=["IA2"], config=False)
    driver = to_sarif(report)["runs"][0]["tool"]["driver"]
    assert driver["informationUri"] == urls["Repository"]
    assert "pypi.org" not in json.dumps(driver)


def test_live_module_and_levels_note(tmp_path):
    sys.path.insert(0, str(DATA))
    try:
        import ci_models
    finally:
        sys.path.remove(str(DATA))
    report = initaudit.audit(ci_models.warn(), severity={"IA104": "info"}, ignore=["IA2"])
    doc = to_sarif(report)
    assert_valid(doc)
    levels = {r["ruleId"]: r["level"] for r in doc["runs"][0]["results"]}
    assert levels == {"IA104": "note", "IA109": "warning"}
    for r in doc["runs"][0]["results"]:  # no file: logical location only
        assert "physicalLocation" not in r["locations"][0]
    assert "artifacts" not in doc["runs"][0]


def test_rule_errors_become_notifications(workdir):
    (workdir / "crash.py").write_text(
        "from initaudit.rule import Rule, Severity\n"
        "class Crash(Rule):\n"
        "    '''Always crashes.'''\n"
        "    code = 'CR001'\n    name = 'crash'\n    category = 'scale'\n    severity = Severity.ERROR\n"
        "    def check(self, ctx):\n        raise RuntimeError('boom')\n")
    _, doc = sarif_of("ci_models.py:warn", "--rules", "crash.py")
    assert_valid(doc)
    notes = doc["runs"][0]["invocations"][0]["toolExecutionNotifications"]
    assert any("CR001" in n["message"]["text"] and "boom" in n["message"]["text"] for n in notes)
    assert {r["ruleId"] for r in doc["runs"][0]["results"]} == {"IA104", "IA109"}


def test_several_outputs_from_one_run(workdir):
    result = CliRunner().invoke(main, ["ci_models.py:warn", "--isolated", "-q", "--fail-on", "warning", *STATIC,
                                       "--sarif", "out.sarif", "--markdown", "out.md", "--json", "out.json"])
    assert result.exit_code == 1
    assert "Findings" in result.stdout and "FAIL" in result.stdout  # the rich report on stdout
    sarif = json.loads((workdir / "out.sarif").read_text())
    assert_valid(sarif)
    report = json.loads((workdir / "out.json").read_text())
    assert report["schema_version"] == 1 and len(report["findings"]) == len(sarif["runs"][0]["results"]) == 3
    assert (workdir / "out.md").read_text().startswith("<!-- initaudit-report -->\n## ❌ initaudit: FAIL")


def test_sarif_in_a_subprocess(workdir):
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run([sys.executable, "-m", "initaudit", "ci_models.py:broken", "--isolated", "-q", *STATIC,
                           "--sarif", "out.sarif", "--format", "json", "-o", "out.json"],
                          capture_output=True, text=True, env=env, timeout=300, cwd=workdir)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == ""
    doc = json.loads((workdir / "out.sarif").read_text())
    assert_valid(doc)
    assert {r["ruleId"] for r in doc["runs"][0]["results"]} == {"IA102", "IA104"}
    assert json.loads((workdir / "out.json").read_text())["summary"]["errors"] == 1


def test_refuses_to_overwrite_the_audited_file(workdir):
    torch.save({"w": torch.randn(4, 4)}, workdir / "m.pt")
    result = CliRunner().invoke(main, ["m.pt", "--isolated", "--sarif", "m.pt"])
    assert result.exit_code == 2 and "overwrite" in result.output
