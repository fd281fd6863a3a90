"""The audit pipeline: target -> ModelGraph -> Context -> rules -> findings -> Report.

Selection (select / extend-select / ignore by code, code prefix, kebab-case name or category),
per-layer ignores, per-rule options and severity overrides, and the stage all live here; rules
know none of it.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initaudit.errors import ConfigError, TargetError
from initaudit.graph import ModelGraph, OpKind, ParamRole
from initaudit.registry import RuleSet, discover
from initaudit.report import FAIL_ON, Report
from initaudit.roles import refine_roles
from initaudit.rule import Finding, Rule, Severity

if TYPE_CHECKING:  # torch loads when an audit runs, not on import (Settings, `initaudit config`)
    import torch.nn as nn

    from initaudit.context import Context

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
    #: Rule classes passed in directly (Python API only, e.g. a plugin's own tests).
    rule_classes: list[type[Rule]] = field(default_factory=list)
    #: A baseline file (initaudit.baseline): findings it records are suppressed.
    baseline: str | None = None
    # [tool.initaudit.probe] (initaudit.probe.options.ProbeOptions takes them when it runs).
    probe_enabled: bool = True
    probe_batch_size: int = 64
    probe_seed: int = 0
    probe_device: str | None = None  # None: where the model's parameters are
    probe_inputs: Any = None  # --inputs FILE (or, from Python, a tensor / tuple / dict of tensors)
    probe_input_shape: list[str] = field(default_factory=list)  # --input-shape [NAME=]D0,D1,...
    probe_histograms: bool = False  # --histograms: keep per-layer activation histograms
    #: Where each field came from ("default", a config file, "command line"); set by
    #: initaudit.config.resolve, used in error messages and by `initaudit config`.
    sources: dict[str, str] = field(default_factory=dict)
    config_path: str | None = None
    #: Load rule files named by a config found next to the target, not in the current project.
    trust_config_rules: bool = False
    #: What resolving the config decided and the report should say (e.g. rules it ignored).
    config_notes: list[str] = field(default_factory=list)

    def validate(self) -> None:
        if self.fail_on not in FAIL_ON:
            raise ConfigError(f"fail-on: {self.fail_on!r} is not one of {', '.join(FAIL_ON)}")
        if self.stage not in STAGES:
            raise ConfigError(f"stage: {self.stage!r} is not one of {', '.join(STAGES)}")
        for key, value in self.severity.items():
            if value not in [s.value for s in Severity]:
                raise ConfigError(f"severity for {key}: {value!r} is not error, warning or info")
        if isinstance(self.probe_batch_size, bool) or not isinstance(self.probe_batch_size, int) \
                or self.probe_batch_size < 1:
            raise ConfigError(f"probe.batch-size: {self.probe_batch_size!r} is not an integer >= 1")
        if isinstance(self.probe_seed, bool) or not isinstance(self.probe_seed, int) or self.probe_seed < 0:
            raise ConfigError(f"probe.seed: {self.probe_seed!r} is not an integer >= 0")


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


def _instantiate_all(classes: list[type[Rule]], settings: Settings, errors: list[str]) -> list[Rule]:
    """Instances of the enabled rules; a plugin rule whose constructor fails is reported and
    skipped (a bad option value is still a ConfigError)."""
    rules = []
    for cls in classes:
        try:
            rules.append(instantiate(cls, settings))
        except ConfigError:
            raise
        except Exception as exc:
            errors.append(f"rule {cls.code} ({cls.name}, from {cls.origin or cls.__module__}) failed to "
                          f"start: {type(exc).__name__}: {exc}; it did not run")
    return rules


def resolve_stage(requested: str, graph: ModelGraph,
                  known: Mapping[str, float | None] | None = None) -> tuple[str, str]:
    """(stage, why). ``auto`` never treats "matches no known scheme" as evidence of training;
    it reads the checkpoint's counters, a live module's BatchNorm counters and the weights'
    spectra (initaudit.stage; ``known``: spectra the static pass measured, by name)."""
    if requested != "auto":
        return requested, f"set by the user (--stage {requested})"
    from initaudit import stage as stage_evidence

    found = stage_evidence.collect(graph, known)
    if graph.stage_evidence:
        return "trained", "; ".join(graph.stage_evidence)
    spectra = stage_evidence.init_summary(found)
    if graph.format == "torch-module" and not graph.code_ran:  # built now, not unpickled from a file
        return "init", "a freshly built module from its factory" + spectra
    return "init", ("no evidence of training in the file (no optimizer state, step counter or "
                    "updated BatchNorm statistics" + spectra + "); pass --stage trained if these "
                    "are trained weights")


def run_rules(ctx: Context, rules: list[Rule]) -> tuple[list[Finding], list[str]]:
    """Run every rule; one that raises is reported and the others still run."""
    findings: list[Finding] = []
    errors: list[str] = []
    for rule in rules:
        if ctx.trained and not rule.applies_when_trained:
            continue
        if rule.needs_probe and not getattr(ctx.probe, "ran", False):
            continue
        produced: list[Finding] = []
        try:
            for item in rule.check(ctx) or ():
                if not isinstance(item, Finding):
                    raise TypeError(f"check() yielded {type(item).__name__}, not a Finding")
                if not isinstance(item.severity, Severity):
                    item.severity = Severity(item.severity)
                produced.append(item)
        except Exception as exc:
            where = f", from {type(rule).origin}" if type(rule).origin not in ("", "initaudit") else ""
            kept = f"; the {len(produced)} finding(s) it made before are kept" if produced else ""
            errors.append(f"rule {rule.code} ({rule.name}{where}) raised {type(exc).__name__}: {exc}; "
                          f"its findings may be missing from this report{kept}")
        findings.extend(produced)
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
        a, res = ctx.analysis(p.name), ctx.assessment(p.name)
        row = {
            "name": p.layer, "op": p.op, "param": p.name, "shape": list(p.shape), "dtype": p.dtype,
            "kind": p.kind.value, "fan_in": p.fan_in, "fan_out": p.fan_out,
            "activation": str(p.activation) if p.activation else None,
            "activation_source": p.activation_source,
            "follows_unknown_op": p.follows_unknown,
            "normalized_after": p.normalized_after, "residual_end": p.residual_end,
            "is_output": p.is_output, "feeds_head": p.feeds_head, "tied_with": p.aliases, "notes": p.notes,
            "stats": a.stats.to_json(),
            "runtime_scale": p.runtime_scale,  # the forward's own multiplier of the stored weight
            # the weight as the signal sees it, where the forward changes it (a multiplier, or a
            # per-output-channel map: weight standardisation); null when applied as stored
            "applied_stats": ctx.applied_stats(p.name).to_json()
            if p.runtime_scale != 1.0 or p.runtime_rows is not None else None,
            "expected": ({"scheme": res.expected.scheme, "std": res.expected.std, "gain": res.expected.gain}
                         if res and res.expected else None),
            "ratio": res.ratio if res else None,
            "matched_schemes": res.matched if res else [],
            # each match with its gain: {"scheme": "he", "gain": 1.414, "activation": "relu", ...}
            "matches": [m.to_json() for m in res.matches] if res else [],
            "predicted_std": signal[p.name].predicted_std if p.name in signal else None,
            "probe": None,
        }
        if ctx.probe is not None and getattr(ctx.probe, "ran", False):
            site = ctx.probe.site_for_param(p.name)
            grad = (ctx.probe.grads or {}).get(p.name)
            if site or grad:
                row["probe"] = {**(site.to_json() if site else {}),
                                "grad_norm": grad.norm if grad else None,
                                "grad_to_weight": grad.ratio if grad and grad.received else None}
        rows.append(row)
    return rows


def run_probe(graph: ModelGraph, factory: Any, settings: Settings, runtime: Any = None):
    """The forward/backward probe (initaudit.probe) unless disabled; a ProbeResult either way.
    ``runtime``: what :func:`initaudit.probe.start_probe` started for it."""
    from initaudit.probe import ProbeResult
    from initaudit.probe import run_probe as probe

    if not settings.probe_enabled:
        return ProbeResult(ran=False, seed=settings.probe_seed, skipped_reason="disabled (--no-probe)")
    return probe(graph, probe_options(settings), factory, runtime)


def probe_options(settings: Settings):
    from initaudit.probe import ProbeOptions
    from initaudit.probe.options import parse_input_shapes

    return ProbeOptions(batch_size=settings.probe_batch_size, seed=settings.probe_seed,
                        device=settings.probe_device, inputs=settings.probe_inputs,
                        input_shapes=parse_input_shapes(settings.probe_input_shape),
                        histograms=settings.probe_histograms,
                        batch_size_given=settings.sources.get("probe_batch_size") == "command line")


def probe_warnings(graph: ModelGraph, probe: Any, settings: Settings) -> list[str]:
    """A probe that was not asked for and could not run, on a model that has an architecture:
    a warning (stderr) and a note; the static audit's findings stand."""
    if not settings.probe_enabled or getattr(probe, "ran", False):
        return []
    if graph.module is None and graph.format != "onnx":
        return []  # a bare checkpoint: static by nature, the header says so
    return [f"probe not run: {getattr(probe, 'skipped_reason', None) or 'unknown reason'}; "
            "the static audit ran without it"]


