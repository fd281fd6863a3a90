"""The command line: exit codes, formats, pipes and NO_COLOR, one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from initaudit.cli import main

TESTS = Path(__file__).resolve().parent
DEFECTIVE = f"{TESTS / 'defective.py'}:build"
HEALTHY = f"{TESTS / 'defective.py'}:healthy"


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "initaudit", *args], capture_output=True, text=True,
                          env=full_env, timeout=300)


def test_exit_codes_in_a_subprocess(tmp_path):
    assert run(HEALTHY).returncode == 0
    bad = run(DEFECTIVE, "--format", "json")
    assert bad.returncode == 1
    doc = json.loads(bad.stdout)  # stdout is clean JSON
    assert doc["schema_version"] == 1 and doc["summary"]["failed"] is True
    missing = run(str(tmp_path / "nope.onnx"))
    assert missing.returncode == 2 and missing.stdout == ""
    assert missing.stderr.count("\n") == 1 and "nope.onnx" in missing.stderr and "Traceback" not in missing.stderr


def test_json_contract_fields():
    result = CliRunner().invoke(main, [DEFECTIVE, "--format", "json"])
    doc = json.loads(result.output)
    assert set(doc) >= {"schema_version", "tool", "target", "format", "stage", "probe", "layers", "findings",
                        "summary"}
    assert doc["tool"] == {"name": "initaudit", "version": "0.1.0"}
    layer = doc["layers"][0]
    assert set(layer) >= {"name", "op", "param", "shape", "fan_in", "fan_out", "activation", "normalized_after",
                          "stats", "expected", "matched_schemes", "probe"}
    assert set(layer["stats"]) == {"mean", "std", "min", "max", "nonfinite", "zero_fraction"}
    for f in doc["findings"]:
        assert set(f) == {"rule", "category", "severity", "layer", "message", "evidence", "fix"}
        assert f["severity"] in ("error", "warning", "info")
    assert doc["summary"]["errors"] == sum(f["severity"] == "error" for f in doc["findings"])
    nan_layer = next(x for x in doc["layers"] if x["param"] == "8.weight")
    assert nan_layer["stats"]["nonfinite"] == 1  # NaN statistics become null, JSON stays valid


@pytest.mark.parametrize("fail_on, code", [("error", 1), ("never", 0)])
def test_fail_on(fail_on, code):
    assert CliRunner().invoke(main, [DEFECTIVE, "--fail-on", fail_on]).exit_code == code


def test_fail_on_warning_fails_on_a_warning_only_model():
    spec = f"{TESTS / 'models.py'}:mlp"  # 5-layer He ReLU MLP: clean
    assert CliRunner().invoke(main, [spec, "--fail-on", "info"]).exit_code == 0
    warn = f"{TESTS / 'defective.py'}:build"
    result = CliRunner().invoke(main, [warn, "--select", "IA104", "--fail-on", "warning"])
    assert result.exit_code == 1
    assert CliRunner().invoke(main, [warn, "--select", "IA104"]).exit_code == 0


def test_piped_output_is_plain_text_and_no_color_respected():
    piped = run(DEFECTIVE)
    assert "\x1b[" not in piped.stdout and "IA102" in piped.stdout and "FAIL" in piped.stdout
    forced = run(DEFECTIVE, env={"NO_COLOR": "1", "FORCE_COLOR": "1"})
    colours = re.findall(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m", forced.stdout)
    assert colours == [] and "IA102" in forced.stdout  # styles may stay; colours may not
    coloured = run(DEFECTIVE, env={"FORCE_COLOR": "1"})
    assert re.search(r"\x1b\[(?:\d+;)*(?:3[0-8]|9[0-7])(?:;\d+)*m", coloured.stdout)  # the check can fail


def test_output_file_and_refusal_to_overwrite_the_target(tmp_path):
    out = tmp_path / "r.json"
    result = CliRunner().invoke(main, [DEFECTIVE, "--format", "json", "--output", str(out)])
    assert result.exit_code == 1 and json.loads(out.read_text())["findings"]
    ckpt = tmp_path / "m.pt"
    torch.save({"w": torch.randn(4, 4)}, ckpt)
    before = ckpt.read_bytes()
    result = CliRunner().invoke(main, [str(ckpt), "--output", str(ckpt)])
    assert result.exit_code == 2 and ckpt.read_bytes() == before


def test_unsafe_checkpoint_exit_2_one_line(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    result = run(str(path))
    assert result.returncode == 2 and "state_dict" in result.stderr and result.stderr.count("\n") == 1


def test_rules_and_explain():
    rules = CliRunner().invoke(main, ["rules", "--format", "json"])
    listed = {r["code"]: r for r in json.loads(rules.output)}
    assert {"IA101", "IA104", "IA110"} <= set(listed)
    assert listed["IA104"]["category"] == "scale" and listed["IA104"]["origin"] == "initaudit"
    text = CliRunner().invoke(main, ["explain", "init-scale"]).output
    assert text.startswith("IA104 init-scale") and "Why it matters" in text and "xavier_normal_" in text
    unknown = CliRunner().invoke(main, ["explain", "IA999"])
    assert unknown.exit_code == 2


def test_help_teaches():
    text = CliRunner().invoke(main, ["--help"]).output
    assert "initaudit model.onnx" in text and "Exit codes" in text
    audit_help = CliRunner().invoke(main, ["audit", "--help"]).output
    assert "--fail-on" in audit_help and "--model" in audit_help


def test_reports_never_overwrite_any_file_the_audit_reads(tmp_path):
    import shutil

    factory = tmp_path / "defective.py"
    shutil.copy(TESTS / "defective.py", factory)
    before = factory.read_bytes()
    result = CliRunner().invoke(main, [f"{factory}:healthy", "-o", str(factory)])
    assert result.exit_code == 2 and factory.read_bytes() == before
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    torch.onnx.export(torch.nn.Sequential(torch.nn.Linear(8, 8)), (torch.randn(1, 8),),
                      str(tmp_path / "m.onnx"), dynamo=False)
    model = onnx.load(str(tmp_path / "m.onnx"))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="m.data", size_threshold=0)
    onnx.save(model, str(tmp_path / "ext.onnx"))
    data = (tmp_path / "m.data").read_bytes()
    result = CliRunner().invoke(main, [str(tmp_path / "ext.onnx"), "--json", str(tmp_path / "m.data")])
    assert result.exit_code == 2 and "refusing" in result.output
    assert (tmp_path / "m.data").read_bytes() == data
