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
from initaudit.cli_options import (PROBE_FLAG_NAMES, SETTINGS_FLAG_NAMES, OutputFlags, apply_options,
                                   cli_values, output_options, pop_flags, probe_options, probe_values,
                                   run_options, settings_options, resolve_settings, TRUST_OPTION)
from initaudit.errors import InitAuditError, TargetError
from initaudit.outputs import ProgressBar, render, stdout_console, write_atomic
from initaudit.stdio import stdout_to_stderr

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell and Python report it


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
@output_options
@settings_options
@click.option("--write-baseline", "write_baseline", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Record every current finding in FILE (by rule, layer and kind, not "
                                   "by value) and exit 0: accept today's state, gate on new findings "
                                   "with --baseline FILE.")
@run_options
@probe_options
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
    if "html" in out.also or out.fmt == "html":  # the page draws the histograms
        flags["histograms"] = True
    settings = resolve_settings(target, config_file, flags.pop("isolated"), cli_values(
        **pop_flags(flags, SETTINGS_FLAG_NAMES), baseline=str(baseline_file) if baseline_file else None,
        **probe_values(**pop_flags(flags, PROBE_FLAG_NAMES))))
    outputs = out.files + ([write_baseline] if write_baseline is not None else [])
    _refuse_overwrite(outputs, _named_inputs(target, model_spec, settings, config_file))
    with ProgressBar(quiet) as progress, stdout_to_stderr():
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
                                    cli_values(rule_files=rule_files, no_plugins=no_plugins))
    except InitAuditError as exc:
        _fail(str(exc), debug)
    ruleset = discover(settings.rule_files, plugins=settings.plugins)
    for err in ruleset.errors:
        click.echo(f"initaudit: warning: {err}", err=True)
    return ruleset


def _rule_flags(f: Callable) -> Callable:
    return apply_options([
        TRUST_OPTION,
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

    console = stdout_console()
    columns = ["code", "name", "category", "severity", "origin", "summary"]
    if console.width < 120:  # keep the summary readable: category and origin are in --format json
        columns = ["code", "name", "severity", "summary"]
    table = Table(box=None, pad_edge=False)
    for col in columns:
        table.add_column(col, no_wrap=col != "summary", ratio=1 if col == "summary" else None)
    for r in rows:
        table.add_row(*(r[k] for k in columns))
    console.print(table)
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
@settings_options
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
                                    cli_values(**pop_flags(flags, SETTINGS_FLAG_NAMES)))
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


from initaudit.cli_files import files_command  # noqa: E402

main.add_command(files_command)
