"""Every discovered rule (built-in, probe, installed plugin) documents itself in the fixed sections,
and its docstring example triggers it while its fix clears it.

The rules are discovered, not listed, so rules added later (the IA2xx probe rules, plugins
installed in the environment) are covered automatically.
"""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import initaudit
from initaudit.cli import main
from initaudit.engine import Settings
from initaudit.registry import discover
from initaudit.rule import CATEGORIES, DOC_SECTIONS, Severity

RULESET = discover()
RULES = RULESET.sorted()
WITH_EXAMPLE = [r for r in RULES if r.code_block("Example").strip()]


def test_rules_are_discovered_without_errors():
    assert not RULESET.errors, RULESET.errors
    assert {f"IA{n}" for n in range(101, 111)} <= set(RULESET.rules)


@pytest.mark.parametrize("rule", RULES, ids=lambda r: r.code)
def test_docstring_has_every_section(rule):
    sections = rule.doc_sections()
    missing = [s for s in DOC_SECTIONS if not sections.get(s, "").strip()]
    assert not missing, f"{rule.code} docstring lacks section(s) {missing}"
    assert list(sections)[: len(DOC_SECTIONS)] == list(DOC_SECTIONS), f"{rule.code}: sections out of order"
    assert rule.summary() and not rule.summary().startswith(DOC_SECTIONS[0])
    assert re.fullmatch(r"[A-Z]+[0-9]+", rule.code)
    assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", rule.name)
    assert rule.category in CATEGORIES and isinstance(rule.severity, Severity)
    assert rule.code_block("Example").strip(), f"{rule.code}: Example has no ```python block"
    assert rule.code_block("Fix").strip(), f"{rule.code}: Fix has no ```python block"
    options = sections["Options"]
    for name in rule.options:
        assert name in options, f"{rule.code}: option {name!r} is not documented under Options"
    if not rule.options:
        assert options.lower().startswith("none"), f"{rule.code}: Options should say None."


def _audit_namespace(rule, ns: dict) -> list:
    report = initaudit.audit(ns["model"], settings=Settings(select=[rule.code]))
    assert not report.rule_errors, report.rule_errors
    return [f for f in report.findings if f.rule == rule.code]


@pytest.mark.parametrize("rule", WITH_EXAMPLE, ids=lambda r: r.code)
def test_example_triggers_and_fix_clears(rule):
    ns: dict = {"torch": torch, "nn": nn, "math": math}
    torch.manual_seed(0)
    exec(compile(rule.code_block("Example"), f"<{rule.code} Example>", "exec"), ns)
    assert isinstance(ns.get("model"), nn.Module), f"{rule.code}: Example does not define `model`"
    before = _audit_namespace(rule, ns)
    assert before, f"{rule.code}: its Example does not trigger it"
    if rule.severity is not Severity.INFO:
        assert any(f.severity is not Severity.INFO for f in before), \
            f"{rule.code}: its Example only triggers it at info: {[f.message for f in before]}"
    torch.manual_seed(0)
    exec(compile(rule.code_block("Fix"), f"<{rule.code} Fix>", "exec"), ns)
    after = _audit_namespace(rule, ns)
    assert not after, f"{rule.code}: its Fix does not clear it: {[f.message for f in after]}"


@pytest.mark.parametrize("rule", RULES[:1] + RULES[-1:], ids=lambda r: r.code)
def test_explain_renders_the_docstring(rule):
    for key in (rule.code, rule.name, rule.code.lower()):
        result = CliRunner().invoke(main, ["explain", key])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"{rule.code} {rule.name} [{rule.category}")
        for section in DOC_SECTIONS:
            assert section in result.output


def test_explain_unknown_rule_suggests():
    result = CliRunner().invoke(main, ["explain", "init-scal"])
    assert result.exit_code == 2
    assert "did you mean 'init-scale'" in result.output
