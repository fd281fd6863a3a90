"""An output layer drawn far above the schemes (torchvision's kaiming_uniform(fan_out) classifier
with 10 classes instead of 1000: std 1/sqrt(10)) starts the logits wide. IA104 warns and says
what the probe measured at its output, the consequence itself; a head at Xavier scale stays
quiet. And a BatchNorm the module form keeps as a norm node is no BatchNorm 'the exporter folded'."""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

import initaudit
from initaudit.loaders.torch_module import graph_from_module
from initaudit.roles import renormalised_params

CLASSES = 10


class BnNet(nn.Module):
    """Conv-BN-ReLU blocks, global pooling and a linear classifier drawn as MNASNet draws it
    (``head_fan`` = 10, its classes; 1034 = fan_in + fan_out is Xavier's scale)."""

    def __init__(self, head_fan: int):
        super().__init__()
        torch.manual_seed(0)
        layers, c = [], 3
        for out, k in ((16, 3), (32, 3), (1024, 1)):  # MNASNet ends in a wide 1x1 conv
            conv = nn.Conv2d(c, out, k, padding=k // 2, bias=False)
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            layers += [conv, nn.BatchNorm2d(out), nn.ReLU()]
            c = out
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c, CLASSES)
        # kaiming_uniform_(mode="fan_out", nonlinearity="sigmoid") at a chosen fan: bound sqrt(3 / fan)
        nn.init.uniform_(self.classifier.weight, -(3 / head_fan) ** 0.5, (3 / head_fan) ** 0.5)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x):
        return self.classifier(self.features(x))


def _logits_std(model: nn.Module) -> float:
    model = copy.deepcopy(model).train()  # a train-mode forward moves the running statistics
    with torch.no_grad():
        return float(model(torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1))).std())


def _head_findings(model):
    report = initaudit.audit(model, inputs=torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1)))
    return [f for f in report.findings if f.rule == "IA104" and f.layer.startswith("classifier")]


def test_an_oversized_head_warns_with_the_measured_logit_spread():
    model = BnNet(head_fan=CLASSES)
    measured = _logits_std(model)
    assert measured > 4 * _logits_std(BnNet(head_fan=1024 + CLASSES)), "the head really starts the logits wide"
    found = _head_findings(model)
    assert [f.severity.value for f in found] == ["warning"]
    shown = float(found[0].message.split("measures its output's std at ")[1].split()[0].rstrip(";"))
    assert abs(shown / measured - 1) < 0.3, (shown, measured)


def test_a_head_at_xavier_scale_stays_quiet():
    found = _head_findings(BnNet(head_fan=1024 + CLASSES))
    assert all(f.severity.value == "info" for f in found)


def test_a_norm_node_after_a_layer_is_no_folded_batchnorm():
    graph = graph_from_module(BnNet(head_fan=CLASSES), "BnNet")
    assert any(p.normalized_after for p in graph.params.values())
    assert renormalised_params(graph) == set()
