"""A layer that feeds only the output head (ELECTRA's discriminator dense, VGG's last hidden
classifier layer): its own shrink only scales the initial logits, as a small head does, so IA104
grades it by the stack before it and the depth rules (IA109, IA204) judge the signal before it;
a blow-up there, and a stack that collapses before it, stay caught."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.engine import Settings

WIDTH = 32


class HeadOnTrunk(nn.Module):
    """A He ReLU trunk, a LayerNorm, then ``dense -> gelu -> Linear(., 1)`` (ELECTRA's
    discriminator head) with ``dense`` drawn at ``std``."""

    def __init__(self, std: float, depth: int = 4):
        super().__init__()
        torch.manual_seed(0)
        trunk = []
        for _ in range(depth):
            lin = nn.Linear(WIDTH, WIDTH)
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            nn.init.zeros_(lin.bias)
            trunk += [lin, nn.ReLU()]
        self.trunk = nn.Sequential(*trunk)
        self.norm = nn.LayerNorm(WIDTH)
        self.dense = nn.Linear(WIDTH, WIDTH)
        self.prediction = nn.Linear(WIDTH, 1)
        for lin in (self.dense, self.prediction):
            nn.init.normal_(lin.weight, std=std if lin is self.dense else 0.02)
            nn.init.zeros_(lin.bias)

    def forward(self, x):
        return self.prediction(nn.functional.dropout(nn.functional.gelu(self.dense(self.norm(self.trunk(x)))),
                                                     0.1, self.training))


def example_inputs():
    return torch.randn(64, WIDTH, generator=torch.Generator().manual_seed(0))


def audit(model, **kw):
    return initaudit.audit(model, inputs=example_inputs(), **kw)


def by_rule(report, rule):
    return [f for f in report.findings if f.rule == rule]


def test_a_small_layer_feeding_only_the_head_is_info():
    model = HeadOnTrunk(0.02)
    report = audit(model)
    layers = {r["param"]: r for r in report.layers}
    assert layers["dense.weight"]["feeds_head"] and not layers["dense.weight"]["is_output"]
    assert layers["prediction.weight"]["is_output"] and not layers["prediction.weight"]["feeds_head"]
    assert not layers["trunk.6.weight"]["feeds_head"]  # a norm lies between it and the head
    dense = [f for f in by_rule(report, "IA104") if f.layer == "dense.weight"]
    assert dense and dense[0].evidence["ratio"] < 0.2  # 0.02 at fan_in 32 is 0.07x He: past the line alone
    assert dense[0].severity.value == "info" and "only scales the initial logits" in dense[0].message
    assert [f for f in report.findings if f.severity.value != "info"] == []


def _loss_after(model: nn.Module, steps: int) -> float:
    """Binary cross-entropy after ``steps`` Adam steps (lr 1e-3, ELECTRA's optimiser) on a fixed
    linearly separable task."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(256, WIDTH, generator=g)
    y = (x @ torch.randn(WIDTH, generator=g) > 0).float()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(model(x).squeeze(-1), y)
        loss.backward()
        opt.step()
    return loss.item()


def test_the_shrink_really_only_scales_the_logits():
    """Measured: the head's initial output with dense at 0.02 is < 0.2x the one with dense at He
    (the logits start small), and training moves it as fast: after 50 Adam steps the loss is
    within 1.5x of the He model's (0.23 against 0.20; both start at log 2 = 0.69)."""
    small, he = HeadOnTrunk(0.02), HeadOnTrunk(0.02)
    with torch.no_grad():
        nn.init.normal_(he.dense.weight, std=1.534 / WIDTH ** 0.5)  # He with the gelu gain
        assert small.eval()(example_inputs()).std() < 0.2 * he.eval()(example_inputs()).std()
    small_loss, he_loss = _loss_after(small, 50), _loss_after(he, 50)
    assert small_loss < 0.4 and small_loss < 1.5 * he_loss


def test_a_blow_up_feeding_the_head_is_still_a_warning():
    report = audit(HeadOnTrunk(3.0))
    dense = [f for f in by_rule(report, "IA104") if f.layer == "dense.weight"]
    assert dense and dense[0].severity.value == "warning" and dense[0].evidence["ratio"] > 3


def mlp(std: float, depth: int = 20) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        lin = nn.Linear(100, 100)
        nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_a_stack_that_collapses_before_the_head_input_stays_caught():
    """The 20-layer N(0, 0.01^2) ReLU MLP: every hidden layer warns (the head input too: the stack
    before it compounds to nothing), and the depth rules are errors, with the head input's own
    shrink taken out where they name it."""
    model = mlp(0.01)
    report = initaudit.audit(model, inputs=torch.randn(64, 100, generator=torch.Generator().manual_seed(0)))
    ia104 = {f.layer: f for f in by_rule(report, "IA104")}
    hidden = [f"{i}.weight" for i in range(0, 38, 2)]
    assert all(ia104[n].severity.value == "warning" for n in hidden)
    assert ia104["36.weight"].evidence["stack_factor"] < 1e-10
    for rule in ("IA109", "IA204"):
        (f,) = by_rule(report, rule)
        assert f.severity.value == "error" and f.layer in ("34", "36"), (rule, f.layer)
        if f.layer == "36":
            assert f.evidence["head_input_shrink"] == pytest.approx(ia104["36.weight"].evidence["ratio"])


def test_the_head_input_is_recognised_in_onnx(tmp_path):
    model = HeadOnTrunk(0.02).eval()
    path = tmp_path / "head.onnx"
    torch.onnx.export(model, (example_inputs(),), str(path), dynamo=False, input_names=["x"])
    report = initaudit.audit(path, inputs=example_inputs(), settings=Settings(probe_enabled=False))
    rows = [r for r in report.layers if r["feeds_head"]]
    assert len(rows) == 1 and rows[0]["fan_in"] == WIDTH and rows[0]["fan_out"] == WIDTH
    assert [f for f in report.findings if f.severity.value != "info"] == []


@pytest.mark.parametrize("std", [0.02])
def test_without_the_mechanism_the_head_input_warns(std, monkeypatch):
    """The control fails without the notion: with ``feeds_head`` never set, the same dense warns."""
    import initaudit.heads as heads

    monkeypatch.setattr(heads, "head_layers", lambda *a: set())
    report = audit(HeadOnTrunk(std))
    dense = [f for f in by_rule(report, "IA104") if f.layer == "dense.weight"]
    assert dense and dense[0].severity.value == "warning"
