"""The CI gate: exit codes (Ctrl-C, --debug), requests that cannot be honoured, warnings for a
probe nobody asked for, start-up without torch, NO_COLOR, factories from the current folder,
rule-selector messages, progress in bytes."""

from __future__ import annotations

import json
import re
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from initaudit.cli import main

TESTS = Path(__file__).resolve().parent
HEALTHY = f"{TESTS / 'defective.py'}:healthy"
DEFECTIVE = f"{TESTS / 'defective.py'}:build"
SCRIPT = Path(sys.executable).with_name("initaudit")  # the console script, as users run it


def run(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 300):
    return subprocess.run([sys.executable, "-m", "initaudit", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=timeout)


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("initaudit: error: ") and "Traceback" not in result.stderr
    return lines[0]


# --- Ctrl-C and --debug ------------------------------------------------------------------------

SLOW = '''
import time
from pathlib import Path
import torch.nn as nn

class Slow(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        Path(__file__).with_name("probe-started").touch()
        time.sleep(60)
        return self.fc(x)

def build():
    return Slow()
'''


def test_ctrl_c_during_the_probe_exits_130_and_leaves_no_report(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW)
    (tmp_path / "old.json").write_text("previous report\n")
    proc = subprocess.Popen([sys.executable, "-m", "initaudit", "slow.py:build", "--isolated", "-q",
                             "--format", "json", "-o", "old.json", "--sarif", "new.sarif",
                             "--markdown", "new.md"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (tmp_path / "probe-started").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the probe never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Aborted" not in err and "Traceback" not in err
    assert err.strip() == "initaudit: interrupted; no report was written"
    assert out == ""
    assert (tmp_path / "old.json").read_text() == "previous report\n"  # untouched, not half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json", "probe-started", "slow.py"]


def test_report_files_are_replaced_atomically(tmp_path, monkeypatch):
    from initaudit import outputs

    target = tmp_path / "r.json"
    target.write_text("old")
    target.chmod(0o640)

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs.os, "replace", broken_replace)
    with pytest.raises(Exception, match="No space left"):
        outputs.write_atomic(target, "new report")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]
    monkeypatch.undo()
    outputs.write_atomic(target, "new report")
    assert target.read_text() == "new report" and (target.stat().st_mode & 0o777) == 0o640


def test_debug_shows_the_traceback_and_keeps_exit_2(tmp_path):
    (tmp_path / "m.py").write_text("def build():\n    raise RuntimeError('boom')\n")
    plain = run("m.py:build", "--isolated", cwd=tmp_path)
    assert plain.returncode == 2 and "boom" in one_error_line(plain)
    debug = run("m.py:build", "--isolated", "--debug", cwd=tmp_path)
    assert debug.returncode == 2
    assert "Traceback (most recent call last)" in debug.stderr and "RuntimeError: boom" in debug.stderr
    assert debug.stderr.strip().splitlines()[-1].startswith("initaudit: error: m.py:build: calling build()")


# --- requests that cannot be honoured ----------------------------------------------------------

def fixed_batch_onnx(path: Path) -> Path:
    from onnx_models import init, save, tensor_in
    from onnx import helper

    w = (np.random.default_rng(0).standard_normal((16, 16)) * 0.35).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w", "b"], ["y"], name="fc", transB=1)]
    return save(path, nodes, [tensor_in("x", [1, 16])], [tensor_in("y", [1, 16])],
                [init("w", w), init("b", np.zeros(16, np.float32))])


@pytest.mark.parametrize("args, cause", [
    (["--input-shape", "8,31"], "asked for the probe, which did not run"),
    (["--input-shape", "foo=8,64"], "foo"),
    (["--model", HEALTHY], "--model applies to a checkpoint"),
    (["--probe", "--batch-size", "8", "--inputs", "{inputs}"], "asked for the probe"),
])
def test_requests_a_factory_cannot_honour_exit_2(tmp_path, args, cause):
    torch.save(torch.randn(4, 7), tmp_path / "wrong.pt")  # the model takes 32 features
    args = [a.replace("{inputs}", str(tmp_path / "wrong.pt")) for a in args]
    result = CliRunner().invoke(main, [HEALTHY, "--isolated", "-q", *args])
    assert result.exit_code == 2, result.output
    assert cause in one_error_line(result) and result.stdout == ""


def test_device_cuda_without_cuda_exits_2():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    result = CliRunner().invoke(main, [HEALTHY, "--isolated", "-q", "--device", "cuda"])
    assert result.exit_code == 2
    assert "--device cuda: CUDA is not available" in one_error_line(result)


def test_requests_an_onnx_file_cannot_honour_exit_2(tmp_path):
    path = fixed_batch_onnx(tmp_path / "fixed.onnx")
    ok = CliRunner().invoke(main, [str(path), "--isolated", "-q", "--format", "json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["probe"]["batch_size"] == 1
    batch = CliRunner().invoke(main, [str(path), "--isolated", "-q", "--batch-size", "32"])
    assert batch.exit_code == 2
    assert "--batch-size 32: the model's inputs have a fixed batch dimension" in one_error_line(batch)
    model = CliRunner().invoke(main, [str(path), "--isolated", "-q", "--model", HEALTHY])
    assert model.exit_code == 2 and "this target is an ONNX graph" in one_error_line(model)


def test_probe_flags_on_a_bare_checkpoint_are_requests(tmp_path):
    torch.save({"0.weight": torch.randn(8, 8) * 0.5}, tmp_path / "sd.pt")
    result = CliRunner().invoke(main, [str(tmp_path / "sd.pt"), "--isolated", "-q", "--input-shape", "4,8"])
    assert result.exit_code == 2 and "static only" in one_error_line(result)
    assert CliRunner().invoke(main, [str(tmp_path / "sd.pt"), "--isolated", "-q"]).exit_code == 0


def test_a_probe_nobody_asked_for_is_a_warning_and_a_note(tmp_path):
    (tmp_path / "m.py").write_text(
        "import torch.nn as nn\n"
        "class Picky(nn.Module):\n"
        "    def __init__(self):\n        super().__init__(); self.fc = nn.Linear(8, 8)\n"
        "    def forward(self, x):\n        raise ValueError('needs a mask')\n"
        "def build():\n    return Picky()\n")
    result = run("m.py:build", "--isolated", "-q", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["probe"]["ran"] is False and doc["layers"]  # the static audit ran
    assert any(n.startswith("probe not run:") for n in doc["notes"])
    assert "initaudit: warning: probe not run:" in result.stderr and "needs a mask" in result.stderr


def test_config_probe_settings_are_defaults_not_requests(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.initaudit]\n[tool.initaudit.probe]\nbatch-size = 32\n')
    path = fixed_batch_onnx(tmp_path / "fixed.onnx")
    result = CliRunner().invoke(main, [str(path), "-q"])
    assert result.exit_code == 0, result.output


# --- start-up ----------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [["--version"], ["--help"], ["rules"], ["explain", "IA104"], ["config"],
                                  ["audit", "--help"], ["rules", "--format", "json"]])
def test_commands_that_touch_no_model_do_not_import_torch(args, tmp_path):
    code = ("import sys\nfrom initaudit.cli import main\n"
            f"try:\n    main({args!r}, prog_name='initaudit')\nexcept SystemExit as e:\n    code = e.code\n"
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', code, file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert proc.stderr.strip().splitlines()[-1] in ("NO-TORCH 0", "NO-TORCH None"), proc.stderr
    assert proc.stdout


def test_import_initaudit_is_light_and_the_api_still_works():
    proc = subprocess.run([sys.executable, "-c", "import sys, initaudit; print('torch' in sys.modules); "
                           "initaudit.Severity; print('torch' in sys.modules); initaudit.audit; "
                           "print(sorted(initaudit.__all__))"], capture_output=True, text=True, timeout=120)
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["False", "False"], proc.stderr
    assert "audit" in lines[2]


# --- output conventions ------------------------------------------------------------------------

def _run_in_a_terminal(args: list[str], env: dict) -> bytes:
    """Run the CLI with stdout on a pseudo-terminal (where rich would use colour and bold)."""
    master, slave = pty.openpty()
    base = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR", "TERM", "COLUMNS")}
    proc = subprocess.Popen([sys.executable, "-m", "initaudit", *args], stdout=slave, stderr=subprocess.PIPE,
                            env={**base, "COLUMNS": "100", "TERM": "xterm-256color", **env})
    os.close(slave)
    out = b""
    while True:
        ready, _, _ = select.select([master], [], [], 120)
        if not ready:
            break
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    proc.wait(timeout=120)
    os.close(master)
    return out


def test_no_color_means_plain_text_on_a_terminal():
    coloured = _run_in_a_terminal([DEFECTIVE, "--isolated", "-q", "--no-probe"], {})
    assert b"\x1b[" in coloured  # the control: a terminal gets styles
    plain = _run_in_a_terminal([DEFECTIVE, "--isolated", "-q", "--no-probe"], {"NO_COLOR": "1"})
    assert b"FAIL" in plain and b"\x1b[" not in plain  # no colour, no bold


def test_a_package_in_the_current_folder_is_importable_as_with_python_m(tmp_path):
    pkg = tmp_path / "mypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "nets.py").write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Linear(4, 4))\n")
    proc = subprocess.run([str(SCRIPT), "mypkg.nets:build", "--isolated", "-q", "--format", "json"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["target"] == "mypkg.nets:build"


def test_unknown_rules_get_one_short_line():
    foo = CliRunner().invoke(main, [HEALTHY, "--isolated", "-q", "--ignore", "FOO"])
    assert foo.exit_code == 2
    line = one_error_line(foo)
    assert "initaudit rules" in line and len(line) < 200 and "IA101" not in line
    close = CliRunner().invoke(main, [HEALTHY, "--isolated", "-q", "--select", "init-scal"])
    assert close.exit_code == 2 and "did you mean 'init-scale'?" in one_error_line(close)


def test_no_plugins_select_of_a_missing_prefix_is_exit_2_like_an_unknown_code():
    for code in ("XMP", "IA999"):
        result = CliRunner().invoke(main, [HEALTHY, "--isolated", "-q", "--no-plugins", "--select", code])
        assert result.exit_code == 2, (code, result.output)
        assert repr(code) in one_error_line(result)


def test_no_plugins_with_a_config_naming_a_plugin_rule_is_a_note(tmp_path):
    (tmp_path / "pyproject.toml").write_text('[tool.initaudit]\nextend-select = ["XMP"]\n')
    (tmp_path / "m.py").write_text("import torch.nn as nn\ndef build():\n    return nn.Sequential(nn.Linear(4, 4))\n")
    result = CliRunner().invoke(main, [str(tmp_path / "m.py") + ":build", "-q", "--no-plugins",
                                       "--format", "json"])
    assert result.exit_code == 0, result.output
    assert any("matches no rule (plugins are off)" in n for n in json.loads(result.stdout)["notes"])


# --- progress ----------------------------------------------------------------------------------

class Recorder:
    def __init__(self):
        self.calls, self.phases = [], []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    def phase(self, name: str) -> None:
        self.phases.append((name, len(self.calls)))


def test_progress_counts_bytes_and_announces_the_probe():
    import initaudit

    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    half = torch.nn.Sequential(torch.nn.Linear(64, 64)).half()
    rec = Recorder()
    initaudit.audit(model, progress=rec, config=False)
    params = sum(p.numel() for p in model.parameters())
    assert rec.calls[-1] == (params * 4, params * 4)  # float32: 4 bytes per element
    assert rec.phases == [("probe", len(rec.calls))]  # after every tensor was read
    rec = Recorder()
    initaudit.audit(half, progress=rec, config=False, probe_enabled=False)
    assert rec.calls[-1][1] == sum(p.numel() for p in half.parameters()) * 2


def test_the_progress_bar_shows_megabytes_and_a_probe_phase():
    import io

    from rich.console import Console

    from initaudit.outputs import ProgressBar

    buffer = io.StringIO()
    with ProgressBar(quiet=False, console=Console(file=buffer, width=100, color_system=None, force_terminal=True)) as update:
        update(100_000_000, 534_000_000)
        update.bar.refresh()
        assert "100.0/534.0 MB" in buffer.getvalue()
        update.phase("probe")
        update.bar.refresh()
        assert "probe: forward and backward pass" in buffer.getvalue()


# --- documentation users have ------------------------------------------------------------------

ROOT = TESTS.parent


def test_user_documentation_cites_docs_not_the_internal_design_notes():
    from initaudit.registry import discover

    texts = {"README.md": (ROOT / "README.md").read_text()}
    texts.update({f"rule {c.code}": c.doc() for c in discover(plugins=False).sorted()})
    texts["initaudit.rule"] = (ROOT / "initaudit" / "rule.py").read_text()
    for where, text in texts.items():
        assert "DESIGN" not in text, f"{where} cites DESIGN.md, which users do not have"
    for doc in re.findall(r"\(?(docs/[\w.-]+\.md)", "\n".join(texts.values())):
        assert (ROOT / doc).is_file(), f"{doc} is cited but missing"
    json_doc = (ROOT / "docs" / "json-output.md").read_text()
    for key in ("schema_version", "matched_schemes", "skipped_reason", "capture", "summary", "130"):
        assert key in json_doc
    from initaudit.rule import CATEGORIES

    assert all(f"`{c}`" in json_doc for c in CATEGORIES)
    assert "zero_init_residual" in (ROOT / "docs" / "legitimate-patterns.md").read_text()
