"""Command line: a thin layer over :func:`initaudit.audit`.

Exit codes (DESIGN.md section 2): 0 no finding at or above --fail-on, 1 at least one,
2 could not run (one line on stderr naming the file and the cause; a traceback only with --debug).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markdown import Markdown
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from initaudit import __version__
from initaudit.errors import InitAuditError, TargetError
from initaudit.report import FAIL_ON, Report

FORMATS = ("rich", "json")
_PROGRESS_MIN_ELEMENTS = 20_000_000  # show a bar for reads that take a noticeable time


def _split(values: tuple[str, ...]) -> list[str]:
    """--select A,B --select C -> [A, B, C]"""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def stdout_console() -> Console:
    """Colour on a terminal; plain text when piped or with NO_COLOR (rich honours NO_COLOR)."""
    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=int(os.environ.get("COLUMNS", "120")),
                          no_color=True, force_terminal=False)
    return console


def stderr_console() -> Console:
    return Console(stderr=True, highlight=False)


class DefaultGroup(click.Group):
    """``initaudit TARGET`` means ``initaudit audit TARGET``; subcommands stay reachable."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["audit", *args]
        return super().parse_args(ctx, args)


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
    initaudit rules                              list every rule
    initaudit explain IA104                      what a rule checks, why, and how to fix it

    Exit codes: 0 clean (nothing at or above --fail-on), 1 findings, 2 could not run.
    """


@main.command("audit")
@click.argument("target")
@click.option("--model", "model_spec", metavar="SPEC",
              help="Architecture for a checkpoint: pkg.module:factory or path/to/file.py:factory.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="rich", show_default=True,
              help="Report format. rich is plain text when piped or with NO_COLOR.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the report to FILE instead of stdout.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="error", show_default=True,
              help="Exit 1 when a finding is at or above this severity.")
@click.option("--stage", type=click.Choice(["auto", "init", "trained"]), default="auto", show_default=True,
              help="init: fresh weights; trained: skip init-scale rules. auto decides from evidence "
                   "(optimizer state, step counters, updated BatchNorm statistics), never from "
                   "'matches no scheme'.")
@click.option("--select", multiple=True, metavar="RULES",
              help="Only these rules: codes, code prefixes (IA1), names or categories; comma-separated.")
@click.option("--extend-select", multiple=True, metavar="RULES", help="Add to the selection.")
@click.option("--ignore", multiple=True, metavar="RULES", help="Skip these rules (same forms as --select).")
@click.option("--rules", "rule_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Load extra rules from a Python file (repeatable).")
@click.option("--no-plugins", is_flag=True, help="Do not load rule plugins from installed packages.")
@click.option("--unsafe-pickle", is_flag=True,
              help="UNSAFE: unpickle full objects (e.g. a torch.save(model) file). This runs code "
                   "from the file; use only on files you trust.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def audit_command(target: str, model_spec: str | None, fmt: str, output: Path | None, fail_on: str,
                  stage: str, select: tuple[str, ...], extend_select: tuple[str, ...],
                  ignore: tuple[str, ...], rule_files: tuple[str, ...], no_plugins: bool,
                  unsafe_pickle: bool, quiet: bool, debug: bool) -> None:
    """Audit TARGET: an ONNX file, a checkpoint (.pt/.pth/.bin/.ckpt, .safetensors, a sharded
    *.safetensors.index.json) or a module factory (pkg.module:factory, path/to/file.py:factory)."""
    from initaudit.engine import Settings, audit

    settings = Settings(select=_split(select) or ["ALL"], extend_select=_split(extend_select),
                        ignore=_split(ignore), fail_on=fail_on, stage=stage,
                        rule_files=list(rule_files), plugins=not no_plugins)
    try:
        _refuse_overwrite(target, output)
        with _progress(quiet) as progress:
            report = audit(target, model=model_spec, settings=settings, progress=progress,
                           unsafe_pickle=unsafe_pickle)
        _emit(report, fmt, output)
    except InitAuditError as exc:
        _fail(str(exc), debug)
    except (KeyboardInterrupt, click.exceptions.Exit):
        raise
    except Exception as exc:  # an unexpected failure: still one line, traceback with --debug
        _fail(f"{target}: internal error: {type(exc).__name__}: {exc} (rerun with --debug for a traceback)",
              debug)
    sys.exit(report.exit_code)


def _fail(message: str, debug: bool) -> None:
    if debug:
        raise
    click.echo(f"initaudit: error: {message}", err=True)
    sys.exit(2)


def _refuse_overwrite(target: str, output: Path | None) -> None:
    """initaudit never writes to the files it audits."""
    if output is not None and Path(target).exists() and output.resolve() == Path(target).resolve():
        raise TargetError(output, "--output would overwrite the audited file")


class _progress:
    """A transient progress bar on stderr for long reads (only on a terminal)."""

    def __init__(self, quiet: bool):
        self.enabled = not quiet and sys.stderr.isatty()
        self.bar: Progress | None = None
        self.task = None

    def __enter__(self):
        if not self.enabled:
            return None
        self.bar = Progress(TextColumn("reading tensors"), BarColumn(), DownloadColumn(binary_units=False),
                            TimeRemainingColumn(), console=stderr_console(), transient=True)
        return self.update

    def update(self, done: int, total: int) -> None:
        if total < _PROGRESS_MIN_ELEMENTS:
            return
        if self.task is None:
            self.bar.start()
            self.task = self.bar.add_task("read", total=total)
        self.bar.update(self.task, completed=done)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None and self.task is not None:
            self.bar.stop()


def _emit(report: Report, fmt: str, output: Path | None) -> None:
    if fmt == "json":
        text = report.to_json_str() + "\n"
        if output:
            output.write_text(text)
        else:
            click.echo(text, nl=False)
        return
    if output:
        with output.open("w") as fh:
            Console(file=fh, width=120, no_color=True, highlight=False).print(report)
    else:
        stdout_console().print(report)


@main.command("rules")
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich", show_default=True)
@click.option("--rules", "rule_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also load rules from this Python file.")
@click.option("--no-plugins", is_flag=True, help="Do not load rule plugins from installed packages.")
def rules_command(fmt: str, rule_files: tuple[str, ...], no_plugins: bool) -> None:
    """List every rule: code, name, category, default severity, origin."""
    from initaudit.registry import discover

    ruleset = discover(list(rule_files), plugins=not no_plugins)
    for err in ruleset.errors:
        click.echo(f"initaudit: warning: {err}", err=True)
    rows = [{"code": c.code, "name": c.name, "category": c.category, "severity": c.severity.value,
             "origin": c.origin, "summary": c.summary()} for c in ruleset.sorted()]
    if fmt == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(box=None, pad_edge=False)
    for col in ("code", "name", "category", "severity", "origin", "summary"):
        table.add_column(col, overflow="fold" if col == "summary" else None)
    for r in rows:
        table.add_row(*(r[k] for k in ("code", "name", "category", "severity", "origin", "summary")))
    stdout_console().print(table)


@main.command("explain")
@click.argument("rule")
@click.option("--rules", "rule_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="Also load rules from this Python file.")
def explain_command(rule: str, rule_files: tuple[str, ...]) -> None:
    """Print a rule's documentation: what it checks, why (with the formula), example, fix."""
    from initaudit.registry import discover

    ruleset = discover(list(rule_files))
    cls = ruleset.find(rule)
    if cls is None:
        click.echo(f"initaudit: error: unknown rule {rule!r}; `initaudit rules` lists them", err=True)
        sys.exit(2)
    header = f"{cls.code} {cls.name} [{cls.category}, default {cls.severity.value}]"
    console = stdout_console()
    if console.is_terminal:
        console.print(Markdown(f"# {header}\n\n{cls.doc()}"))
    else:
        click.echo(f"{header}\n\n{cls.doc()}")
