"""A layer applied again and again in depth (ALBERT's one shared layer) is a depth stack of
layers sharing weights, its residual adds are residual adds; a recurrent cell written out
(weights reused along time, the hidden state fed back: x_t W_ih + h_{t-1} W_hh) keeps its
recurrent reading: a sum of parallel branches, not a residual."""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit
from initaudit.graph import is_cell_sum
from initaudit.loaders.target import load_target
from initaudit.probe import ProbeOptions, capture_graph

WIDTH, STEPS = 32, 6


class SharedDepth(nn.Module):
    """ALBERT's layout: an input projection, then one shared block ``norm(x + dense(x))``
    applied ``STEPS`` times."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(16, WIDTH)
        self.dense = nn.Linear(WIDTH, WIDTH)
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x):
        x = self.proj(x)
        for _ in range(STEPS):
            x = self.norm(x + self.dense(x))
        return self.head(x)


class Elman(nn.Module):
    """h_t = tanh(x_t W_ih + h_{t-1} W_hh), unrolled; ``std`` draws both weights."""

    def __init__(self, std: float | None = None):
        super().__init__()
        torch.manual_seed(0)
        self.ih, self.hh, self.head = nn.Linear(16, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, 4)
        for lin in (self.ih, self.hh):
            nn.init.zeros_(lin.bias)
            if std is not None:
                nn.init.normal_(lin.weight, std=std)

    def forward(self, x):
        h = torch.tanh(self.ih(x[:, 0]))
        for t in range(1, x.shape[1]):
            h = torch.tanh(self.ih(x[:, t]) + self.hh(h))
        return self.head(h)


def captured(model, x):
    graph, _ = load_target(model)
    capture_graph(graph, ProbeOptions(inputs=x))
    assert graph.capture == "trace"
    return graph


def vectors():
    return torch.randn(8, 16, generator=torch.Generator().manual_seed(0))


def sequences():
    return torch.randn(8, STEPS, 16, generator=torch.Generator().manual_seed(0))


def test_a_layer_shared_in_depth_ends_residual_branches():
    g = captured(SharedDepth(), vectors())
    adds = [n for n in g.nodes if n.kind == "add"]
    assert len(adds) == STEPS and not any(is_cell_sum(n) for n in adds)  # the first block's too
    assert g.params["proj.weight"].residual_end and g.params["dense.weight"].residual_end
    layers = [n for n in g.nodes if n.kind == "layer" and n.param == "dense.weight"]
    assert len(layers) == STEPS  # a depth stack of STEPS layers sharing one weight


def test_a_written_out_recurrent_cell_keeps_its_recurrent_reading():
    g = captured(Elman(), sequences())
    sums = [n for n in g.nodes if n.kind == "add"]
    assert len(sums) == STEPS - 1 and all(is_cell_sum(n) for n in sums)
    for name in ("ih.weight", "hh.weight"):
        assert g.params[name].activation.name == "tanh" and not g.params[name].residual_end


def test_a_small_cell_is_judged_as_a_stack_not_as_a_residual_branch():
    """Planted: ih and hh at N(0, 0.01^2) (0.06x Xavier): the recurrence forgets its input
    (measured: the last hidden state < 5% of a Xavier cell's); read as a cell, IA104 warns, where
    a residual reading would have left it at info ("the skip path carries the signal")."""
    small, xavier = Elman(std=0.01), Elman()
    for lin in (xavier.ih, xavier.hh):
        nn.init.xavier_normal_(lin.weight, gain=5 / 3)
    hidden = {}
    for name, m in (("small", small), ("xavier", xavier)):
        m.head.register_forward_hook(lambda mod, a, o, name=name: hidden.__setitem__(name, a[0].std().item()))
        with torch.no_grad():
            m(sequences())
    assert hidden["small"] < 0.05 * hidden["xavier"]
    report = initaudit.audit(small, inputs=sequences(), probe_enabled=False)
    found = {f.layer: f for f in report.findings if f.rule == "IA104"}
    assert found["hh.weight"].severity.value == "warning"
    assert "residual branch" not in found["hh.weight"].message
