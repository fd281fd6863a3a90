"""Constant factors between the input and the first layer (``x / 255``) set where the depth
ratios start, but only along a chain: a positional encoding that concatenates several scaled
copies of the input (NeRF's ``cat([x, sin(2^k x), cos(2^k x)])``) has no one factor. Their
product (2^30 for six octaves) made every measured ratio ~1e-10, an IA204 error on a stack whose
measured fall is ~0.06x. (The chain, ``x / 255`` and the like, is tests/test_input_scale.py's.)"""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit


class Encoded(nn.Module):
    def __init__(self, octaves: int = 6, width: int = 64, depth: int = 5):
        super().__init__()
        torch.manual_seed(0)
        self.octaves = octaves
        d_in = 3 + 6 * octaves
        self.layers = nn.ModuleList(nn.Linear(d_in if i == 0 else width, width) for i in range(depth))
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        h = torch.cat([x] + [f(2.0 ** k * x) for k in range(self.octaves) for f in (torch.sin, torch.cos)], -1)
        for layer in self.layers:
            h = torch.relu(layer(h))
        return self.head(h)


def test_a_positional_encoding_has_no_single_input_gain():
    model = Encoded().eval()
    x = torch.rand(128, 3, generator=torch.Generator().manual_seed(0)) * 2 - 1
    report = initaudit.audit(model, inputs=x)
    sites = {s.name: s for s in report.probe.sites}
    measured = sites["layers.4"].spread / sites["input"].spread  # PyTorch's default before ReLU: a real fall
    assert 0.01 < measured < 0.2
    (f,) = [f for f in report.findings if f.rule == "IA204"]
    assert 0.5 < f.evidence["ratio"] / measured < 2 and f.severity.value == "warning"


def test_coordinates_the_forward_encodes_are_inferred():
    """The first Linear reads 39 = 3 (1 + 2 * 6) features of an encoding of xyz: (batch, 39),
    a set of them and (batch, 78) are rejected; (batch, 3) is the first size the forward takes."""
    report = initaudit.audit(Encoded().eval())
    assert report.probe.ran and list(report.probe.input_shapes[0]) == [64, 3]
