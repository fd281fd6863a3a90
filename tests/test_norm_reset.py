"""A stack that ends in a normalisation (timm's EfficientViT MBConv: 1x1 conv -> act -> depthwise
-> act -> 1x1 conv -> BatchNorm, PyTorch's default scale, 0.094x measured before the BN): the norm
divides the fall away as long as the spread stays far above its eps, so IA109/IA204 do not judge
it; the same layers with no norm, or a fall down to eps, are still judged."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

import initaudit

WIDTH = 64


def _block(std: float | None, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for _ in range(3):
        lin = nn.Linear(WIDTH, WIDTH)  # std None: PyTorch's default, 1 / sqrt(3 fan_in)
        if std is not None:
            nn.init.normal_(lin.weight, std=std)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.ReLU()]
    return layers[:-1] + ([nn.BatchNorm1d(WIDTH), nn.ReLU()] if norm else [nn.ReLU()])


def _model(std: float | None = None, norm: bool = True, blocks: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(*[m for _ in range(blocks) for m in _block(std, norm)], nn.Linear(WIDTH, 10))


def _x() -> torch.Tensor:
    return torch.randn(256, WIDTH, generator=torch.Generator().manual_seed(1))


def _pre_norm_stds(model: nn.Module) -> list[float]:
    model = copy.deepcopy(model)  # a train-mode forward moves the running statistics
    stds: list[float] = []
    hooks = [m.register_forward_pre_hook(lambda m, a: stds.append(float(a[0].std())))
             for m in model if isinstance(m, nn.BatchNorm1d)]
    with torch.no_grad():
        model.train()(_x())
    for h in hooks:
        h.remove()
    return stds


def _depth_alarms(model):
    report = initaudit.audit(model, inputs=_x())
    return [f for f in report.findings if f.rule in ("IA109", "IA204") and f.severity.value != "info"]


def test_a_fall_the_norm_resets_is_not_judged():
    model = _model()
    stds = _pre_norm_stds(model)
    assert all(0.01 < s < 0.12 for s in stds), stds  # the stack really falls ~10x before each BN
    assert _depth_alarms(model) == []


def test_the_same_stack_without_norms_still_vanishes():
    assert _depth_alarms(_model(norm=False))


def test_a_fall_down_to_the_norms_eps_is_still_judged():
    model = _model(std=0.01)
    assert max(_pre_norm_stds(model)) < 0.01  # within reach of eps 1e-5
    assert _depth_alarms(model)
