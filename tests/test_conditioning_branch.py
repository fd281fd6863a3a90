"""A conditioning signal added to the main input's signal (a diffusion UNet's
``h + time_emb_proj(silu(temb))``, the timestep MLP at PyTorch's default scale with SiLU: 0.18x
after two layers, as diffusers builds it) is a side branch of that trunk: it only shifts the
trunk's features, and a small shift at the start is weak conditioning, not a vanishing signal.
The same MLP on the main input is still judged, and so is a trunk that collapses."""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit

WIDTH = 64


class Conditioned(nn.Module):
    """A He ReLU trunk of four blocks, then a LayerNorm; a timestep MLP (Linear-SiLU-Linear)
    whose projection is added to each block's features."""

    def __init__(self, trunk_std: float | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.time = nn.Sequential(nn.Linear(WIDTH, WIDTH), nn.SiLU(), nn.Linear(WIDTH, WIDTH))
        self.blocks = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.proj = nn.ModuleList(nn.Linear(WIDTH, WIDTH) for _ in range(4))
        self.norm = nn.LayerNorm(WIDTH)
        for lin in self.blocks:
            if trunk_std is None:
                nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            else:
                nn.init.normal_(lin.weight, std=trunk_std)
            nn.init.zeros_(lin.bias)
        self.head = nn.Linear(WIDTH, 10)

    def forward(self, x, t):
        temb = self.time(t)
        for lin, proj in zip(self.blocks, self.proj):
            x = torch.relu(lin(x)) + proj(nn.functional.silu(temb))
        return self.head(self.norm(x))


def _inputs():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(128, WIDTH, generator=g), torch.randn(128, WIDTH, generator=g))


def _vanishing(report):
    return [f for f in report.findings if f.rule in ("IA109", "IA204") and f.severity.value != "info"]


def test_the_timestep_mlp_really_is_small():
    model = Conditioned()
    x, t = _inputs()
    with torch.no_grad():
        assert model.time(t).std() / t.std() < 0.3


def test_a_small_conditioning_mlp_is_no_vanishing_signal():
    assert _vanishing(initaudit.audit(Conditioned(), inputs=_inputs())) == []


def test_the_same_mlp_on_the_main_input_is_judged():
    mlp = Conditioned().time  # and its first projection, as the conditioning path computes it
    torch.manual_seed(0)
    chain = nn.Sequential(*mlp, nn.SiLU(), nn.Linear(WIDTH, WIDTH), nn.SiLU(), nn.Linear(WIDTH, 10))
    report = initaudit.audit(chain, inputs=_inputs()[1])
    assert any(f.rule == "IA109" for f in _vanishing(report))


def test_a_trunk_that_collapses_is_still_caught():
    report = initaudit.audit(Conditioned(trunk_std=0.01), inputs=_inputs())
    assert any(f.layer.startswith("blocks.") for f in _vanishing(report))
