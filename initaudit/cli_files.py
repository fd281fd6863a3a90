"""``initaudit files``: several model files in one run, as pre-commit passes them."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from initaudit.stdio import stdout_to_stderr

from initaudit.cli_options import apply_options, cli_values, settings_options
from initaudit.errors import InitAuditError


def _options(f):
    f = settings_options(f)
    return apply_options([
        click.option("--probe/--no-probe", "probe", default=None,
                     help="Run the forward probe where a file holds an architecture (ONNX). --no-probe "
                          "keeps a hook fast: the static checks only.  [default: the config's, else on]"),
        click.option("--format", "fmt", type=click.Choice(["text", "concise", "json"]), default="text",
                     show_default=True,
                     help="text: a verdict line per file and its findings grouped by rule and cause; "
                          "concise: one line per finding; json: {\"files\": [report, ...]} with every layer."),
        click.option("--sarif", "sarif_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
                     help="Also write one SARIF 2.1.0 log of every file's findings to FILE."),
        click.option("--baseline", "baseline_file", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="Report only findings not recorded in this baseline (applied "
                                          "to each file; entries match by rule, layer and kind)."),
        click.option("--unsafe-pickle", is_flag=True,
                     help="UNSAFE: unpickle full objects (torch.save(model) files). This runs code from "
                          "the files; use only on files you trust."),
        click.option("--debug", is_flag=True, help="Show the traceback of an error (still exit 2)."),
    ], f)


@click.command("files")
@click.argument("paths", nargs=-1, required=True)
@click.option("--jobs", "-j", type=click.IntRange(min=0), default=1, show_default=True, metavar="N",
              help="Audit N files at once, each in its own process (0: one per core). Reports are "
                   "printed in the order the files were given; each file's audit then runs on one core.")
@_options
def files_command(paths: tuple[str, ...], fmt: str, sarif_file: Path | None, baseline_file: Path | None,
                  unsafe_pickle: bool, debug: bool, probe: bool | None, config_file: Path | None,
                  isolated: bool, jobs: int, **flags: Any) -> None:
    """Audit several model files, as pre-commit passes them: one verdict line per file with its
    findings grouped by rule and cause. Exit 2 if any file could not be audited, else 1 if any
    failed, else 0. Every file is audited even after one fails."""
    from initaudit.outputs import write_atomic

    cli = cli_values(**flags, probe_enabled=probe, baseline=str(baseline_file) if baseline_file else None)
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get("initaudit.trust_config_rules"):
        cli["trust_config_rules"] = True
    job = _Job(config_file, isolated, cli, unsafe_pickle, debug)
    worst, reports = 0, []
    for path, (report, error) in zip(paths, _run_all(job, paths, jobs)):
        if report is None:
            click.echo(f"initaudit: error: {error}", err=True)
            worst = 2
            continue
        reports.append(report)
        worst = max(worst, report.exit_code)
        if fmt == "text":
            _text(path, report)
        elif fmt == "concise":
            from initaudit.reporters.concise import finding_lines

            for line in finding_lines(report):
                click.echo(line)
        for err in [*report.rule_errors, *report.warnings]:
            click.echo(f"initaudit: warning: {path}: {err}", err=True)
    if fmt == "json":
        from initaudit.report import _jsonable, clean_json

        doc = {"files": [clean_json(r.to_json()) for r in reports]}
        click.echo(json.dumps(doc, indent=2, allow_nan=False, default=_jsonable))
    if sarif_file is not None:
        from initaudit.reporters import sarif

        try:
            write_atomic(sarif_file, sarif.dumps(reports))
        except InitAuditError as exc:
            click.echo(f"initaudit: error: {exc}", err=True)
            worst = 2
    sys.exit(worst)


@dataclass(frozen=True)
class _Job:
    """What auditing one file needs besides its path (plain data: it travels to a worker)."""

    config_file: Path | None
    isolated: bool
    cli: dict[str, Any]
    unsafe_pickle: bool
    debug: bool

    def __call__(self, path: str) -> tuple[Any, str | None]:
        """(report, None), or (None, the error line) when the file could not be audited."""
        import traceback

        from initaudit.config import resolve
        from initaudit.engine import audit

        try:
            settings = resolve(path, config_file=self.config_file, isolated=self.isolated, cli=self.cli)
            with stdout_to_stderr():
                return audit(path, settings=settings, unsafe_pickle=self.unsafe_pickle), None
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if self.debug:
                traceback.print_exc()
            return None, str(exc) if isinstance(exc, InitAuditError) else \
                f"{path}: internal error: {type(exc).__name__}: {exc}"


def _serial_worker() -> None:
    """The files run in parallel, one per core: each audit stays on its own."""
    from initaudit import pool

    pool.start_single_core_worker()


def _run_all(job: _Job, paths: tuple[str, ...], jobs: int) -> Iterator[tuple[Any, str | None]]:
    """Each path's (report, error), in the given order; ``jobs`` > 1 audits that many at once in
    worker processes (the reports come back as initaudit's own objects, in order)."""
    from initaudit import pool

    workers = min(len(paths), jobs or pool.available_cores())
    if workers <= 1:
        yield from map(job, paths)
        return
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=workers, mp_context=pool.pool_context(),
                             initializer=_serial_worker) as executor:
        futures = [executor.submit(job, path) for path in paths]
        for path, future in zip(paths, futures):
            try:
                yield future.result()
            except Exception as exc:  # the worker died or its report could not be sent back
                yield None, f"{path}: internal error: {type(exc).__name__}: {exc}"


def _text(path: str, report: Any) -> None:
    from initaudit.reporters.grouping import group_findings

    s = report.summary()
    verdict = "FAIL" if report.failed else "ok"
    click.echo(f"{path}: {verdict} ({s['errors']} error(s), {s['warnings']} warning(s), {s['infos']} info; "
               f"fail-on {report.fail_on})")
    for g in group_findings(report.findings):
        count = f" ×{len(g.findings)}" if len(g.findings) > 1 else ""
        click.echo(f"  {g.severity.value:<7} {g.rule}{count} {g.layer_list()}: {g.message()}")
    if report.baseline:
        click.echo(f"  ({report.baseline['suppressed']} finding(s) suppressed by the baseline)")
