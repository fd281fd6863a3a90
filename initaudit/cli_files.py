"""``initaudit files``: several model files in one run, as pre-commit passes them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from initaudit.stdio import stdout_to_stderr

from initaudit.cli_options import apply_options, cli_values, settings_options, resolve_settings
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
@_options
def files_command(paths: tuple[str, ...], fmt: str, sarif_file: Path | None, baseline_file: Path | None,
                  unsafe_pickle: bool, debug: bool, probe: bool | None, config_file: Path | None,
                  isolated: bool, **flags: Any) -> None:
    """Audit several model files, as pre-commit passes them: one verdict line per file with its
    findings grouped by rule and cause. Exit 2 if any file could not be audited, else 1 if any
    failed, else 0. Every file is audited even after one fails."""
    import traceback

    from initaudit.engine import audit
    from initaudit.outputs import write_atomic

    worst, reports = 0, []
    for path in paths:
        try:
            settings = resolve_settings(path, config_file, isolated, cli_values(
                **flags, probe_enabled=probe, baseline=str(baseline_file) if baseline_file else None))
            with stdout_to_stderr():
                report = audit(path, settings=settings, unsafe_pickle=unsafe_pickle)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            if debug:
                traceback.print_exc()
            text = str(exc) if isinstance(exc, InitAuditError) else \
                f"{path}: internal error: {type(exc).__name__}: {exc}"
            click.echo(f"initaudit: error: {text}", err=True)
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
