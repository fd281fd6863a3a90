"""Baselines: fingerprints that survive unrelated changes, --write-baseline / --baseline round trip,
suppressed and no-longer-found counts in JSON and the rich header."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import initaudit
from initaudit import baseline
from initaudit.cli import main
from initaudit.rule import Finding, Severity

DATA = Path(__file__).resolve().parent / "data"
MODELS = DATA / "ci_models.py"


def finding(message: str, layer: str = "0.weight", rule: str = "IA104", scope: str = "layer") -> Finding:
    return Finding(rule, "scale", Severity.WARNING, layer, message, {}, None, "init-scale", scope=scope)


@pytest.mark.parametrize("message, key", [
    ("std 0.010 is 0.061x the Xavier std 0.167 expected before tanh (fan_in=100, fan_out=100)",
     "std # is #x the xavier std # expected before tanh"),
    ("3 of 64 units are exact copies of another (1 group(s), e.g. rows 1, 5, 9)",
     "# of # units are exact copies of another"),
    ("spectral radius 1.5e+00 (gate i): the recurrence explodes (h_T ~ 1.5^T h_0)",
     "spectral radius #: the recurrence explodes"),
    ("all zeros in a hidden layer before relu6: every unit outputs the same value; with zero bias, ...",
     "all zeros in a hidden layer before relu6: every unit outputs the same value"),
    ("running_var has -0.5 <= 0: eval-mode normalisation divides", "running_var has # <= #: eval-mode normalisation divides"),
])
def test_message_key_drops_numbers_and_details(message, key):
    assert baseline.message_key(message) == key


def test_fingerprint_ignores_numbers_but_not_rule_layer_or_kind():
    a = finding("std 0.010 is 0.061x the Xavier std 0.167 expected before tanh (fan_in=100, fan_out=100)")
    b = finding("std 0.012 is 0.073x the Xavier std 0.167 expected before tanh (fan_in=100, fan_out=100)")
    assert baseline.fingerprint(a) == baseline.fingerprint(b)
    assert baseline.fingerprint(a) != baseline.fingerprint(finding(a.message, layer="2.weight"))
    assert baseline.fingerprint(a) != baseline.fingerprint(finding(a.message, rule="IA105"))
    assert baseline.fingerprint(a) != baseline.fingerprint(finding(a.message.replace("tanh", "relu")))
    explicit = finding("whatever 1", layer="x")
    explicit.key = "kind-a"
    assert baseline.finding_key(explicit) == "kind-a"
    # model-scope findings (depth profile) are matched without their worst-point layer
    assert baseline.fingerprint(finding("falls to 0.1x", "2", "IA109", "model")) == \
        baseline.fingerprint(finding("falls to 0.05x", "4", "IA109", "model"))


def test_apply_counts_multiplicities():
    f = finding("std 0.01 is small")
    base = baseline.Baseline("b.json", [baseline.entry(f)])
    applied = baseline.apply([f, finding("std 0.02 is small")], base)
    assert len(applied.suppressed) == 1 and len(applied.kept) == 1 and applied.stale == []
    applied = baseline.apply([], base)
    assert applied.kept == [] and len(applied.stale) == 1


STATIC = ("--ignore", "IA2")  # the static rules only: these tests are about baselines, not the probe


def run_cli(*args: str):
    return CliRunner().invoke(main, [*args, "--isolated", "-q", *STATIC])


def test_round_trip_through_the_cli(tmp_path):
    base = tmp_path / "initaudit-baseline.json"
    target = f"{MODELS}:warn"
    assert run_cli(target, "--fail-on", "warning").exit_code == 1
    wrote = run_cli(target, "--fail-on", "warning", "--write-baseline", str(base), "--format", "json")
    assert wrote.exit_code == 0, wrote.output  # accepting today's findings
    assert f"wrote 3 finding(s) to the baseline {base}" in wrote.stderr
    doc = json.loads(base.read_text())
    assert doc["baseline_version"] == 1 and [e["rule"] for e in doc["findings"]] == ["IA104", "IA104", "IA109"]
    assert not any(ch.isdigit() for e in doc["findings"] for ch in e["key"])
    assert doc["findings"][2]["layer"] == "*"  # model scope

    gate = run_cli(target, "--fail-on", "warning", "--baseline", str(base), "--format", "json")
    assert gate.exit_code == 0, gate.output
    report = json.loads(gate.stdout)
    assert report["findings"] == []
    assert report["suppressed"] == {"baseline": 3}
    assert report["baseline"] == {"path": str(base), "entries": 3, "suppressed": 3, "no_longer_found": 0}

    # same defects, other numbers (reseeded): still all suppressed
    again = run_cli(f"{MODELS}:warn_reseeded", "--fail-on", "warning", "--baseline", str(base), "--format", "json")
    assert again.exit_code == 0 and json.loads(again.stdout)["baseline"]["suppressed"] == 3

    # a new defect is reported, the fixed one counted as no longer found; rich header says so
    new = run_cli(f"{MODELS}:warn_plus_new_defect", "--baseline", str(base), "--format", "json")
    assert new.exit_code == 1
    doc = json.loads(new.stdout)
    assert [(f["rule"], f["layer"]) for f in doc["findings"]] == [("IA102", "2.weight")]
    # IA104 on 0.weight stays suppressed; IA104 on 2.weight and the model-scope IA109 are gone
    # (the zero layer is IA102's, and the depth rules do not judge it or the head after it)
    assert doc["baseline"]["suppressed"] == 1 and doc["baseline"]["no_longer_found"] == 2
    rich = run_cli(f"{MODELS}:warn_plus_new_defect", "--baseline", str(base))
    header = " ".join(rich.output.replace("│", " ").split())
    assert "1 finding(s) suppressed by" in header and "2 baseline entries no longer occur" in header

    # everything fixed: every entry is stale, nothing suppressed
    fixed = run_cli(f"{MODELS}:healthy", "--baseline", str(base), "--format", "json")
    assert json.loads(fixed.stdout)["baseline"] == {"path": str(base), "entries": 3, "suppressed": 0,
                                                    "no_longer_found": 3}


def test_rewriting_keeps_suppressed_findings(tmp_path):
    base = tmp_path / "b.json"
    run_cli(f"{MODELS}:warn", "--write-baseline", str(base))
    first = base.read_text()
    result = run_cli(f"{MODELS}:warn_reseeded", "--baseline", str(base), "--write-baseline", str(base))
    assert result.exit_code == 0
    assert base.read_text() == first  # same findings, other numbers: byte-identical baseline


@pytest.mark.parametrize("content, message", [
    (None, "baseline file not found (create it with --write-baseline"),
    ("{not json", "not a baseline file (invalid JSON"),
    ('{"findings": [{"rule": "IA104"}]}', "findings[0] has no 'fingerprint'"),
    ('{"baseline_version": 9, "findings": []}', "baseline_version 9 is not supported"),
])
def test_bad_baseline_is_exit_2(tmp_path, content, message):
    base = tmp_path / "b.json"
    if content is not None:
        base.write_text(content)
    result = run_cli(f"{MODELS}:warn", "--baseline", str(base))
    assert result.exit_code == 2
    assert result.output.strip() == result.output.strip().splitlines()[0]
    assert message in result.output and str(base) in result.output


def test_api_baseline(tmp_path):
    sys.path.insert(0, str(DATA))
    try:
        import ci_models
    finally:
        sys.path.remove(str(DATA))
    base = tmp_path / "b.json"
    baseline.write(base, initaudit.audit(ci_models.broken(), ignore=["IA2"]).findings)
    report = initaudit.audit(ci_models.broken(), baseline=str(base), ignore=["IA2"])
    assert report.findings == [] and len(report.baselined) == 2 and report.exit_code == 0


def test_round_trip_in_subprocesses(tmp_path):
    base = tmp_path / "b.json"
    env = {**os.environ, "NO_COLOR": "1"}
    cmd = [sys.executable, "-m", "initaudit", f"{MODELS}:broken", "--isolated", "-q", *STATIC]
    wrote = subprocess.run([*cmd, "--write-baseline", str(base)], capture_output=True, text=True, env=env,
                           timeout=300)
    assert wrote.returncode == 0, wrote.stderr
    gate = subprocess.run([*cmd, "--baseline", str(base)], capture_output=True, text=True, env=env, timeout=300)
    assert gate.returncode == 0, gate.stderr
    assert "2 finding(s) suppressed by" in gate.stdout and "No findings." in gate.stdout
