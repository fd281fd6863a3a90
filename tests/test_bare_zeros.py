"""IA102 in a checkpoint with no architecture: a zero layer is as sure as the file lets it be.
Names and shapes cannot tell a zero hidden layer (dead, an error) from a zero-initialised
output, residual-branch end or zero convolution (legitimate), so an unplaced zero layer is a
warning that says so; a zero layer whose peers in the other blocks are not zero follows no
convention and stays an error."""

from __future__ import annotations

import torch
import torch.nn as nn
from safetensors.torch import save_model

import initaudit


class Blocks(nn.Module):
    """Repeated blocks, each with a zero-initialised 1x1 output conv (ControlNet's pattern)."""

    def __init__(self, zero_all: bool = True):
        super().__init__()
        self.body = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(3))
        self.outs = nn.ModuleList(nn.Conv2d(8, 8, 1) for _ in range(3))
        for i, conv in enumerate(self.outs):
            if zero_all or i == 1:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)


def _bare(model: nn.Module, tmp_path) -> initaudit.Report:
    path = tmp_path / "m.safetensors"
    save_model(model, str(path))
    return initaudit.audit(path)


def _ia102(report):
    return {f.layer: f.severity.value for f in report.findings if f.rule == "IA102"}


def test_zero_layers_the_file_cannot_place_are_warnings(tmp_path):
    torch.manual_seed(0)
    report = _bare(Blocks(zero_all=True), tmp_path)
    assert _ia102(report) == {f"outs.{i}.weight": "warning" for i in range(3)}
    assert report.exit_code == 0  # the default gate (--fail-on error) does not fail on what it cannot prove
    f = next(f for f in report.findings if f.rule == "IA102")
    assert "cannot tell" in f.message and "2 peer(s)" in f.message and "--model" in f.fix


def test_a_zero_layer_among_non_zero_peers_stays_an_error(tmp_path):
    torch.manual_seed(0)
    assert _ia102(_bare(Blocks(zero_all=False), tmp_path)) == {"outs.1.weight": "error"}
    mlp = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 32))
    nn.init.zeros_(mlp[2].weight)  # 0.weight and 4.weight are its peers
    assert _ia102(_bare(mlp, tmp_path)) == {"2.weight": "error"}


def test_a_small_head_in_a_bare_checkpoint_is_info(tmp_path):
    """timm's BEiT scales its head by head_init_scale = 0.001 (std 2e-5): in a bare checkpoint
    the head (a matrix narrowing to a width no other weight reads) is an output layer, and a
    small head only starts the logits near uniform: info, not an IA104 warning. A hidden layer
    as small stays a warning."""
    timm = __import__("pytest").importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("beit_base_patch16_224", pretrained=False, img_size=32, patch_size=8, embed_dim=64,
                              depth=2, num_heads=4, num_classes=10).eval()
    assert model.head.weight.std().item() < 1e-4  # the measurement: 0.001 x trunc_normal(0.02)
    report = _bare(model, tmp_path)
    head = [f for f in report.findings if f.rule == "IA104" and f.layer == "head.weight"]
    assert [f.severity.value for f in head] == ["info"] and "output layer" in head[0].message
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.mul_(0.001)
    hidden = [f for f in _bare(model, tmp_path).findings if f.rule == "IA104" and f.layer == "blocks.0.mlp.fc1.weight"]
    assert [f.severity.value for f in hidden] == ["warning"]
