"""The command line's option groups, one decorator each (settings, probe, output, run), shared by
``initaudit audit``, ``files`` and ``config``. A new option joins its group here, and the
command reads it from its ``flags``."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from initaudit.outputs import ALSO_WRITE, FORMATS

FAIL_ON = ("error", "warning", "info", "never")  # initaudit.report.FAIL_ON (kept import-free)


def _split(values: tuple[str, ...]) -> list[str]:
    """--select A,B --select C -> [A, B, C]"""
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def apply_options(options: list[Callable], f: Callable) -> Callable:
    for option in reversed(options):
        f = option(f)
    return f


def _remember_trust(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value:
        ctx.meta["initaudit.trust_config_rules"] = True
    return value


TRUST_OPTION = click.option(
    "--trust-config-rules", is_flag=True, expose_value=False, callback=_remember_trust,
    help="Load the rule files (Python code) a config found next to the target names. By default "
         "only the current project's config (or --config FILE) may name rule files, so a "
         "pyproject.toml that came with a downloaded model never runs code.")


def settings_options(f: Callable) -> Callable:
    """Flags that set Settings, shared by `audit`, `files` and `config`."""
    return apply_options([
        TRUST_OPTION,
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


def probe_options(f: Callable) -> Callable:
    """The forward/backward probe's flags (initaudit.probe). Given on the command line they are
    requests: a probe that cannot honour one stops the run (exit 2) rather than skip silently."""
    return apply_options([
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


def output_options(f: Callable) -> Callable:
    """What the report looks like and where it goes (see :class:`OutputFlags`)."""
    also = [click.option(f"--{fmt}", f"{fmt}_file", type=click.Path(dir_okay=False, path_type=Path),
                         metavar="FILE", help=text) for fmt, text in ALSO_WRITE.items()]
    return apply_options([
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


def run_options(f: Callable) -> Callable:
    return apply_options([
        click.option("--baseline", "baseline_file", type=click.Path(dir_okay=False, path_type=Path),
                     metavar="FILE", help="Report only findings not recorded in this baseline; the report "
                                          "says how many were suppressed and how many baseline entries no "
                                          "longer occur."),
        click.option("--unsafe-pickle", is_flag=True,
                     help="UNSAFE: unpickle full objects (e.g. a torch.save(model) file), whose module is "
                          "then audited as the architecture. This runs code from the file (the report "
                          "says so); use only on files you trust."),
        click.option("--quiet", "-q", is_flag=True, help="No progress bar."),
        click.option("--debug", is_flag=True, help="Show the traceback of an error (still exit 2)."),
    ], f)


def probe_values(probe: bool | None = None, inputs_file: str | None = None,
                  input_shape: tuple[str, ...] = (), batch_size: int | None = None,
                  seed: int | None = None, device: str | None = None,
                  histograms: bool | None = None) -> dict[str, Any]:
    return {"probe_enabled": probe, "probe_inputs": inputs_file,
            "probe_input_shape": list(input_shape) or None, "probe_batch_size": batch_size,
            "probe_seed": seed, "probe_device": device, "probe_histograms": histograms or None}


PROBE_FLAG_NAMES = ("probe", "inputs_file", "input_shape", "batch_size", "seed", "device", "histograms")
SETTINGS_FLAG_NAMES = ("select", "extend_select", "ignore", "fail_on", "stage", "rule_files", "no_plugins")


def pop_flags(flags: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {n: flags.pop(n) for n in names if n in flags}


def cli_values(select: tuple[str, ...] = (), extend_select: tuple[str, ...] = (),
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

    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get("initaudit.trust_config_rules"):
        cli = {**cli, "trust_config_rules": True}
    return resolve(target, config_file=config_file, isolated=isolated, cli=cli)


