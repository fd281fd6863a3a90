"""Command line: a thin layer over :func:`initaudit.audit`.

Exit codes (DESIGN.md section 2): 0 no finding at or above --fail-on, 1 at least one,
2 could not run (one line on stderr naming the file and the cause; a traceback only with --debug).
"""

from __future__ import annotations

import io
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

FORMATS = ("rich", "json", "sarif", "markdown", "html")
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


def _settings_options(f):
    """Flags that set Settings, shared by `audit`, `files` and `config`."""
    options = [
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
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _probe_options(f):
    """The forward/backward probe's flags (initaudit.probe)."""
    options = [
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
                          "as a copy.  [default: the "
                          "model's own device]"),
        click.option("--histograms", is_flag=True, default=None,
                     help="Draw per-layer activation histograms in the terminal report."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _probe_values(probe: bool | None = None, inputs_file: str | None = None,
                  input_shape: tuple[str, ...] = (), batch_size: int | None = None,
                  seed: int | None = None, device: str | None = None,
                  histograms: bool | None = None) -> dict[str, Any]:
    return {"probe_enabled": probe, "probe_inputs": inputs_file,
            "probe_input_shape": list(input_shape) or None, "probe_batch_size": batch_size,
            "probe_seed": seed, "probe_device": device, "probe_histograms": histograms or None}


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


@main.command("audit")
@click.argument("target")
@click.option("--model", "model_spec", metavar="SPEC",
              help="Architecture for a checkpoint: pkg.module:factory or path/to/file.py:factory.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="rich", show_default=True,
              help="Format of the report on stdout (or in --output). rich is plain text when piped or "
                   "with NO_COLOR; markdown suits a pull-request comment; sarif suits code scanning; "
                   "html is a self-contained page with charts (turns on --histograms).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the --format report to FILE instead of stdout.")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the JSON report to FILE.")
@click.option("--sarif", "sarif_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write a SARIF 2.1.0 log to FILE (for github/codeql-action/upload-sarif).")
@click.option("--markdown", "markdown_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write the Markdown report to FILE (a PR comment, or $GITHUB_STEP_SUMMARY).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write a self-contained HTML report to FILE (charts and histograms, no network; "
                   "turns on --histograms).")
@_settings_options
@click.option("--baseline", "baseline_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Report only findings not recorded in this baseline; the report says how many were "
                   "suppressed and how many baseline entries no longer occur.")
@click.option("--write-baseline", "write_baseline", type=click.Path(dir_okay=False, path_type=Path),
              metavar="FILE", help="Record every current finding in FILE (by rule, layer and kind, not "
                                   "by value) and exit 0: accept today's state, gate on new findings "
                                   "with --baseline FILE.")
@click.option("--unsafe-pickle", is_flag=True,
              help="UNSAFE: unpickle full objects (e.g. a torch.save(model) file). This runs code "
                   "from the file; use only on files you trust.")
@_probe_options
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def audit_command(target: str, model_spec: str | None, fmt: str, output: Path | None,
                  json_file: Path | None, sarif_file: Path | None, markdown_file: Path | None,
                  html_file: Path | None, config_file: Path | None, isolated: bool, fail_on: str | None, stage: str | None,
                  select: tuple[str, ...], extend_select: tuple[str, ...], ignore: tuple[str, ...],
                  rule_files: tuple[str, ...], no_plugins: bool | None, baseline_file: Path | None,
                  write_baseline: Path | None, unsafe_pickle: bool, quiet: bool, debug: bool,
                  **probe_flags: Any) -> None:
    """Audit TARGET: an ONNX file, a checkpoint (.pt/.pth/.bin/.ckpt, .safetensors, a sharded
    *.safetensors.index.json) or a module factory (pkg.module:factory, path/to/file.py:factory).

    \b
    Several reports from one run: --format picks the one on stdout (or in --output FILE);
    --json FILE, --sarif FILE, --markdown FILE and --html FILE write more, e.g.
      initaudit ckpt.safetensors --model pkg.mod:build --sarif initaudit.sarif --markdown pr.md
    prints the rich report and writes SARIF and Markdown.

    Settings come from [tool.initaudit] in pyproject.toml (see `initaudit config`); flags win.
    """
    from initaudit.engine import audit

    extra = {"json": json_file, "sarif": sarif_file, "markdown": markdown_file, "html": html_file}
    if html_file is not None or fmt == "html":  # the page draws the histograms
        probe_flags["histograms"] = True
    try:
        settings = resolve_settings(target, config_file, isolated, _cli_values(
            select, extend_select, ignore, fail_on, stage, rule_files, no_plugins,
            baseline=str(baseline_file) if baseline_file else None, **_probe_values(**probe_flags)))
        outputs = [p for p in (output, *extra.values(), write_baseline) if p is not None]
        _refuse_overwrite(outputs, _named_inputs(target, model_spec, settings, config_file))
        with _progress(quiet) as progress:
            report = audit(target, model=model_spec, settings=settings, progress=progress,
                           unsafe_pickle=unsafe_pickle)
        _refuse_overwrite(outputs, report.files_read)  # shards, external data, factory sources
        _emit(report, fmt, output)
        for extra_fmt, path in extra.items():
            if path is not None:
                _write(path, render(report, extra_fmt, color=False))
        if fmt != "rich" or output is not None:  # the rich report shows them in its header
            for err in report.rule_errors:
                click.echo(f"initaudit: warning: {err}", err=True)
        if write_baseline is not None:
            from initaudit import baseline

            n = baseline.write(write_baseline, [*report.findings, *report.baselined])
            click.echo(f"initaudit: wrote {n} finding(s) to the baseline {write_baseline}", err=True)
            sys.exit(0)
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


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise TargetError(path, f"cannot write the report: {exc.strerror or exc}") from exc


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


def render(report: Report, fmt: str, color: bool = False) -> str:
    """The report as text in one of FORMATS (rich: plain text, 120 columns)."""
    if fmt == "json":
        return report.to_json_str() + "\n"
    if fmt == "sarif":
        from initaudit.reporters import sarif

        return sarif.dumps(report)
    if fmt == "markdown":
        from initaudit.reporters import markdown

        return markdown.render(report)
    if fmt == "html":
        from initaudit.reporters import html

        return html.render(report)
    buffer = io.StringIO()
    Console(file=buffer, width=120, no_color=not color, highlight=False).print(report)
    return buffer.getvalue()


def _emit(report: Report, fmt: str, output: Path | None) -> None:
    if fmt == "rich" and output is None:
        stdout_console().print(report)
        return
    text = render(report, fmt)
    if output:
        _write(output, text)
    else:
        click.echo(text, nl=False)


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


_CONFIG_FLAGS = [
    click.option("--rules", "rule_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
                 help="Also load rules from this Python file (repeatable)."),
    click.option("--no-plugins", is_flag=True, default=None,
                 help="Do not load rule plugins from installed packages."),
    click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
                 help="Config file to read rules/plugins from (default: found from the current folder)."),
    click.option("--isolated", is_flag=True, help="Ignore every configuration file."),
]


def _rule_flags(f):
    for option in reversed(_CONFIG_FLAGS):
        f = option(f)
    return f


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
    table = Table(box=None, pad_edge=False)
    for col in ("code", "name", "category", "severity", "origin", "summary"):
        table.add_column(col, overflow="fold" if col == "summary" else None)
    for r in rows:
        table.add_row(*(r[k] for k in ("code", "name", "category", "severity", "origin", "summary")))
    stdout_console().print(table)


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
    if console.is_terminal:
        console.print(Markdown(f"# {header}\n\n{cls.doc()}"))
    else:
        click.echo(f"{header}\n\n{cls.doc()}")


@main.command("config")
@click.argument("target", required=False)
@_settings_options
@click.option("--format", "fmt", type=click.Choice(["rich", "json"]), default="rich", show_default=True)
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def config_command(target: str | None, config_file: Path | None, isolated: bool, fail_on: str | None,
                   stage: str | None, select: tuple[str, ...], extend_select: tuple[str, ...],
                   ignore: tuple[str, ...], rule_files: tuple[str, ...], no_plugins: bool | None,
                   fmt: str, debug: bool) -> None:
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
        settings = resolve_settings(target, config_file, isolated, _cli_values(
            select, extend_select, ignore, fail_on, stage, rule_files, no_plugins))
        ruleset = discover(settings.rule_files, plugins=settings.plugins)
        notes = check_rule_references(settings, ruleset)
    except InitAuditError as exc:
        _fail(str(exc), debug)
    rows = describe(settings)
    if fmt == "json":
        click.echo(json.dumps({"config_file": settings.config_path, "settings": rows,
                               "rule_errors": ruleset.errors, "notes": notes}, indent=2, default=str))
        return
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


@main.command("files")
@click.argument("paths", nargs=-1, required=True)
@_settings_options
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def files_command(paths: tuple[str, ...], config_file: Path | None, isolated: bool, fail_on: str | None,
                  stage: str | None, select: tuple[str, ...], extend_select: tuple[str, ...],
                  ignore: tuple[str, ...], rule_files: tuple[str, ...], no_plugins: bool | None,
                  debug: bool) -> None:
    """Audit several model files, as pre-commit passes them: one verdict line per file with its
    findings. Exit 2 if any file could not be audited, else 1 if any failed, else 0."""
    from initaudit.engine import audit

    worst = 0
    for path in paths:
        try:
            settings = resolve_settings(path, config_file, isolated, _cli_values(
                select, extend_select, ignore, fail_on, stage, rule_files, no_plugins))
            report = audit(path, settings=settings)
        except InitAuditError as exc:
            if debug:
                raise
            click.echo(f"initaudit: error: {exc}", err=True)
            worst = 2
            continue
        except Exception as exc:
            if debug:
                raise
            click.echo(f"initaudit: error: {path}: internal error: {type(exc).__name__}: {exc}", err=True)
            worst = 2
            continue
        s = report.summary()
        verdict = "FAIL" if report.failed else "ok"
        click.echo(f"{path}: {verdict} ({s['errors']} error(s), {s['warnings']} warning(s), {s['infos']} info; "
                   f"fail-on {report.fail_on})")
        for f in report.findings:
            click.echo(f"  {f.severity.value:<7} {f.rule} {f.layer}: {f.message}")
        for err in report.rule_errors:
            click.echo(f"  rule error: {err}", err=True)
        worst = max(worst, report.exit_code)
    sys.exit(worst)
