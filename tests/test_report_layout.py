"""The reports people read: findings grouped by rule and cause, --format concise, --statistics,
a layout that holds at 80 and 120 columns, and rows that agree with their findings.

Regenerate the golden files after an intended change with
``INITAUDIT_UPDATE_GOLDEN=1 python -m pytest tests/test_report_layout.py`` and review the diff.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner
from rich.console import Console

import initaudit
from initaudit.cli import main
from initaudit.reporters.rich_report import ViewOptions, print_report

TESTS = Path(__file__).resolve().parent
GOLDEN = TESTS / "golden"
DATA = TESTS / "data"
sys.path.insert(0, str(DATA))
import report_models  # noqa: E402

sys.path.remove(str(DATA))

DEEP = "report_models.py:deep_tanh"  # run from tests/data: goldens hold no absolute path
# Goldens cover the static rules only, so that probe rules added later leave them unchanged.
STATIC = ["--isolated", "-q", "--no-probe", "--select", "IA1"]


# A ratio below 1e-20 has vanished in any reading; its mantissa depends on the CPU's float kernels
# (the per-unit pass merges mixture components along a principal axis that LAPACK resolves with
# the CPU's SIMD: 2.63e-33 with AVX2, 2.75e-33 with the default kernels, 3.04e-33 elsewhere).
_VANISHED = re.compile(r"\b\d\.\d\de-(?:[2-9]\d|\d{3})(?!\d)")


def _layout(text: str) -> str:
    """The text with vanished ratios' digits masked (same width: the layout is still checked)."""
    return _VANISHED.sub(lambda m: "#" * len(m[0]), text)


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if os.environ.get("INITAUDIT_UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"golden file {path} missing: run with INITAUDIT_UPDATE_GOLDEN=1"
    assert _layout(text) == _layout(path.read_text()), \
        f"report differs from {path} (INITAUDIT_UPDATE_GOLDEN=1 to accept)"


def rendered(report, width: int, view: ViewOptions | None = None) -> str:
    console = Console(record=True, width=width, file=io.StringIO(), color_system=None)
    print_report(console, report, view)
    return console.export_text()


@pytest.fixture(autouse=True)
def in_data(monkeypatch):
    monkeypatch.chdir(DATA)


def test_a_300_layer_model_reads_in_a_screenful():
    result = CliRunner().invoke(main, [DEEP, *STATIC, "--statistics"], env={"COLUMNS": "100"})
    text = result.stdout
    assert result.exit_code == 1  # IA109: the predicted signal vanishes through 300 tanh layers
    check_golden("rich_deep_300.txt", text)
    lines = text.splitlines()
    assert len(lines) < 60  # was 3,657 lines with one entry per layer per rule
    # 299 hidden layers in one group; the output layer (nothing after it compounds) is info
    [group] = [line for line in lines if line.startswith("warning IA104 init-scale ×299")]
    assert "0.weight, 2.weight, 4.weight" in group and "(+293 more)" in " ".join(text.split())
    assert "Per-layer table: 300 rows, not shown" in text and "--layers shows it" in text
    assert re.search(r"^\s*300\s+IA104\s+init-scale", text, re.M)  # --statistics
    assert "initaudit explain IA104" in text


def test_concise_is_one_line_per_finding(tmp_path):
    result = CliRunner().invoke(main, [DEEP, *STATIC, "--format", "concise"])
    lines = result.stdout.splitlines()
    findings = [line for line in lines if f"{DEEP}:" in line]
    check_golden("concise_deep_300.txt", "\n".join(lines[:5] + ["…"] + lines[-3:]) + "\n")
    doc = json.loads(CliRunner().invoke(main, [DEEP, *STATIC, "--format", "json"]).stdout)
    assert len(findings) == len(doc["findings"]) >= 300  # JSON keeps one entry per layer
    # every hidden layer warns; the output layer (nothing after it compounds) is info
    assert sum(line.startswith(f"{DEEP}:") and ": IA104 [warning] std 0.0" in line for line in findings) == 299
    assert lines[-2].startswith(f"Found {len(findings)} findings (1 error, ") and lines[-2].endswith("FAIL")
    stats = CliRunner().invoke(main, [DEEP, *STATIC, "--format", "concise", "--statistics"]).stdout
    assert re.search(r"^300  IA104  init-scale  \(299 warning, 1 info\)$", stats, re.M)


def test_statistics_is_refused_where_it_means_nothing():
    result = CliRunner().invoke(main, [DEEP, *STATIC, "--format", "json", "--statistics"])
    assert result.exit_code == 2 and "--statistics applies to --format rich or concise" in result.output


def identifiers(report) -> set[str]:
    names = {r["param"] for r in report.layers} | {r["name"] for r in report.layers}
    names |= {f.layer for f in report.findings}
    return {n for n in names if len(n) > 3}


@pytest.mark.parametrize("width", [80, 120])
def test_names_and_fix_code_are_never_split(width):
    report = initaudit.audit(report_models.long_names(), config=False)
    text = rendered(report, width)
    lines = text.splitlines()
    for name in identifiers(report):
        assert any(name in line for line in lines), f"{name} split or missing at {width} columns"
        for line in lines:  # no line ends with a fragment of a name that continues on the next
            assert not (line.rstrip().endswith(name[: len(name) // 2]) and name not in line), (name, line)
    fixes = {f.fix for f in report.findings if f.fix and f.fix.startswith("torch.")}
    assert fixes
    for fix in fixes:
        assert any(fix in line for line in lines), f"fix code split at {width} columns: {fix}"
    table = [line for line in lines if "encoder_blocks.0.attention_output_projection.weight" in line]
    assert table and all(len(line) <= width for line in table)
    assert "…" not in "".join(table)  # no ellipsised cell (was `0.…`, `Ge…` at 80 columns)
    if width == 80:
        assert "left out at this width" in text  # it says which columns it dropped


def test_layers_flag_shows_and_hides_the_table():
    report = initaudit.audit(report_models.deep_tanh(60), config=False, probe_enabled=False, select=["IA1"])
    assert "Per-layer table: 60 rows, not shown" in rendered(report, 120)
    shown = rendered(report, 120, ViewOptions(layers=True))
    assert "118.weight" in shown and "Per-layer table" not in shown
    small = initaudit.audit(report_models.long_names(), config=False, probe_enabled=False)
    assert "Per-layer table" not in rendered(small, 120)
    assert "Per-layer table: 10 rows" in rendered(small, 120, ViewOptions(layers=False))


def test_the_header_says_how_the_graph_was_captured():
    report = initaudit.audit(report_models.long_names(), config=False, probe_enabled=False)
    assert report.capture
    assert re.search(rf"dataflow\s+{report.capture}: ", rendered(report, 120))
    assert json.loads(report.to_json_str())["capture"] == report.capture


def test_a_zeroed_layer_shows_a_measured_spread_consistent_with_its_ratio():
    report = initaudit.audit(report_models.long_names(), config=False)
    zeroed = next(s for s in report.signal if s["layer"] == "encoder_blocks.1.feed_forward_expansion")
    assert zeroed["measured_ratio"] < 1e-6
    assert zeroed["measured_signal_std"] < 1e-6  # the spread the ratio uses, not the bias's 0.14
    assert zeroed["measured_std"] > 0.05  # the JSON key keeps its meaning: the output, bias included
    row = next(line for line in rendered(report, 200).splitlines()
               if line.strip().startswith("encoder_blocks.1.feed_forward_expansion ")
               and "x" in line.split()[-1])
    assert row.split()[-2] != "0.139" and float(row.split()[-2].rstrip("x")) < 1e-6


def zero_before_relu(bias: float) -> nn.Sequential:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                      nn.Linear(64, 10))
    nn.init.zeros_(m[4].weight)
    nn.init.constant_(m[4].bias, bias)
    return m


def test_ia102_names_the_bias_it_sees_and_blocked_layers_below_get_a_finding():
    dead = initaudit.audit(zero_before_relu(0.0), config=False)
    [ia102] = [f for f in dead.findings if f.rule == "IA102"]
    assert "with zero bias, relu'(0) = 0 blocks every gradient" in ia102.message
    blocked = sorted(f.layer for f in dead.findings if f.rule == "IA206" and "exactly zero gradient" in f.message)
    assert blocked == ["0.weight", "2.weight"]  # below the dead layer; 6.weight (above) is not blocked
    alive = initaudit.audit(zero_before_relu(0.1), config=False)
    [ia102] = [f for f in alive.findings if f.rule == "IA102"]
    assert "zero bias" not in ia102.message and "the bias is not zero" in ia102.message
    assert not [f for f in alive.findings if "exactly zero gradient" in f.message]  # it unblocks itself


def test_a_bare_checkpoint_scheme_column_and_its_finding_agree(tmp_path):
    torch.manual_seed(0)
    torch.save({"fc1.weight": torch.randn(64, 32) * 0.02, "fc2.weight": torch.randn(10, 64) * 5.0},
               tmp_path / "bare.pt")
    report = initaudit.audit(str(tmp_path / "bare.pt"), config=False)
    rows = {r["param"]: r for r in report.layers}
    flagged = {f.layer for f in report.findings if f.rule == "IA104"}
    assert rows["fc1.weight"]["matched_schemes"][0] == "transformer-0.02" and "fc1.weight" not in flagged
    assert rows["fc2.weight"]["matched_schemes"] == ["none"] and "fc2.weight" in flagged
