"""The torch probe copies a parameter only when the run writes it (copy on write)."""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit
from initaudit.probe.torch_probe import _Snapshot


class WritesOneWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.keep = nn.Linear(64, 64)
        self.moved = nn.Linear(64, 64)

    def forward(self, x):
        with torch.no_grad():
            self.moved.weight.data.mul_(2.0)  # through .data: same storage, still seen
        return self.moved(torch.relu(self.keep(x)))


def test_only_the_written_parameter_is_copied_and_all_are_restored():
    torch.manual_seed(0)
    model = WritesOneWeight()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    snapshot = _Snapshot(model)
    with snapshot.writes:
        model(torch.randn(8, 64)).sum().backward()
    assert [t.shape for t in snapshot.writes.saved.values()] == [torch.Size([64, 64])]  # moved.weight
    snapshot.restore()
    assert snapshot.unrestored == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_a_plain_forward_and_backward_copies_no_parameter():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 4))
    snapshot = _Snapshot(model)
    with snapshot.writes:
        model.train()
        model(torch.randn(16, 32)).sum().backward()
    assert snapshot.writes.saved == {}
    snapshot.restore()
    report = initaudit.audit(WritesOneWeight(), config=False)
    assert report.probe.ran and not any("not restored" in n for n in report.notes)
