"""initaudit.testing: assert_healthy_init and run_rules for users' own test suites."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from initaudit.report import Report
from initaudit.rule import Rule, Severity
from initaudit.testing import assert_healthy_init, run_rules

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
import ci_models  # noqa: E402

sys.path.remove(str(DATA))


def test_healthy_model_passes_and_returns_the_report():
    report = assert_healthy_init(ci_models.healthy())
    assert isinstance(report, Report) and report.findings == []


def test_unhealthy_model_raises_listing_the_findings():
    with pytest.raises(AssertionError) as info:
        assert_healthy_init(ci_models.warn())  # the probe's findings join in when it runs
    assert re.search(r"\d+ finding\(s\) at or above warning", str(info.value))
    with pytest.raises(AssertionError) as info:
        assert_healthy_init(ci_models.warn(), ignore=["IA2"])
    text = str(info.value)
    assert "3 finding(s) at or above warning" in text
    assert "IA104 init-scale at 0.weight: std 0.010 is 0.061x the Xavier std" in text
    assert "IA104 init-scale at 2.weight" in text and "IA109" in text
    assert "fix: torch.nn.init.xavier_normal_" in text


def test_threshold_and_selection():
    assert_healthy_init(ci_models.warn(), fail_on="error", ignore=["IA2"])
    assert_healthy_init(ci_models.warn(), ignore=["init-scale", "vanishing", "IA2"])
    assert_healthy_init(ci_models.warn(), ignore=["IA1", "IA2"])
    assert_healthy_init(ci_models.warn(), select=["IA101", "IA102"])
    assert_healthy_init(ci_models.warn(), select=["IA1"], severity={"IA104": "info", "IA109": "info"})
    with pytest.raises(AssertionError, match="IA104"):
        assert_healthy_init(ci_models.warn(), fail_on="info", severity={"IA104": "info"}, select=["IA104"])
    with pytest.raises(AssertionError, match="IA102 constant-weights at 2.weight"):
        assert_healthy_init(ci_models.broken(), fail_on="error")


def test_inputs_reach_the_probe():
    report = assert_healthy_init(ci_models.healthy(), torch.randn(8, 32))
    if getattr(report.probe, "ran", False):
        assert report.probe.batch_size == 8


def test_targets_other_than_modules():
    assert_healthy_init(f"{DATA / 'ci_models.py'}:healthy")
    with pytest.raises(AssertionError):
        assert_healthy_init(f"{DATA / 'ci_models.py'}:broken")


def test_bad_arguments():
    with pytest.raises(ValueError, match="fail_on"):
        assert_healthy_init(ci_models.healthy(), fail_on="never")
    with pytest.raises(TypeError, match="list of selectors"):
        assert_healthy_init(ci_models.healthy(), ignore="IA104")
    with pytest.raises(TypeError, match="unexpected keyword"):
        assert_healthy_init(ci_models.healthy(), fail_onn="error")


class Raises(Rule):
    """Always raises."""

    code = "TH001"
    name = "always-raises"
    category = "scale"
    severity = Severity.WARNING

    def check(self, ctx):
        raise RuntimeError("oops")


def test_rule_errors_fail_the_assertion():
    with pytest.raises(AssertionError, match="(?s)rule errors:.*TH001.*oops"):
        assert_healthy_init(ci_models.healthy(), rule_classes=[Raises])


def test_run_rules_runs_only_the_given_rules():
    class FirstWeight(Rule):
        """Flags 0.weight."""

        code = "TH002"
        name = "first-weight"
        category = "scale"
        severity = Severity.INFO

        def check(self, ctx):
            yield self.finding("0.weight", "first")

    findings = run_rules(ci_models.broken(), [FirstWeight])
    assert [(f.rule, f.layer, f.severity) for f in findings] == [("TH002", "0.weight", Severity.INFO)]
    with pytest.raises(AssertionError, match="TH001"):
        run_rules(ci_models.healthy(), [Raises])
