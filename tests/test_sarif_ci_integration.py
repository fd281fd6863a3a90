"""CI integration files: the pre-commit hook (and `initaudit files`, which it runs) and the GitHub
Actions example that uploads SARIF."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from initaudit.cli import main

yaml = pytest.importorskip("yaml")  # PyYAML reads the hook and workflow files

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
sys.path.insert(0, str(DATA))
import ci_models  # noqa: E402

sys.path.remove(str(DATA))


@pytest.fixture
def checkpoints(tmp_path):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ci_models.broken().state_dict().items()},
              str(tmp_path / "broken.safetensors"))
    torch.save(ci_models.healthy().state_dict(), tmp_path / "healthy.pt")
    (tmp_path / "corrupt.pth").write_bytes(b"not a checkpoint")
    return tmp_path


def test_pre_commit_hook_definition():
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    [hook] = hooks
    assert hook["id"] == "initaudit" and hook["language"] == "python"
    assert hook["entry"].split() == ["initaudit", "files"]
    files = re.compile(hook["files"])
    for name in ("m.onnx", "a/b.safetensors", "c.pt", "d.pth"):
        assert files.search(name), name
    for name in ("model.py", "x.onnx.data", "ckpt.bin", "safetensors.txt"):
        assert not files.search(name), name
    assert "files" in main.commands


def test_files_command_exit_codes(checkpoints):
    def run(*names: str):
        return CliRunner().invoke(main, ["files", *(str(checkpoints / n) for n in names), "--isolated"])

    ok = run("healthy.pt")
    assert ok.exit_code == 0 and f"{checkpoints / 'healthy.pt'}: ok" in ok.output
    failed = run("healthy.pt", "broken.safetensors")
    assert failed.exit_code == 1
    assert f"{checkpoints / 'broken.safetensors'}: FAIL (1 error(s)" in failed.output
    assert "IA102 2.weight: all zeros" in failed.output
    broken = run("broken.safetensors", "corrupt.pth", "healthy.pt")
    assert broken.exit_code == 2  # could not read one file; the others were still audited
    assert f"initaudit: error: {checkpoints / 'corrupt.pth'}:" in broken.stderr
    assert f"{checkpoints / 'healthy.pt'}: ok" in broken.stdout
    assert run("broken.safetensors").exit_code == 1
    lenient = CliRunner().invoke(main, ["files", str(checkpoints / "broken.safetensors"), "--isolated",
                                        "--ignore", "IA102,IA104"])
    assert lenient.exit_code == 0


def test_github_actions_example_uploads_sarif():
    workflow = yaml.safe_load((ROOT / "examples" / "github-actions" / "initaudit.yml").read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert workflow["permissions"]["security-events"] == "write"
    assert "always()" in upload["if"]
    audit = next(s for s in steps if "initaudit" in s.get("run", "") and "--sarif" in s["run"])
    sarif_path = re.search(r"--sarif\s+(\S+)", audit["run"]).group(1)
    assert upload["with"]["sarif_file"] == sarif_path
    help_text = CliRunner().invoke(main, ["audit", "--help"]).output
    for flag in re.findall(r"(?<!\S)(--[a-z-]+)", audit["run"]):
        assert flag in help_text, f"the workflow uses {flag}, which `initaudit audit` does not have"
