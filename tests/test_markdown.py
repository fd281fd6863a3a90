"""Markdown output (a pull-request comment): golden files, escaping, size bounds, CLI.

Regenerate the golden files after an intended change with
``INITAUDIT_UPDATE_GOLDEN=1 python -m pytest tests/test_markdown.py`` and review the diff.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import initaudit
from initaudit import baseline
from initaudit.cli import main
from initaudit.report import Report
from initaudit.reporters.markdown import MAX_CHARS, MAX_FINDINGS, render
from initaudit.rule import Finding, Rule, Severity

TESTS = Path(__file__).resolve().parent
GOLDEN = TESTS / "golden"
DATA = TESTS / "data"
sys.path.insert(0, str(DATA))
import ci_models  # noqa: E402

sys.path.remove(str(DATA))


# The golden reports cover the static rules only, so that rules added later leave them unchanged.
STATIC = {"plugins": False, "select": ["IA1"], "probe_enabled": False}


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("INITAUDIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with INITAUDIT_UPDATE_GOLDEN=1"
    assert text == path.read_text(), f"Markdown differs from {path} (INITAUDIT_UPDATE_GOLDEN=1 to accept)"


def test_golden_failing_report():
    text = render(initaudit.audit(ci_models.broken(), **STATIC))
    check_golden("markdown_broken.md", text)
    assert text.startswith("<!-- initaudit-report -->\n## ❌ initaudit: FAIL\n")
    assert "**1 error · 1 warning · 0 info** (fail-on `error`)" in text
    assert text.count("<details>") == text.count("</details>") == 1
    assert "<summary>Per-layer details (3 layers)</summary>" in text


def test_golden_with_a_baseline(tmp_path):
    base = tmp_path / "baseline.json"
    baseline.write(base, initaudit.audit(ci_models.warn(), **STATIC).findings)
    report = initaudit.audit(ci_models.warn_plus_new_defect(), **STATIC, baseline=str(base))
    report.baseline["path"] = "baseline.json"  # keep the golden file free of tmp paths
    text = render(report)
    check_golden("markdown_baseline.md", text)
    assert "> 1 finding suppressed by the baseline `baseline.json`; 2 baseline entries no longer occur." in text


def test_golden_passing_report():
    text = render(initaudit.audit(ci_models.healthy(), **STATIC))
    check_golden("markdown_healthy.md", text)
    assert "## ✅ initaudit: PASS" in text and "No findings." in text


class Pipes(Rule):
    """Reports text that would break a Markdown table.

    What it checks
    --------------
    Nothing real.

    Why it matters
    --------------
    Escaping.

    Example
    -------
    ```python
    model = nn.Linear(2, 2)
    ```

    Fix
    ---
    ```python
    pass
    ```

    Options
    -------
    None.
    """

    code = "MDX001"
    name = "pipes"
    category = "scale"
    severity = Severity.WARNING

    def check(self, ctx):
        yield self.finding("0.weight", "a | b <script> *bold* _x_ [link](y)\nsecond line",
                           fix="w = a | b")


def test_cells_are_escaped():
    report = initaudit.audit(ci_models.healthy(), rule_classes=[Pipes], select=["MDX"], plugins=False)
    text = render(report)
    row = next(line for line in text.splitlines() if "MDX001" in line)
    assert row.count(" | ") == 3  # exactly four cells
    assert r"a \| b &lt;script&gt; \*bold\* \_x\_ \[link\](y)<br>second line" in row
    assert r"fix: `w = a \| b`" in row
    assert "<script>" not in text


def test_size_is_bounded():
    # distinct causes (words, not numbers, tell them apart): one group each
    findings = [Finding("IA104", "scale", Severity.WARNING, f"layer{i}.weight",
                        "x" * 300 + " kind " + "abcdefghij"[i % 10] + "abcdefghijklmnop"[i // 10], {}, "fix",
                        "init-scale") for i in range(MAX_FINDINGS + 50)]
    layers = [{"name": f"layer{i}", "param": f"layer{i}.weight", "op": "Linear", "shape": [4, 4], "fan_in": 4,
               "fan_out": 4, "activation": "relu", "normalized_after": False, "is_output": False,
               "stats": {"std": 0.1}, "expected": {"std": 0.7}, "ratio": 0.14, "matched_schemes": ["none"]}
              for i in range(3000)]
    report = Report("big", "torch-module", "init", "test", layers, findings)
    text = render(report)
    assert len(text) <= MAX_CHARS
    assert "… and 50 more findings in 50 more groups left out" in text and "more layers (see the JSON" in text


def test_findings_of_one_cause_are_one_row_and_the_size_stays_under_githubs_limit():
    findings = [Finding("IA104", "scale", Severity.WARNING, f"layer{i}.weight", f"std 0.0{i % 9 + 1} is small",
                        {}, "torch.nn.init.xavier_normal_(w)", "init-scale") for i in range(745)]
    layers = [{"name": f"layer{i}", "param": f"layer{i}.weight", "op": "Linear", "shape": [4, 4], "fan_in": 4,
               "fan_out": 4, "activation": "relu", "normalized_after": False, "is_output": False,
               "stats": {"std": 0.1}, "expected": {"std": 0.7}, "ratio": 0.14, "matched_schemes": ["none"]}
              for i in range(745)]
    notes = [f"note {i}: " + "n" * 500 for i in range(200)]
    report = Report("big", "torch-module", "init", "test", layers, findings, notes=notes)
    text = render(report)
    assert len(text) <= MAX_CHARS < 65_536
    rows = [line for line in text.splitlines() if line.startswith("| 🟡")]
    assert len(rows) == 1 and "init-scale ×745" in rows[0] and "(+737 more)" in rows[0]
    assert "745 findings in 1 group (same rule and cause)" in text
    assert "more notes (see the JSON report)" in text or "more layers (see the JSON report)" in text
    assert "`initaudit explain IA104`" in text


def test_markdown_from_the_cli_and_a_subprocess(tmp_path):
    target = f"{DATA / 'ci_models.py'}:broken"
    result = CliRunner().invoke(main, [target, "--isolated", "-q", "--ignore", "IA2", "--format", "markdown"])
    assert result.exit_code == 1
    assert result.stdout.startswith("<!-- initaudit-report -->\n## ❌ initaudit: FAIL")
    assert f"Target `{target}`" in result.stdout
    out = tmp_path / "summary.md"
    proc = subprocess.run([sys.executable, "-m", "initaudit", target, "--isolated", "-q", "--ignore", "IA2",
                           "--fail-on", "never",
                           "--markdown", str(out), "--format", "json"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.read_text() == result.stdout.replace("(fail-on `error`)", "(fail-on `never`)").replace(
        "## ❌ initaudit: FAIL", "## ✅ initaudit: PASS")


@pytest.mark.parametrize("fmt", ["markdown", "sarif", "json"])
def test_rule_errors_go_to_stderr_for_machine_formats(tmp_path, fmt):
    crash = tmp_path / "crash.py"
    crash.write_text("from initaudit.rule import Rule, Severity\n"
                     "class Crash(Rule):\n    '''Crashes.'''\n    code = 'CR001'\n    name = 'crash'\n"
                     "    category = 'scale'\n    severity = Severity.ERROR\n"
                     "    def check(self, ctx):\n        raise RuntimeError('boom')\n")
    result = CliRunner().invoke(main, [f"{DATA / 'ci_models.py'}:healthy", "--isolated", "-q", "--format", fmt,
                                       "--rules", str(crash)])
    assert result.exit_code == 0
    assert "initaudit: warning: rule CR001 (crash" in result.stderr
    assert "boom" in result.stdout  # and in the report itself
