"""Helpers for your own test suite.

.. code-block:: python

    from initaudit.testing import assert_healthy_init

    def test_model_init():
        assert_healthy_init(build_model())                     # no warning or error
        assert_healthy_init(build_model(), ignore=["IA105"])   # the usual selectors work

    def test_my_plugin_rule():                                 # a plugin's own tests
        findings = run_rules(broken_model(), rules=[MyRule])
        assert [f.rule for f in findings] == ["XMP001"]
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterable
from typing import Any

from initaudit.report import FAIL_ON, Report
from initaudit.rule import Finding, Rule, Severity


def audit_model(model: Any, inputs: Any = None, **settings: Any) -> Report:
    """``initaudit.audit(model, **settings)``, passing ``inputs`` to the probe where the installed
    initaudit supports it (they are ignored by a static-only audit)."""
    import dataclasses

    from initaudit.engine import Settings, audit

    kwargs: dict[str, Any] = {}
    if inputs is not None:
        if "inputs" in inspect.signature(audit).parameters:
            kwargs["inputs"] = inputs
        elif "probe_inputs" in {f.name for f in dataclasses.fields(Settings)}:
            kwargs["probe_inputs"] = inputs
    return audit(model, **kwargs, **settings)


def _config_defaults(model: Any, config: bool | str) -> dict[str, Any]:
    """fail-on and stage as the config file sets them (nothing when it sets neither)."""
    if config is False:
        return {}
    from initaudit.config import DEFAULT, resolve

    target = model if isinstance(model, (str, os.PathLike)) else None
    settings = resolve(target, config_file=config if isinstance(config, (str, os.PathLike)) else None)
    return {f: getattr(settings, f) for f in ("fail_on", "stage") if settings.sources.get(f, DEFAULT) != DEFAULT}


def _describe(findings: Iterable[Finding]) -> str:
    return "\n".join(f"  {f.severity.value:<7} {f.rule} {f.name} at {f.layer}: {f.message}"
                     + (f"\n          fix: {f.fix}" if f.fix else "") for f in findings)


def assert_healthy_init(model: Any, inputs: Any = None, *, fail_on: str | None = None,
                        ignore: Iterable[str] = (), select: Iterable[str] | None = None,
                        stage: str | None = None, config: bool | str = True, **settings: Any) -> Report:
    """Audit ``model`` (an ``nn.Module``, a checkpoint path, an ONNX file, a factory spec) and raise
    ``AssertionError`` listing every finding at or above ``fail_on`` (error | warning | info).

    Settings come from ``[tool.initaudit]`` in the nearest ``pyproject.toml``, as for the
    command line (walking up from the target, or from the current folder for a live module), so
    that the CLI and your tests judge a model alike; ``config=False`` ignores every config file,
    ``config="path/pyproject.toml"`` reads that one. ``fail_on`` defaults to the config's
    ``fail-on`` when it sets one, else ``"warning"``; ``stage`` to the config's, else ``"init"``.

    ``inputs`` are example inputs for the forward/backward probe. ``ignore`` and ``select`` take
    codes, code prefixes, names or categories (``ignore`` adds to the config's); other keyword
    arguments set :class:`initaudit.engine.Settings` fields (``rule_options``, ``severity``,
    ``per_layer_ignores``, ``rule_classes``, ...). Returns the report when the model is healthy.
    Installed plugins load as usual; pass ``plugins=False`` to run the built-in rules only.
    """
    __tracebackhide__ = True  # pytest shows the assertion, not this frame
    if fail_on is not None and (fail_on not in FAIL_ON or fail_on == "never"):
        raise ValueError(f"fail_on must be one of error, warning, info; got {fail_on!r}")
    if isinstance(ignore, str) or isinstance(select, str):
        raise TypeError("ignore and select take a list of selectors, e.g. ignore=['IA105']")
    defaults = _config_defaults(model, config)
    fail_on = fail_on or defaults.get("fail_on", "warning")
    stage = stage or defaults.get("stage", "init")
    chosen = {"select": list(select)} if select is not None else {}
    report = audit_model(model, inputs, fail_on=fail_on, ignore=list(ignore) or None, stage=stage,
                         config=config, **chosen, **settings)
    threshold = Severity(fail_on).rank
    bad = [f for f in report.findings if f.severity.rank >= threshold]
    problems = []
    if bad:
        problems.append(f"{len(bad)} finding(s) at or above {fail_on}:\n{_describe(bad)}")
    if report.rule_errors:
        problems.append("rule errors:\n" + "\n".join(f"  {e}" for e in report.rule_errors))
    if problems:
        raise AssertionError(f"initaudit: {report.target} is not healthy\n" + "\n".join(problems))
    return report


def run_rules(model: Any, rules: Iterable[type[Rule]], inputs: Any = None, **settings: Any) -> list[Finding]:
    """Findings of just ``rules`` (Rule classes, installed or not) on ``model``: the way to test a
    rule in its own package. Raises AssertionError when a rule fails to load or raises."""
    __tracebackhide__ = True
    rules = list(rules)
    settings.setdefault("plugins", False)
    settings.setdefault("config", False)  # a rule's own tests: no project config in the way
    report = audit_model(model, inputs, rule_classes=rules, select=[r.code for r in rules], **settings)
    if report.rule_errors:
        raise AssertionError("initaudit: " + "\n".join(report.rule_errors))
    return report.findings
