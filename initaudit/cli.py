"""Command line: a thin layer over :func:`initaudit.audit`.

Exit codes (docs/exit-codes in README): 0 no finding at or above --fail-on, 1 at least one,
2 could not run (one line on stderr naming the file and the cause; a traceback too with
--debug, still exit 2), 130 interrupted (Ctrl-C; no report file is left half-written).

Options come in groups, one decorator each (settings, probe, output, run); a new option joins
its group, and the command reads it from ``flags``. Commands that do not touch a model
(``--version``, ``--help``, ``rules``, ``explain``, ``config``) do not import torch.
"""

from __future__ import annotations

import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from initaudit import __version__
from initaudit.errors import InitAuditError, TargetError
from initaudit.outputs import ALSO_WRITE, FORMATS, ProgressBar, render, stdout_console, write_atomic

FAIL_ON = ("error", "warning", "info", "never")  # initaudit.report.FAIL_ON (kept import-free)
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell and Python report it


def _split(values: tuple[str, ...]) -> list[str]:
    """--select A,B --select C -> [A, B, C]"""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _apply(options: list[Callable], f: Callable) -> Callable:
    for option in reversed(options):
        f = option(f)
    return f


class DefaultGroup(click.Group):
    """``initaudit TARGET`` means ``initaudit audit TARGET``; subcommands stay reachable.
    Ctrl-C exits 130 with one line, not click's "Aborted!" and exit 1 (the findings code)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["audit", *args]
        return super().parse_args(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("initaudit: interrupted; no report was written", err=True)
            sys.exit(EXIT_INTERRUPTED)


@click.group(cls=DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="initaudit")
def main() -> None:
    """Lint a neural network's weight initialisation before you spend GPU hours on it.

    \b
    initaudit model.onnx                         audit an ONNX graph
    initaudit path/to/model.py:build_model       audit a fresh module from its factory
    initaudit ckpt.safetensors --model pkg.mod:build_model
                                                 audit checkpoint weights in their architecture
    initaudit ckpt.pt --format json -o report.json --fail-on warning
    initaudit model.onnx --format concise        one line per finding (CI logs)
    initaudit rules                              list every rule
    initaudit explain IA104                      what a rule checks, why, and how to fix it

    Exit codes: 0 clean (nothing at or above --fail-on), 1 findings, 2 could not run,
    130 interrupted.
    """


# --- option groups -------------------------------------------------------------------------------

def _settings_options(f: Callable) -> Callable:
    """Flags that set Settings, shared by `audit`, `files` and `config`."""
    return _apply([
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Read settings from FILE (a pyproject.toml with [tool.initaudit], or a TOML "
                          "file with the same keys at the top level). Default: the first pyproject.toml "
                          "with [tool.initaudit] found walking up from the target."),
        click.option("--isolated", is_flag=True, help="Ignore every configuration file."),
        click.option("--fail-on", type=click.Choice(FAIL_ON), default=None,
                     help="Exit 1 when a finding is at or above this severity.  [default: error]"),
        click.option("--stage", type=click.Choice(["auto", "init", "trained"]), default=None,
                     help="init: fresh weights; trained: skip init-scale rules. auto decides from evidence "
                          "(optimizer state, step counters, updated BatchNorm statistics), never from "
                          "'matches no scheme'.  [default: auto]"),
        click.option("--select", multiple=True, metavar="RULES",
                     help="Only these rules: codes, code prefixes (IA1), names or categories; "
                          "comma-separated. Replaces the config's select."),
        click.option("--extend-select", multiple=True, metavar="RULES",
                     help="Add to the selection (and to the config's extend-select)."),
        click.option("--ignore", multiple=True, metavar="RULES",
                     help="Skip these rules (same forms as --select); adds to the config's ignore."),
        click.option("--rules", "rule_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
                     help="Load extra rules from a Python file (repeatable; adds to the config's rules)."),
        click.option("--no-plugins", is_flag=True, default=None,
                     help="Do not load rule plugins from installed packages (built-in rules and --rules "
                          "files still load)."),
    ], f)


def _probe_options(f: Callable) -> Callable:
    """The forward/backward probe's flags (initaudit.probe). Given on the command line they are
    requests: a probe that cannot honour one stops the run (exit 2) rather than skip silently."""
    return _apply([
        click.option("--probe/--no-probe", "probe", default=None,
                     help="Push a batch through the model and back, and run the probe rules (IA2xx). "
                          "[default: on where the model can run: factories, --model, ONNX]"),
        click.option("--inputs", "inputs_file", type=click.Path(dir_okay=False), metavar="FILE",
                     help="Probe inputs: a tensor, tuple or dict of tensors saved with torch.save "
                          "(read with weights_only=True), or .npy / .npz. Default: example_inputs() "
                          "next to the factory, else synthetic inputs inferred from the first layer."),
        click.option("--input-shape", "input_shape", multiple=True, metavar="[NAME=]D0,D1,...",
                     help="Shape of a synthetic input, batch first (64,3,32,32; input_ids=8,128); "
                          "repeatable for named inputs."),
        click.option("--batch-size", type=click.IntRange(min=1), default=None,
                     help="Synthetic batch size.  [default: 64]"),
        click.option("--seed", type=click.IntRange(min=0), default=None,
                     help="Seed of the synthetic inputs and the probe loss; the same seed gives the "
                          "same report.  [default: 0]"),
        click.option("--device", default=None, metavar="DEVICE",
                     help="cpu, cuda, cuda:N, or auto (cuda when available). A model elsewhere is probed "
                          "as a copy.  [default: the model's own device]"),
        click.option("--histograms", is_flag=True, default=None,
                     help="Draw per-layer activation histograms in the terminal report."),
    ], f)


def _output_options(f: Callable) -> Callable:
    """What the report looks like and where it goes (see :class:`OutputFlags`)."""
    also = [click.option(f"--{fmt}", f"{fmt}_file", type=click.Path(dir_okay=False, path_type=Path),
                         metavar="FILE", help=text) for fmt, text in ALSO_WRITE.items()]
    return _apply([
        click.option("--format", "fmt", type=click.Choice(FORMATS), default="rich", show_default=True,
                     help="Format of the report on stdout (or in --output). rich: grouped findings, "
                          "plain text when piped or with NO_COLOR; concise: one line per finding (CI "
                          "logs); json: every layer (docs/json-output.md); sarif: code scanning; "
                          "markdown: a pull-request comment."),
        click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
                     help="Write the --format report to FILE instead of stdout."),
        *also,
        click.option("--statistics", is_flag=True,
                     help="Count findings by rule (rich and concise formats)."),
        click.option("--layers/--no-layers", "layers", default=None,
                     help="Show (or hide) the per-layer table and the full depth profile.  "
                          "[default: shown for models up to 40 weight tensors]"),
    ], f)


class OutputFlags:
    """The output group's values, taken out of a command's flags."""

    def __init__(self, flags: dict[str, Any]):
        self.fmt: str = flags.pop("fmt", "rich")
        self.output: Path | None = flags.pop("output", None)
        self.also: dict[str, Path] = {fmt: p for fmt in ALSO_WRITE
                                      if (p := flags.pop(f"{fmt}_file", None)) is not None}
        self.statistics: bool = flags.pop("statistics", False)
        self.layers: bool | None = flags.pop("layers", None)

    @property
    def files(self) -> list[Path]:
        return [p for p in (self.output, *self.also.values()) if p is not None]

    def view(self):
        from initaudit.reporters.rich_report import ViewOptions

        return ViewOptions(layers=self.layers, statistics=self.statistics)

    def check(self) -> None:
        if self.statistics and self.fmt not in ("rich", "concise"):
            raise click.UsageError(f"--statistics applies to --format rich or concise, not {self.fmt} "
                                   "(the JSON summary and SARIF results carry the counts)")


def _run_options(f: Callable) -> Callable:
    return _apply([
        click.option("--baseline", "baseline_file", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="Report only findings not recorded in this baseline; the report "
                                          "says how many were suppressed and how many baseline entries no "
                                          "longer occur."),
        click.option("--unsafe-pickle", is_flag=True,
                     help="UNSAFE: unpickle full objects (e.g. a torch.save(model) file). This runs code "
                          "from the file; use only on files you trust."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
        click.option("--debug", is_flag=True, help="Show the traceback of an error (still exit 2)."),
    ], f)


def _probe_values(probe: bool | None = None, inputs_file: str | None = None,
                  input_shape: tuple[str, ...] = (), batch_size: int | None = None,
                  seed: int | None = None, device: str | None = None,
                  histograms: bool | None = None) -> dict[str, Any]:
    return {"probe_enabled": probe, "probe_inputs": inputs_file,
            "probe_input_shape": list(input_shape) or None, "probe_batch_size": batch_size,
            "probe_seed": seed, "probe_device": device, "probe_histograms": histograms or None}


_PROBE_FLAG_NAMES = ("probe", "inputs_file", "input_shape", "batch_size", "seed", "device", "histograms")
_SETTINGS_FLAG_NAMES = ("select", "extend_select", "ignore", "fail_on", "stage", "rule_files", "no_plugins")


def _pop(flags: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {n: flags.pop(n) for n in names if n in flags}


def _cli_values(select: tuple[str, ...] = (), extend_select: tuple[str, ...] = (),
                ignore: tuple[str, ...] = (), fail_on: str | None = None, stage: str | None = None,
                rule_files: tuple[str, ...] = (), no_plugins: bool | None = None,
                **more: Any) -> dict[str, Any]:
    """Settings fields for the flags the user gave (flags not given are left to the config)."""
    values: dict[str, Any] = {
        "select": _split(select) or None, "extend_select": _split(extend_select) or None,
        "ignore": _split(ignore) or None, "fail_on": fail_on, "stage": stage,
        "rule_files": list(rule_files) or None, "plugins": False if no_plugins else None, **more}
    return {k: v for k, v in values.items() if v is not None}


def resolve_settings(target: str | None, config_file: Path | None, isolated: bool, cli: dict[str, Any]):
    """Defaults < config file < command-line flags (initaudit.config.resolve)."""
    from initaudit.config import resolve

    return resolve(target, config_file=config_file, isolated=isolated, cli=cli)


def _fail(message: str, debug: bool) -> None:
    """One line on stderr and exit 2; with --debug the traceback first (still exit 2)."""
    if debug and sys.exc_info()[0] is not None:
        traceback.print_exc()
    click.echo(f"initaudit: error: {message}", err=True)
    sys.exit(2)


def _guarded(target: str, debug: bool, work: Callable[[], Any]) -> Any:
    """Run ``work``; any failure becomes one exit-2 line (Ctrl-C and exits pass through)."""
    try:
        return work()
    except (KeyboardInterrupt, SystemExit, click.exceptions.Exit, click.UsageError):
        raise
    except InitAuditError as exc:
        _fail(str(exc), debug)
    except Exception as exc:  # an unexpected failure: still one line, traceback with --debug
        _fail(f"{target}: internal error: {type(exc).__name__}: {exc}"
              + ("" if debug else " (rerun with --debug for a traceback)"), debug)


# --- audit ---------------------------------------------------------------------------------------

@main.command("audit")
@click.argument("target")
@click.option("--model", "model_spec", metavar="SPEC",
              help="Architecture for a checkpoint: pkg.module:factory or path/to/file.py:factory.")
@_output_options
@_settings_options
@click.option("--write-baseline", "write_baseline", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Record every current finding in FILE (by rule, layer and kind, not "
                                   "by value) and exit 0: accept today's state, gate on new findings "
                                   "with --baseline FILE.")
@_run_options
@_probe_options
def audit_command(target: str, model_spec: str | None, **flags: Any) -> None:
    """Audit TARGET: an ONNX file, a checkpoint (.pt/.pth/.bin/.ckpt, .safetensors, a sharded
    *.safetensors.index.json) or a module factory (pkg.module:factory, path/to/file.py:factory).

    \b
    Several reports from one run: --format picks the one on stdout (or in --output FILE);
    --json FILE, --sarif FILE and --markdown FILE write more, e.g.
      initaudit ckpt.safetensors --model pkg.mod:build --sarif initaudit.sarif --markdown pr.md
    prints the rich report and writes SARIF and Markdown. Files are written whole or not at all.

    Settings come from [tool.initaudit] in pyproject.toml (see `initaudit config`); flags win.
    `initaudit explain CODE` documents a rule.
    """
    out = OutputFlags(flags)
    out.check()
    debug, quiet, write_baseline = flags.pop("debug"), flags.pop("quiet"), flags.pop("write_baseline")
    report = _guarded(target, debug, lambda: _run_audit(target, model_spec, out, quiet, write_baseline, flags))
    if write_baseline is not None:
        sys.exit(0)
    sys.exit(report.exit_code)


def _run_audit(target: str, model_spec: str | None, out: OutputFlags, quiet: bool,
               write_baseline: Path | None, flags: dict[str, Any]):
    from initaudit.engine import audit

    baseline_file, config_file = flags.pop("baseline_file"), flags.pop("config_file")
    settings = resolve_settings(target, config_file, flags.pop("isolated"), _cli_values(
        **_pop(flags, _SETTINGS_FLAG_NAMES), baseline=str(baseline_file) if baseline_file else None,
        **_probe_values(**_pop(flags, _PROBE_FLAG_NAMES))))
    outputs = out.files + ([write_baseline] if write_baseline is not None else [])
    _refuse_overwrite(outputs, _named_inputs(target, model_spec, settings, config_file))
    with ProgressBar(quiet) as progress:
        report = audit(target, model=model_spec, settings=settings, progress=progress,
                       unsafe_pickle=flags.pop("unsafe_pickle"))
    _refuse_overwrite(outputs, report.files_read)  # shards, external data, factory sources
    _emit(report, out)
    if out.fmt != "rich" or out.output is not None:  # the rich report shows them in its header
        for err in report.rule_errors:
            click.echo(f"initaudit: warning: {err}", err=True)
    for warning in report.warnings:
        click.echo(f"initaudit: warning: {warning}", err=True)
    if write_baseline is not None:
        from initaudit import baseline

        n = baseline.write(write_baseline, [*report.findings, *report.baselined])
        click.echo(f"initaudit: wrote {n} finding(s) to the baseline {write_baseline}", err=True)
    return report


def _named_inputs(target: str, model_spec: str | None, settings, config_file: Path | None) -> set[str]:
    """Files named on the command line or in the config that the audit will read."""
    named = [target, settings.probe_inputs, config_file]
    for spec in (target, model_spec):
        if spec and ":" in str(spec):
            named.append(str(spec).rpartition(":")[0])
    return {str(Path(p).resolve()) for p in named if isinstance(p, (str, Path)) and Path(p).is_file()}


def _refuse_overwrite(outputs: list[Path], inputs: set[str]) -> None:
    """initaudit never writes to the files it audits or reads."""
    for out in outputs:
        if str(out.resolve()) in inputs:
            raise TargetError(out, "refusing to overwrite a file this audit reads with a report")


def _emit(report, out: OutputFlags) -> None:
    """Every report is rendered before any file is written, then each file atomically."""
    texts = {path: render(report, fmt) for fmt, path in out.also.items()}
    if out.fmt == "rich" and out.output is None:
        from initaudit.reporters.rich_report import print_report

        print_report(stdout_console(), report, out.view())
    else:
        text = render(report, out.fmt, out.view())
        if out.output is not None:
            texts = {out.output: text, **texts}
        else:
            click.echo(text, nl=False)
    for path, text in texts.items():
        write_atomic(path, text)


# --- rules, explain, config ----------------------------------------------------------------------

def _ruleset(rule_files: tuple[str, ...], no_plugins: bool | None, config_file: Path | None,
             isolated: bool, debug: bool = False):
    """The rules a `rules`/`explain` run sees: the config's rules and plugins setting (found from
    the current folder), then the flags."""
    from initaudit.registry import discover

    try:
        settings = resolve_settings(None, config_file, isolated,
                                    _cli_values(rule_files=rule_files, no_plugins=no_plugins))
    except InitAuditError as exc:
        _fail(str(exc), debug)
    ruleset = discover(settings.rule_files, plugins=settings.plugins)
    for err in ruleset.errors:
        click.echo(f"initaudit: warning: {err}", err=True)
    return ruleset


def _rule_flags(f: Callable) -> Callable:
    return _apply([
        click.option("--rules", "rule_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
                     help="Also load rules from this Python file (repeatable)."),
        click.option("--no-plugins", is_flag=True, default=None,
                     help="Do not load rule plugins from installed packages."),
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                     help="Config file to read rules/plugins from (default: found from the current folder)."),
        click.option("--isolated", is_flag=True, help="Ignore every configuration file."),
    ], f)


@main.command("rules")
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich", show_default=True)
@_rule_flags
def rules_command(fmt: str, rule_files: tuple[str, ...], no_plugins: bool | None, config_file: Path | None,
                  isolated: bool) -> None:
    """List every rule: code, name, category, default severity, origin."""
    ruleset = _ruleset(rule_files, no_plugins, config_file, isolated)
    rows = [{"code": c.code, "name": c.name, "category": c.category, "severity": c.severity.value,
             "origin": c.origin, "summary": c.summary()} for c in ruleset.sorted()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for col in ("code", "name", "category", "severity", "origin", "summary"):
        table.add_column(col, overflow="fold" if col == "summary" else None,
                         no_wrap=col in ("code", "name"))
    for r in rows:
        table.add_row(*(r[k] for k in ("code", "name", "category", "severity", "origin", "summary")))
    stdout_console().print(table)
    click.echo("`initaudit explain CODE` prints a rule's documentation.")


@main.command("explain")
@click.argument("rule")
@_rule_flags
def explain_command(rule: str, rule_files: tuple[str, ...], no_plugins: bool | None, config_file: Path | None,
                    isolated: bool) -> None:
    """Print a rule's documentation (CODE or NAME): what it checks, why (with the formula),
    example, fix, options."""
    import difflib

    ruleset = _ruleset(rule_files, no_plugins, config_file, isolated)
    cls = ruleset.find(rule)
    if cls is None:
        words = [c.code for c in ruleset.sorted()] + [c.name for c in ruleset.sorted()]
        close = difflib.get_close_matches(rule, words, n=1, cutoff=0.5) or \
            difflib.get_close_matches(rule.upper(), words, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else "; `initaudit rules` lists them"
        click.echo(f"initaudit: error: unknown rule {rule!r}{hint}", err=True)
        sys.exit(2)
    header = f"{cls.code} {cls.name} [{cls.category}, default {cls.severity.value}, from {cls.origin}]"
    console = stdout_console()
    if console.is_terminal and console.color_system is not None:
        from rich.markdown import Markdown

        console.print(Markdown(f"# {header}\n\n{cls.doc()}"))
    else:
        click.echo(f"{header}\n\n{cls.doc()}")


@main.command("config")
@click.argument("target", required=False)
@_settings_options
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich", show_default=True)
@click.option("--debug", is_flag=True, help="Show the traceback of an error (still exit 2).")
def config_command(target: str | None, fmt: str, debug: bool, **flags: Any) -> None:
    """Print the settings an audit of TARGET would use, and where each came from (default, the
    config file, the command line). Checks the config as an audit would: exit 2 on an error.

    \b
    Configuration lives in pyproject.toml:
      [tool.initaudit]
      select = ["ALL"]            ignore = ["mean-shift"]        extend-select = []
      fail-on = "warning"         stage = "auto"                 rules = ["my_rules.py"]
      plugins = true
      [tool.initaudit.per-layer-ignores]   "head.*" = ["IA104"]
      [tool.initaudit.options.IA104]       tolerance = 2.0
      [tool.initaudit.severity]            init-scale = "error"
      [tool.initaudit.probe]               enabled = true, batch-size = 64, seed = 0, device = "cpu"
    """
    from initaudit.config import check_rule_references, describe
    from initaudit.registry import discover

    try:
        settings = resolve_settings(target, flags.pop("config_file"), flags.pop("isolated"),
                                    _cli_values(**_pop(flags, _SETTINGS_FLAG_NAMES)))
        ruleset = discover(settings.rule_files, plugins=settings.plugins)
        notes = check_rule_references(settings, ruleset)
    except InitAuditError as exc:
        _fail(str(exc), debug)
    rows = describe(settings)
    if fmt == "json":
        click.echo(json.dumps({"config_file": settings.config_path, "settings": rows,
                               "rule_errors": ruleset.errors, "notes": notes}, indent=2, default=str))
        return
    from rich.table import Table

    console = stdout_console()
    console.print(f"config file: {settings.config_path or '(none found; defaults and flags only)'}")
    table = Table(box=None, pad_edge=False)
    for col in ("key", "value", "source"):
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(row["key"], json.dumps(row["value"], default=str), row["source"])
    console.print(table)
    for line in ruleset.errors:
        console.print(f"rule error: {line}")
    for line in notes:
        console.print(f"note: {line}")


from initaudit.cli_files import files_command  # noqa: E402  (registers `initaudit files`)

main.add_command(files_command)
