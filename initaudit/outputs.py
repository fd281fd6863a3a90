"""Where reports go: text in every format, files written atomically, consoles that respect pipes
and ``NO_COLOR``, and the progress bar (bytes read, then the probe phase) on stderr."""

from __future__ import annotations

import io
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from initaudit.errors import TargetError

if TYPE_CHECKING:
    from rich.console import Console

    from initaudit.report import Report
    from initaudit.reporters.rich_report import ViewOptions

_PROGRESS_MIN_BYTES = 80_000_000  # a bar for reads that take a noticeable time


def _no_color() -> bool:
    return bool(os.environ.get("NO_COLOR"))  # https://no-color.org: set and not empty


def stdout_console(width: int | None = None) -> Console:
    """Colour on a terminal; plain text (no colour, no bold) when piped or with NO_COLOR."""
    from rich.console import Console

    console = Console(highlight=False, width=width)
    if not console.is_terminal or _no_color():
        console = Console(highlight=False, width=width or (console.width if console.is_terminal else
                                                           int(os.environ.get("COLUMNS", "120"))),
                          color_system=None, force_terminal=False, no_color=True)
    return console


def stderr_console() -> Console:
    from rich.console import Console

    if _no_color():
        return Console(stderr=True, highlight=False, color_system=None, no_color=True)
    return Console(stderr=True, highlight=False)


# --- rendering ---------------------------------------------------------------------------------

def _rich_text(report: Report, view: ViewOptions | None, width: int = 120, color: bool = False) -> str:
    from rich.console import Console

    from initaudit.reporters.rich_report import print_report

    buffer = io.StringIO()
    console = Console(file=buffer, width=width, color_system="truecolor" if color else None,
                      force_terminal=color, highlight=False)
    print_report(console, report, view)
    return buffer.getvalue()


def _concise(report: Report, view: ViewOptions | None) -> str:
    from initaudit.reporters import concise

    return concise.render(report, statistics=bool(view and view.statistics))


def _json(report: Report, view: ViewOptions | None) -> str:
    return report.to_json_str() + "\n"


def _sarif(report: Report, view: ViewOptions | None) -> str:
    from initaudit.reporters import sarif

    return sarif.dumps(report)


def _markdown(report: Report, view: ViewOptions | None) -> str:
    from initaudit.reporters import markdown

    return markdown.render(report)


def _html(report: Report, view: ViewOptions | None) -> str:
    from initaudit.reporters import html

    return html.render(report)


#: --format name -> renderer(report, view) -> text. A new format adds one entry (and, for
#: --FORMAT FILE, one entry in ALSO_WRITE).
RENDERERS: dict[str, Callable[[Report, ViewOptions | None], str]] = {
    "rich": _rich_text, "concise": _concise, "json": _json, "sarif": _sarif, "markdown": _markdown,
    "html": _html}
FORMATS = tuple(RENDERERS)
#: Formats that can be written beside the main report (--json FILE, ...): format -> help text.
ALSO_WRITE: dict[str, str] = {
    "json": "Also write the JSON report to FILE.",
    "sarif": "Also write a SARIF 2.1.0 log to FILE (for github/codeql-action/upload-sarif).",
    "markdown": "Also write the Markdown report to FILE (a PR comment, or $GITHUB_STEP_SUMMARY).",
    "html": "Also write a self-contained HTML report to FILE (charts and histograms, no network; "
            "turns on --histograms).",
}


def render(report: Report, fmt: str, view: ViewOptions | None = None) -> str:
    """The report as text in one of FORMATS (rich: plain text, 120 columns)."""
    return RENDERERS[fmt](report, view)


# --- writing -----------------------------------------------------------------------------------

def write_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all: a temporary file in the same folder, then
    ``os.replace``, so an interrupted run (Ctrl-C, a kill) never leaves a half-written report.
    Special files (a pipe, /dev/stdout) are written directly."""
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise TargetError(path, f"cannot write the report: {exc.strerror or exc}") from exc
    if mode is not None and not stat.S_ISREG(mode):
        try:
            with path.open("w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            raise TargetError(path, f"cannot write the report: {exc.strerror or exc}") from exc
        return
    folder = path.parent if str(path.parent) else Path(".")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, stat.S_IMODE(mode))  # an existing report keeps its permissions
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # as open() would have created it
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise TargetError(path, f"cannot write the report: {exc.strerror or exc}") from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


# --- progress ----------------------------------------------------------------------------------

class ProgressBar:
    """A transient bar on stderr (terminals only): bytes read, in the file's units (MB/GB), then
    the probe phase with a spinner, so a long forward/backward pass does not look stuck at 100%."""

    def __init__(self, quiet: bool, console: Console | None = None):
        self.enabled = not quiet and (console is not None or sys.stderr.isatty())
        self.console = console
        self.bar: Any = None
        self.task: Any = None

    def __enter__(self) -> ProgressBar | None:
        return self if self.enabled else None

    def _start(self, total: int | None) -> None:
        from rich.progress import (BarColumn, DownloadColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn)

        self.bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                            DownloadColumn(binary_units=False), TimeElapsedColumn(),
                            console=self.console or stderr_console(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task("reading tensors", total=total)

    def __call__(self, done: int, total: int) -> None:
        if total < _PROGRESS_MIN_BYTES:
            return
        if self.bar is None:
            self._start(total)
        self.bar.update(self.task, completed=done)

    def phase(self, name: str) -> None:
        """A new phase without a known size (the probe): the bar turns into a spinner."""
        if self.bar is None:
            return  # a small model: no bar was worth showing, and the probe is quick
        text = {"probe": "probe: forward and backward pass"}.get(name, name)
        self.bar.update(self.task, description=text, total=None, completed=0)

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.stop()
