"""The probe's command-line flags: --inputs, --input-shape, --batch-size, --seed, --device,
--no-probe, --histograms."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

from initaudit.cli import main

FACTORY = textwrap.dedent("""
    import torch, torch.nn as nn

    def make():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 50), nn.Tanh(), nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 3))
        nn.init.normal_(model[0].weight, std=1.0)
        return model
""")


@pytest.fixture()
def spec(tmp_path):
    path = tmp_path / "model.py"
    path.write_text(FACTORY)
    return f"{path}:make"


def run(*args):
    return CliRunner().invoke(main, ["audit", *args])


def test_json_probe_seed_batch_and_bytes(spec):
    a = run(spec, "--format", "json", "--seed", "5", "--batch-size", "16", "-q")
    b = run(spec, "--format", "json", "--seed", "5", "--batch-size", "16", "-q")
    assert a.exit_code == 1, a.output  # IA202: the N(0, 1) layer saturates its tanh
    assert a.stdout == b.stdout
    doc = json.loads(a.stdout)
    assert doc["probe"]["ran"] and doc["probe"]["batch_size"] == 16 and doc["probe"]["seed"] == 5
    assert {"IA202"} <= {f["rule"] for f in doc["findings"]}
    assert doc["layers"][0]["probe"]["saturated_fraction"] > 0.5
    assert doc["signal"][0]["measured_std"] == doc["layers"][0]["probe"]["std"]


def test_no_probe(spec):
    res = run(spec, "--format", "json", "--no-probe", "-q")
    doc = json.loads(res.stdout)
    assert not doc["probe"]["ran"] and "disabled" in doc["probe"]["skipped_reason"]
    assert not [f for f in doc["findings"] if f["rule"].startswith("IA2")]


def test_histograms_in_the_terminal_report(spec):
    res = run(spec, "--histograms", "-q")
    assert "Activation histograms" in res.output and "measured std" in res.output
    assert "|dW|/|W|" in res.output


def test_inputs_file_and_shape(spec, tmp_path):
    torch.save(torch.randn(9, 20), tmp_path / "x.pt")
    doc = json.loads(run(spec, "--format", "json", "--inputs", str(tmp_path / "x.pt"), "-q").stdout)
    assert doc["probe"]["inputs"] == "file" and doc["probe"]["batch_size"] == 9
    doc = json.loads(run(spec, "--format", "json", "--input-shape", "7,20", "-q").stdout)
    assert doc["probe"]["input_shapes"] == [[7, 20]]


@pytest.mark.parametrize("args,needle", [
    (["--inputs", "missing.pt"], "--inputs: no such file"),
    (["--input-shape", "7,x"], "--input-shape '7,x'"),
    (["--device", "gpu7"], "--device 'gpu7'"),
])
def test_bad_probe_arguments_exit_2_with_one_line(spec, args, needle):
    res = run(spec, *args, "-q")
    assert res.exit_code == 2
    assert needle in res.stderr and len(res.stderr.strip().splitlines()) == 1


TWO_FACTORIES = textwrap.dedent("""
    import torch, torch.nn as nn

    def example_inputs():  # the file's inputs: 20 features
        return torch.randn(7, 20)

    def wide():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(20, 8), nn.ReLU(), nn.Linear(8, 3))

    def narrow():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))

    narrow.example_inputs = lambda: torch.randn(11, 5)  # this factory's own inputs
""")


def test_a_factory_s_own_example_inputs_come_before_the_file_s(tmp_path):
    path = tmp_path / "models.py"
    path.write_text(TWO_FACTORIES)
    shapes = {}
    for name in ("wide", "narrow"):
        result = run(f"{path}:{name}", "--format", "json", "-q")
        doc = json.loads(result.stdout)
        assert doc["probe"]["ran"], result.output
        shapes[name] = doc["probe"]["input_shapes"]
    assert shapes == {"wide": [[7, 20]], "narrow": [[11, 5]]}
