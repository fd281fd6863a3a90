"""The audit pipeline: target -> ModelGraph -> Context -> rules -> findings -> Report.

Selection (select / extend-select / ignore by code, code prefix, kebab-case name or category),
per-layer ignores, per-rule options and severity overrides, and the stage all live here; rules
know none of it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.nn as nn

from initaudit.context import Context
from initaudit.errors import ConfigError, TargetError
from initaudit.graph import ModelGraph, OpKind, ParamRole
from initaudit.loaders.target import load_target
from initaudit.registry import RuleSet, discover
from initaudit.report import FAIL_ON, Report
from initaudit.rule import Finding, Rule, Severity
from initaudit.schemes import assess

STAGES = ("auto", "init", "trained")
Progress = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass
class Settings:
    """Everything a user can configure about one audit (CLI flags and [tool.initaudit])."""

    select: list[str] = field(default_factory=lambda: ["ALL"])
    extend_select: list[str] = field(default_factory=list)
    ignore: list[str] = field(default_factory=list)
    per_layer_ignores: dict[str, list[str]] = field(default_factory=dict)  # layer glob -> selectors
    rule_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # code or name -> options
    severity: dict[str, str] = field(default_factory=dict)  # code or name -> severity
    fail_on: str = "error"
    stage: str = "auto"
    rule_files: list[str] = field(default_factory=list)
    plugins: bool = True

    def validate(self) -> None:
        if self.fail_on not in FAIL_ON:
            raise ConfigError(f"fail-on: {self.fail_on!r} is not one of {', '.join(FAIL_ON)}")
        if self.stage not in STAGES:
            raise ConfigError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        for key, value in self.severity.items():
            if value not in [s.value for s in Severity]:
                raise ConfigError(f"severity for {key}: {value!r} is not error, warning or info")


def selector_matches(selector: str, rule: type[Rule]) -> bool:
    """ALL, a code (IA104), a code prefix (IA1), a kebab-case name or a category."""
    s = selector.strip()
    return (s.upper() == "ALL" or rule.code.startswith(s.upper()) or s.lower() == rule.name
            or s.lower() == rule.category)


def _lookup(table: dict[str, Any], rule: type[Rule]) -> Any:
    return table.get(rule.code, table.get(rule.name))


def enabled_rules(ruleset: RuleSet, settings: Settings) -> list[type[Rule]]:
    chosen = []
    for cls in ruleset.sorted():
        selected = any(selector_matches(s, cls) for s in [*settings.select, *settings.extend_select])
        if selected and not any(selector_matches(s, cls) for s in settings.ignore):
            chosen.append(cls)
    return chosen


def instantiate(cls: type[Rule], settings: Settings) -> Rule:
    severity = _lookup(settings.severity, cls)
    try:
        return cls(_lookup(settings.rule_options, cls) or {}, Severity(severity) if severity else None)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def resolve_stage(requested: str, graph: ModelGraph) -> tuple[str, str]:
    """(stage, why). ``auto`` never treats "matches no known scheme" as evidence of training."""
    if requested != "auto":
        return requested, f"set by the user (--stage {requested})"
    if graph.stage_evidence:
        return "trained", "; ".join(graph.stage_evidence)
    if graph.format == "torch-module":
        return "init", "a freshly built module from its factory"
    return "init", ("no evidence of training in the file (no optimizer state, step counter or "
                    "updated BatchNorm statistics); pass --stage trained if these are trained weights")


def run_rules(ctx: Context, rules: list[Rule]) -> tuple[list[Finding], list[str]]:
    """Run every rule; one that raises is reported and the others still run."""
    findings: list[Finding] = []
    errors: list[str] = []
    for rule in rules:
        if ctx.trained and not rule.applies_when_trained:
            continue
        if rule.needs_probe and ctx.probe is None:
            continue
        try:
            findings.extend(rule.check(ctx))
        except Exception as exc:
            errors.append(f"rule {rule.code} ({rule.name}) raised {type(exc).__name__}: {exc}; "
                          "its findings are missing from this report")
    return findings, errors


def _layer_ignored(finding: Finding, settings: Settings, rules: dict[str, type[Rule]]) -> bool:
    rule = rules.get(finding.rule)
    return rule is not None and any(
        fnmatch.fnmatchcase(finding.layer, glob) and any(selector_matches(s, rule) for s in selectors)
        for glob, selectors in settings.per_layer_ignores.items())


def layer_rows(ctx: Context) -> list[dict[str, Any]]:
    """The per-layer table: every weight and normalisation scale, with stats and schemes."""
    g = ctx.graph
    signal = {s.param: s for s in ctx.signal} if g.has_architecture else {}
    rows = []
    for p in g.params.values():
        if not (p.is_weight or p.role is ParamRole.NORM_SCALE):
            continue
        a = ctx.analysis(p.name)
        res = assess(p, a.stats, a.orthogonal_gain, g.family, g.has_architecture)
        row = {
            "name": p.layer, "op": p.op, "param": p.name, "shape": list(p.shape), "dtype": p.dtype,
            "kind": p.kind.value, "fan_in": p.fan_in, "fan_out": p.fan_out,
            "activation": str(p.activation) if p.activation else None,
            "activation_source": p.activation_source,
            "normalized_after": p.normalized_after, "residual_end": p.residual_end,
            "is_output": p.is_output, "tied_with": p.aliases,
            "stats": a.stats.to_json(),
            "expected": ({"scheme": res.expected.scheme, "std": res.expected.std, "gain": res.expected.gain}
                         if res and res.expected else None),
            "ratio": res.ratio if res else None,
            "matched_schemes": res.matched if res else [],
            "predicted_std": signal[p.name].predicted_std if p.name in signal else None,
            "probe": None,
        }
        if ctx.probe is not None and getattr(ctx.probe, "ran", False):
            site = ctx.probe.site_for_param(p.name)
            grad = (ctx.probe.grads or {}).get(p.name)
            if site or grad:
                row["probe"] = {**(site.to_json() if site else {}),
                                "grad_norm": grad.norm if grad else None}
        rows.append(row)
    return rows


def _check_analysable(graph: ModelGraph) -> None:
    if not any(p.role is not ParamRole.OTHER or p.kind is not OpKind.OTHER for p in graph.params.values()):
        reasons = "; ".join(f"{n}: {r}" for n, r in graph.skipped[:3]) or "it holds no floating-point tensors"
        raise TargetError(graph.target, f"nothing could be analysed ({reasons})")


def audit(target: str | Path | nn.Module, *, model: str | nn.Module | None = None,
          settings: Settings | None = None, progress: Progress | None = None,
          unsafe_pickle: bool = False, **overrides: Any) -> Report:
    """Audit a model and return its :class:`Report`.

    ``target`` is an ``nn.Module``, a factory spec (``pkg.mod:factory``, ``file.py:factory``), a
    checkpoint (``.pt``/``.pth``/``.bin``/``.ckpt``, ``.safetensors``, a sharded index) or an
    ONNX file; ``model`` gives the architecture for a checkpoint. Keyword ``overrides`` set
    :class:`Settings` fields, e.g. ``audit(m, fail_on="warning", ignore=["IA104"])``.
    """
    settings = settings or Settings()
    for key, value in overrides.items():
        if not hasattr(settings, key):
            raise TypeError(f"audit() got an unexpected keyword argument {key!r}")
        setattr(settings, key, value)
    settings.validate()
    ruleset = discover(settings.rule_files, plugins=settings.plugins)
    rules = [instantiate(cls, settings) for cls in enabled_rules(ruleset, settings)]
    graph, _factory = load_target(target, model=model, unsafe_pickle=unsafe_pickle)
    _check_analysable(graph)
    stage, why = resolve_stage(settings.stage, graph)
    ctx = Context(graph, stage)
    if progress is not None:
        total = sum(p.numel for p in graph.params.values())
        done = 0

        def on_tensor(param) -> None:
            nonlocal done
            done += param.numel
            progress(done, total)

        ctx.on_tensor = on_tensor
    ctx.analyze_all()
    findings, rule_errors = run_rules(ctx, rules)
    by_code = {r.code: type(r) for r in rules}
    kept = [f for f in findings if not _layer_ignored(f, settings, by_code)]
    order = {name: i for i, name in enumerate(graph.params)}
    kept.sort(key=lambda f: (-f.severity.rank, order.get(f.layer, math.inf), f.rule))
    notes = list(graph.notes)
    if stage == "trained":
        skipped_rules = [r.code for r in rules if not r.applies_when_trained]
        if skipped_rules:
            notes.append(f"stage trained: init-only rules not applied ({', '.join(skipped_rules)})")
    return Report(
        target=graph.target, format=graph.format, stage=stage, stage_reason=why,
        layers=layer_rows(ctx), findings=kept, fail_on=settings.fail_on, probe=ctx.probe,
        parameter_count=graph.parameter_count, notes=notes, skipped=list(graph.skipped),
        rule_errors=ruleset.errors + rule_errors,
        signal=[vars(s) for s in ctx.signal] if graph.has_architecture else [],
        rules_run=[r.code for r in rules],
        rule_meta={c.code: {"name": c.name, "category": c.category, "severity": c.severity.value,
                            "summary": c.summary(), "origin": c.origin} for c in ruleset.sorted()},
        suppressed={"per-layer-ignores": len(findings) - len(kept)} if len(findings) != len(kept) else {},
        source_path=graph.source_path,
    )
