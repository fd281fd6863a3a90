"""Eval-mode ONNX exports of BatchNorm nets with fresh statistics: the exporter folds each
BatchNorm (mean 0, var 1: the identity) into its conv, so what follows reads the conv's raw
scale, where in training the batch statistics would centre and rescale it.

- IA203: units below zero on every sample of the export (a tiny conv before the folded norm,
  then a layer with mostly negative biases: the biases win) are not dead in training (the
  module's train-mode probe finds none): not judged, as IA204 does not judge such segments.
  The same net with no BatchNorm at all is still found.
- IA104: a layer feeding only the output head is graded without its own shrink (it only
  scales the initial logits) also where its stack crosses a folded BatchNorm (torchvision's
  MobileNetV3 classifier.0 at N(0, 0.01) before hardswish: a warning in ONNX only); a hidden
  layer at that scale is still a warning.
"""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit
from onnx_models import export


def _net(bn: bool, head_layers: int = 1) -> nn.Module:
    torch.manual_seed(0)
    stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
    nn.init.normal_(stem.weight, std=1e-3)
    mix = nn.Conv2d(16, 32, 1)
    nn.init.uniform_(mix.bias, -0.3, 0.1)  # mostly negative: they win over a signal of ~1e-3
    layers = [stem, nn.BatchNorm2d(16)] if bn else [stem]
    layers += [mix, nn.ReLU(), nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(),
               nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    width = 32
    for _ in range(head_layers):
        fc = nn.Linear(width, 128)
        nn.init.normal_(fc.weight, std=0.01)
        layers += [fc, nn.Hardswish()]
        width = 128
    return nn.Sequential(*layers, nn.Linear(width, 10)).eval()


X = torch.randn(16, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _dead(report):
    return [f for f in report.findings if f.rule == "IA203" and f.severity.value != "info"]


def _onnx(model, tmp_path, name="m.onnx"):
    return initaudit.audit(export(model, (X,), tmp_path / name))  # synthetic N(0, 1) images


def test_units_dead_only_on_the_folded_export_are_not_judged(tmp_path):
    model = _net(bn=True)
    with torch.no_grad():
        pre = model[:3](X)  # the 1x1 conv's pre-activation with the BatchNorm at fresh statistics
        assert ((pre <= 0).flatten(2).all(-1).all(0)).float().mean() > 0.5  # eval: most units dead
    assert not _dead(initaudit.audit(model, inputs=X))  # train-mode BatchNorm in the module: none
    assert not _dead(_onnx(model, tmp_path))


def test_the_same_units_without_a_batchnorm_are_still_dead(tmp_path):
    found = _dead(_onnx(_net(bn=False), tmp_path))
    assert found and found[0].evidence["dead_fraction"] > 0.5


def _scale(report, layer_suffix):
    return [f for f in report.findings if f.rule == "IA104" and f.layer.endswith(layer_suffix)]


def test_a_head_input_layer_behind_a_folded_norm_is_graded_as_in_the_module(tmp_path):
    model = _net(bn=True)
    module_form = _scale(initaudit.audit(model, inputs=X), "8.weight")
    assert module_form and module_form[0].severity.value == "info"
    onnx_form = [f for f in _onnx(model, tmp_path).findings if f.rule == "IA104" and "fan_out=128" in f.message]
    assert onnx_form and all(f.severity.value == "info" for f in onnx_form)


def test_a_hidden_layer_at_that_scale_is_still_a_warning(tmp_path):
    report = _onnx(_net(bn=True, head_layers=2), tmp_path)
    warned = [f for f in report.findings if f.rule == "IA104" and f.severity.value == "warning"]
    assert warned
