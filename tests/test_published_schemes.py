"""Published initialisation schemes (tests/papers.py) come out without false findings, in the
module form and the bare safetensors form, and the defect each guards against still fires."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

import initaudit
import papers


def _bare(model: torch.nn.Module, tmp_path, name: str = "m") -> initaudit.Report:
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return initaudit.audit(path, config=False)


def _by_rule(report: initaudit.Report, rule: str) -> dict[str, str]:
    return {f.layer: f.severity.value for f in report.findings if f.rule == rule}


def test_fixup_zero_branch_ends_in_a_bare_checkpoint_are_not_errors(tmp_path):
    """Fixup zeroes each block's conv2; conv1 is no peer of conv2 (the 2 numbers a layer inside
    the block, not a block): the file cannot place the zero layers, a warning."""
    found = _by_rule(_bare(papers.fixup(), tmp_path), "IA102")
    assert {k: v for k, v in found.items() if "conv2" in k} == {f"layers.{i}.conv2.weight": "warning" for i in range(8)}


def test_a_zero_conv2_among_non_zero_conv2_peers_stays_an_error(tmp_path):
    model = papers.fixup()
    with torch.no_grad():
        for i, block in enumerate(model.layers):
            if i != 3:
                torch.nn.init.kaiming_normal_(block.conv2.weight)
    found = _by_rule(_bare(model, tmp_path), "IA102")
    assert found.get("layers.3.conv2.weight") == "error"
