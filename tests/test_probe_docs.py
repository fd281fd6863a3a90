"""Each probe rule's docstring: fixed sections, documented options, an Example that triggers the
rule (with the probe on, inputs synthesised) and a Fix that clears it."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.rule import CATEGORIES, DOC_SECTIONS, Severity
from initaudit.rules import BUILTIN_RULES
from initaudit.rules.probe import PROBE_RULES


def test_probe_rules_are_builtin_with_ia2_codes_and_one_category_each():
    assert all(r in BUILTIN_RULES for r in PROBE_RULES)
    assert [r.code for r in PROBE_RULES] == [f"IA{n}" for n in range(201, 210)]
    assert all(r.needs_probe and r.category in CATEGORIES for r in PROBE_RULES)
    assert {r.category for r in PROBE_RULES} == {"nonfinite", "saturation", "dead-units", "vanishing",
                                                 "exploding", "symmetry", "unused"}


@pytest.mark.parametrize("rule", PROBE_RULES, ids=lambda r: r.code)
def test_docstring_sections_and_options(rule):
    sections = rule.doc_sections()
    assert list(sections)[:len(DOC_SECTIONS)] == list(DOC_SECTIONS)
    for name, default in rule.options.items():
        m = re.search(rf"^{name} \((\w+), default ([^)]+)\)", sections["Options"], re.M)
        assert m, f"{rule.code}: option {name} not documented as 'name (type, default X)'"
        assert float(m.group(2)) == default, (name, m.group(2), default)
    if not rule.options:
        assert sections["Options"].startswith("None")


@pytest.mark.parametrize("rule", PROBE_RULES, ids=lambda r: r.code)
def test_example_triggers_and_fix_clears(rule):
    ns = {"torch": torch, "nn": nn, "math": math}
    torch.manual_seed(0)
    exec(rule.code_block("Example"), ns)
    report = initaudit.audit(ns["model"], select=[rule.code])
    assert report.probe.ran, report.probe.skipped_reason
    before = [f for f in report.findings if f.rule == rule.code]
    assert before and any(f.severity is not Severity.INFO for f in before), rule.code
    exec(rule.code_block("Fix"), ns)
    after = initaudit.audit(ns["model"], select=[rule.code])
    assert after.probe.ran
    assert not [f for f in after.findings if f.rule == rule.code], [f.message for f in after.findings]
