"""The plugin's own tests: initaudit.testing runs the rule without installing anything."""

import math

import pytest
import torch
import torch.nn as nn

from initaudit.rule import DOC_SECTIONS
from initaudit.testing import assert_healthy_init, run_rules
from initaudit_example_rule import BiasDominates


def _model(bias: float) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    torch.nn.init.constant_(model[0].bias, bias)
    return model


def test_flags_a_dominating_bias():
    findings = run_rules(_model(-10.0), [BiasDominates])
    assert [(f.rule, f.layer) for f in findings] == [("XMP001", "0.bias")]
    assert findings[0].evidence["ratio"] > 3


def test_zero_bias_is_healthy():
    assert run_rules(_model(0.0), [BiasDominates]) == []
    assert_healthy_init(_model(0.0), rule_classes=[BiasDominates], select=["XMP"], plugins=False)


def test_option_raises_the_threshold():
    assert run_rules(_model(-10.0), [BiasDominates], rule_options={"XMP001": {"max_ratio": 100.0}}) == []


def test_docstring_example_and_fix():
    assert all(s in BiasDominates.doc_sections() for s in DOC_SECTIONS)
    ns = {"torch": torch, "nn": nn, "math": math}
    exec(BiasDominates.code_block("Example"), ns)
    assert run_rules(ns["model"], [BiasDominates])
    exec(BiasDominates.code_block("Fix"), ns)
    assert not run_rules(ns["model"], [BiasDominates])


def test_assert_healthy_init_lists_the_finding():
    with pytest.raises(AssertionError, match="XMP001"):
        assert_healthy_init(_model(-10.0), rule_classes=[BiasDominates], select=["XMP"], plugins=False)