def signal_rows(ctx: Context) -> list[dict[str, Any]]:
    """The static depth profile, with the probe's measured std and ratio beside each entry."""
    measured = {id(m.signal): m for m in ctx.measured_profile()}
    rows = []
    for s in ctx.signal:
        m = measured.get(id(s))
        # measured_signal_std: the spread the ratio is computed from (the layer's own bias taken
        # off where known), which the report shows, so that a zeroed layer does not show its
        # bias's spread beside a ratio of 1e-8; measured_std keeps its meaning (bias included)
        rows.append({**vars(s), "measured_std": m.site.std if m else None,
                     "measured_ratio": m.ratio if m else None,
                     "measured_signal_std": m.site.spread if m else None})
    return rows


_ITEMSIZE = {"float64": 8, "double": 8, "int64": 8, "uint64": 8, "complex64": 8, "complex128": 16,
             "float16": 2, "half": 2, "bfloat16": 2, "int16": 2, "uint16": 2, "int8": 1, "uint8": 1,
             "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1, "float8": 1}


def stored_bytes(param: Any) -> int:
    """Bytes of a tensor as stored (4 per element unless its dtype says otherwise)."""
    dtype = str(getattr(param, "dtype", "") or "").removeprefix("torch.").lower()
    return param.numel * _ITEMSIZE.get(dtype, 4)


def _check_analysable(graph: ModelGraph) -> None:
    if not any(p.role is not ParamRole.OTHER or p.kind is not OpKind.OTHER for p in graph.params.values()):
        reasons = "; ".join(f"{n}: {r}" for n, r in graph.skipped[:3]) or "it holds no floating-point tensors"
        raise TargetError(graph.target, f"nothing could be analysed ({reasons})")


def _analysed(graph: ModelGraph, settings: Settings, progress: Progress | None,
              duplicates: bool) -> tuple[Any, str, str]:
    """(Context, stage, why): the stage resolved and every tensor analysed (the static pass),
    progress in stored bytes; the duplicate-row search only when an enabled rule reads it."""
    from initaudit.analysis import AnalysisOptions
    from initaudit.context import Context

    # The spectra of the stage evidence are measured by the static pass where it reads each
    # sampled matrix (a pool worker at scale), and the stage resolved once it is done: nothing
    # in the pass depends on the stage, and the caller no longer maps those matrices again.
    spectra = frozenset()
    if settings.stage == "auto":
        from initaudit.stage import sampled

        spectra = frozenset(p.name for p in sampled(graph.params.values()))
    ctx = Context(graph, settings.stage, AnalysisOptions(duplicates=duplicates, spectra=spectra))
    if progress is not None:  # in bytes as stored (fp16 counts 2 per element), as the file's size
        total = sum(stored_bytes(p) for p in graph.params.values())
        done = 0

        def on_tensor(param) -> None:
            nonlocal done
            done += stored_bytes(param)
            progress(done, total)

        ctx.on_tensor = on_tensor
    ctx.analyze_all()
    stage, why = resolve_stage(settings.stage, graph, ctx.edge_ratios())
    ctx.stage = stage
    if progress is not None and hasattr(progress, "phase"):
        progress.phase("probe")  # forward and backward pass: the bar says so instead of sitting at 100%
    return ctx, stage, why


def audit(target: str | Path | nn.Module, *, model: str | nn.Module | None = None,
          settings: Settings | None = None, progress: Progress | None = None,
          unsafe_pickle: bool = False, inputs: Any = None, config: bool | str | Path = True,
          **overrides: Any) -> Report:
    """Audit a model and return its :class:`Report`.

    ``target`` is an ``nn.Module``, a factory spec (``pkg.mod:factory``, ``file.py:factory``), a
    checkpoint (``.pt``/``.pth``/``.bin``/``.ckpt``, ``.safetensors``, a sharded index) or an
    ONNX file; ``model`` gives the architecture for a checkpoint. Keyword ``overrides`` set
    :class:`Settings` fields, e.g. ``audit(m, fail_on="warning", ignore=["IA104"])``.
    ``inputs`` are the probe's inputs: a path (``--inputs``), a tensor (one argument), a
    tuple/list (positional arguments) or a dict of tensors (keyword arguments).

    Settings come from ``[tool.initaudit]`` as on the command line: the first ``pyproject.toml``
    with that table walking up from the target (from the current folder for a live module or an
    importable spec), then ``overrides`` on top (``ignore``, ``extend_select`` and ``rule_files``
    add to the file's lists, the others replace). ``config=False`` ignores every config file
    (the CLI's ``--isolated``); ``config="path/to/pyproject.toml"`` reads that file (``--config``).
    A ``settings`` object is used as given, without reading any file.
    """
    if settings is None:
        from initaudit.config import resolve

        unknown = sorted(k for k in overrides if k not in Settings.__dataclass_fields__)
        if unknown:
            raise TypeError(f"audit() got an unexpected keyword argument {unknown[0]!r}")
        explicit = config if isinstance(config, (str, Path)) and not isinstance(config, bool) else None
        settings = resolve(target if isinstance(target, (str, Path)) else None, config_file=explicit,
                           isolated=config is False, cli=overrides)
    else:
        for key, value in overrides.items():
            if not hasattr(settings, key):
                raise TypeError(f"audit() got an unexpected keyword argument {key!r}")
            setattr(settings, key, value)
    if inputs is not None:
        settings.probe_inputs = inputs
    settings.validate()
    from initaudit import baseline as baseline_mod
    from initaudit.config import check_rule_references
    from initaudit.loaders.target import load_target

    ruleset = discover(settings.rule_files, plugins=settings.plugins, classes=settings.rule_classes)
    config_notes = check_rule_references(settings, ruleset)
    baseline = baseline_mod.load(settings.baseline) if settings.baseline else None
    start_errors: list[str] = []
    rules = _instantiate_all(enabled_rules(ruleset, settings), settings, start_errors)
    from initaudit.request import check_device, check_model_argument, check_probe_honoured

    check_model_argument(target, model)
    check_device(settings)
    graph, _factory = load_target(target, model=model, unsafe_pickle=unsafe_pickle)
    refine_roles(graph)
    _check_analysable(graph)
    if graph.module is not None:  # the dataflow from one recorded forward pass (initaudit.capture)
        from initaudit.probe import capture_graph

        capture_graph(graph, probe_options(settings), _factory)
    from initaudit.probe import start_probe

    runtime = start_probe(graph) if settings.probe_enabled else None  # starts while the static pass runs
    try:
        ctx, stage, why = _analysed(graph, settings, progress, any(r.needs_duplicates for r in rules))
        ctx.probe = run_probe(graph, _factory, settings, runtime)
    finally:
        if runtime is not None:
            runtime.close()
    check_probe_honoured(settings, ctx.probe, graph.target)
    warnings = probe_warnings(graph, ctx.probe, settings)
    findings, rule_errors = run_rules(ctx, rules)
    by_code = {r.code: type(r) for r in rules}
    kept = [f for f in findings if not _layer_ignored(f, settings, by_code)]
    order = {name: i for i, name in enumerate(graph.params)}
    kept.sort(key=lambda f: (-f.severity.rank, order.get(f.layer, math.inf), f.rule))
    suppressed = {"per-layer-ignores": len(findings) - len(kept)} if len(findings) != len(kept) else {}
    baseline_info = None
    baselined: list[Finding] = []
    if baseline is not None:
        applied = baseline_mod.apply(kept, baseline)
        kept, baselined = applied.kept, applied.suppressed
        baseline_info = applied.summary(baseline.path, len(baseline.entries))
        suppressed["baseline"] = len(baselined)
    notes = list(graph.notes) + config_notes + [f"probe: {n}" for n in getattr(ctx.probe, "notes", None) or []]
    notes += warnings
    if stage == "trained":
        skipped_rules = [r.code for r in rules if not r.applies_when_trained]
        if skipped_rules:
            notes.append(f"stage trained: init-only rules not applied ({', '.join(skipped_rules)})")
    layers = layer_rows(ctx)
    if settings.probe_histograms:  # the pictures: weight values beside the expected density
        from initaudit.histograms import add_weight_histograms

        add_weight_histograms(graph, layers)
    opts = {r.code: r.opts for r in rules}
    return Report(
        target=graph.target, format=graph.format, stage=stage, stage_reason=why,
        layers=layers, findings=kept, fail_on=settings.fail_on, probe=ctx.probe,
        parameter_count=graph.parameter_count, notes=notes, skipped=list(graph.skipped),
        rule_errors=ruleset.errors + start_errors + rule_errors,
        signal=signal_rows(ctx) if graph.has_architecture else [],
        rules_run=[r.code for r in rules],
        rule_meta={c.code: {"name": c.name, "category": c.category, "severity": c.severity.value,
                            "summary": c.summary(), "origin": c.origin, "doc": c.doc(),
                            "effective_severity": (_lookup(settings.severity, c) or c.severity.value),
                            "options": opts.get(c.code, c.options)}
                   for c in ruleset.sorted()},
        suppressed=suppressed,
        source_path=graph.source_path, files_read=set(graph.files_read),
        baseline=baseline_info,
        baselined=baselined,
        capture=graph.capture,
        warnings=warnings,
        code_ran=graph.code_ran,
    )
