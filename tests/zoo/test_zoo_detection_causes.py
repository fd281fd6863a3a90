"""False errors on torchvision detection models at the library's own init (issue 8), each with
the measurement of what is really there, and a control where the real defect still fires."""

from __future__ import annotations

import math

import pytest

import torch
from torch import nn

import initaudit

PRIOR = -math.log((1 - 0.01) / 0.01)  # focal-loss prior, pi = 0.01 (Lin et al. 2017): -4.595


def _of(report, rule, severities=("error", "warning")):
    return [f for f in report.findings if f.rule == rule and f.severity.value in severities]


class _Head(nn.Module):
    """A dense detection head in miniature: conv tower, then per-anchor class logits read
    through a sigmoid (RetinaNet/FCOS apply it in post-processing)."""

    def __init__(self, out_std: float = 0.01, out_bias: float = PRIOR) -> None:
        super().__init__()
        self.tower = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(),
                                   nn.Conv2d(32, 32, 3, padding=1), nn.ReLU())
        self.cls_logits = nn.Conv2d(32, 9, 3, padding=1)
        nn.init.normal_(self.cls_logits.weight, std=out_std)  # torchvision's RetinaNet head init
        nn.init.constant_(self.cls_logits.bias, out_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.cls_logits(self.tower(x)))


def _probe_input() -> torch.Tensor:
    return torch.randn(8, 16, 12, 12, generator=torch.Generator().manual_seed(0))


def test_focal_prior_bias_on_the_output_layer_is_not_saturation():
    torch.manual_seed(0)
    model = _Head()
    # measured: sigmoid starts at pi = 0.01 and the focal loss still trains the logits layer
    # (RetinaNet itself, 4 SGD steps: cls_logits |dW|/|W| 0.058 -> 0.062, loss falling)
    x = _probe_input()
    logits = model.cls_logits(model.tower(x))
    target = torch.zeros_like(logits)
    target[:, 0, 5, 5] = 1
    from torchvision.ops import sigmoid_focal_loss
    sigmoid_focal_loss(logits, target, reduction="sum").backward()
    ratio = (model.cls_logits.weight.grad.norm() / model.cls_logits.weight.norm()).item()
    assert ratio > 1e-3
    report = initaudit.audit(model, inputs=x)
    assert not _of(report, "IA202")


def test_over_confident_output_logits_warn_but_are_no_error():
    torch.manual_seed(0)
    model = _Head(out_std=5.0, out_bias=0.0)  # Mask R-CNN's mask logits: std ~11 at init
    found = _of(initaudit.audit(model, inputs=_probe_input()), "IA202")
    assert found and all(f.severity.value == "warning" for f in found)
    assert "output layer" in found[0].message


def test_control_hidden_sigmoid_saturated_by_its_bias_stays_an_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Sigmoid(), nn.Linear(64, 10))
    nn.init.normal_(model[0].weight, std=0.01)
    nn.init.constant_(model[0].bias, -10.0)  # the same tiny spread, but a hidden layer
    report = initaudit.audit(model, inputs=torch.randn(64, 64, generator=torch.Generator().manual_seed(0)))
    assert _of(report, "IA202", ("error",))


class _Levels(_Head):
    """The head shared over two feature levels, per-level logits flattened and concatenated
    before one sigmoid: how the exported RetinaNet/FCOS graphs read them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        small = nn.functional.avg_pool2d(x, 2)
        levels = [self.cls_logits(self.tower(f)).flatten(2) for f in (x, small)]
        return torch.sigmoid(torch.cat(levels, dim=2))


def test_focal_prior_through_an_exported_concatenation_is_not_saturation(tmp_path):
    from zoo.forms import export_onnx
    torch.manual_seed(0)
    x = _probe_input()
    report = initaudit.audit(export_onnx(_Levels(), x, tmp_path / "head.onnx"))
    assert report.probe.ran and not _of(report, "IA202")


def test_control_exported_hidden_sigmoid_saturated_by_its_bias_stays_an_error(tmp_path):
    from zoo.forms import export_onnx
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Sigmoid(), nn.Linear(64, 10))
    nn.init.normal_(model[0].weight, std=0.01)
    nn.init.constant_(model[0].bias, -10.0)
    x = torch.randn(64, 64, generator=torch.Generator().manual_seed(0))
    report = initaudit.audit(export_onnx(model, x, tmp_path / "hidden.onnx"))
    assert _of(report, "IA202", ("error",))


# --- CSPDarkNet exported: a zero last-BN gamma folded into the conv, the activation before the add --

class _DarkBlock(nn.Module):
    """conv1 -> act, conv2 -> act, + skip: timm's DarkBlock with zero_init_last's zero BN gamma
    as an exporter folds it (conv2's weight and bias zero)."""

    def __init__(self, act: type[nn.Module]) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.conv1, self.conv2 = nn.Conv2d(16, 8, 1), nn.Conv2d(8, 16, 3, padding=1)
        self.act1, self.act2 = act(), act()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.act2(self.conv2(self.act1(self.conv1(x)))))


def _export_block(act, tmp_path):
    from zoo.forms import export_onnx
    torch.manual_seed(0)
    model = _DarkBlock(act)
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return model, x, initaudit.audit(export_onnx(model, x, tmp_path / "block.onnx"))


def test_folded_zero_gamma_before_silu_and_the_add_is_legitimate(tmp_path):
    model, x, report = _export_block(nn.SiLU, tmp_path)
    # measured: silu'(0) = 0.5, so every unit of the zero conv gets its own gradient
    model(x).square().mean().backward()
    g = model.conv2.weight.grad.flatten(1)
    assert (g.norm(dim=1) > 0).all() and torch.unique(g, dim=0).shape[0] == g.shape[0]
    assert not _of(report, "IA102", ("error", "warning"))


def test_control_folded_zero_before_relu_and_the_add_stays_an_error(tmp_path):
    model, x, report = _export_block(nn.ReLU, tmp_path)
    model(x).square().mean().backward()
    assert model.conv2.weight.grad.abs().sum() == 0  # relu'(0) = 0: nothing ever moves it
    assert _of(report, "IA102", ("error",))


# --- RetinaNet's coarsest FPN level: a 1x1 map under 3x3 kernels reads mostly zero padding ----------

def _tower(std: float | None = None) -> nn.Module:
    layers: list[nn.Module] = []
    for _ in range(8):
        conv = nn.Conv2d(32, 32, 3, padding=1)
        if std is None:
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
        else:
            nn.init.normal_(conv.weight, std=std)
        nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(32, 4, 1))


def test_he_convs_on_a_map_smaller_than_the_kernel_are_not_vanishing():
    torch.manual_seed(0)
    model = _tower()
    x = torch.randn(16, 32, 1, 1, generator=torch.Generator().manual_seed(0))
    # measured: on a 1x1 map only the centre tap of each 3x3 kernel reads signal, ~1/3 the
    # spread per layer; the same He convs on 8x8 maps keep it (within 3x over 8 layers)
    with torch.no_grad():
        small = model[:15](x).std() / x.std()
        y = torch.randn(16, 32, 8, 8, generator=torch.Generator().manual_seed(0))
        big = model[:15](y).std() / y.std()
    assert small < 1e-2 and big > 0.3
    assert not _of(initaudit.audit(model, inputs=x), "IA204", ("error",))


def test_control_small_convs_on_a_full_map_still_vanish():
    torch.manual_seed(0)
    model = _tower(std=0.002)
    x = torch.randn(16, 32, 8, 8, generator=torch.Generator().manual_seed(0))
    assert _of(initaudit.audit(model, inputs=x), "IA204", ("error",))


# --- SSD300 exported: the transform's per-channel x 255 (image_std = 1/255) sits inside the graph ---

class _Caffe(nn.Module):
    """(x - mean) / std with std = 1/255 per channel (SSD300's VGG transform), then convs."""

    def __init__(self, std: float | None = None) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([0.48, 0.46, 0.41]).view(3, 1, 1))
        self.register_buffer("std", torch.full((3, 1, 1), 1 / 255))
        convs = [nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1), nn.Conv2d(16, 16, 3, padding=1)]
        for c in convs:
            if std is None:
                nn.init.kaiming_normal_(c.weight, nonlinearity="relu")
            else:
                nn.init.normal_(c.weight, std=std)
            nn.init.zeros_(c.bias)
        self.body = nn.Sequential(convs[0], nn.ReLU(), convs[1], nn.ReLU(), convs[2], nn.ReLU(), nn.Conv2d(16, 4, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body((x - self.mean) / self.std)


def _export_caffe(std, tmp_path):
    from zoo.forms import export_onnx
    torch.manual_seed(0)
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    return initaudit.audit(export_onnx(_Caffe(std), x, tmp_path / "caffe.onnx"))


def test_an_input_normalisation_inside_the_graph_is_not_layer_growth(tmp_path):
    # measured: the first conv reads x * 255 (std ~74 from a std-0.29 image); the He convs
    # after it keep that spread (static prediction ~1x), so growth from the raw image is the
    # transform's constant, not the init
    assert not _of(_export_caffe(None, tmp_path), "IA205", ("error",))


def test_control_large_convs_after_the_normalisation_still_explode(tmp_path):
    assert _of(_export_caffe(1.0, tmp_path), "IA205", ("error",))


# --- YOLOS: class and box MLPs behind the last_hidden_state the model also returns ---------------------

def _yolos():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.YolosConfig(image_size=[64, 64], patch_size=16, hidden_size=64, num_hidden_layers=4,
                                      num_attention_heads=4, intermediate_size=128, num_detection_tokens=10)
    return transformers.YolosForObjectDetection(config).eval()


def test_heads_behind_a_returned_hidden_state_are_no_reference_for_the_encoder():
    model = _yolos()
    x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    out = model(pixel_values=x)
    gen = torch.Generator().manual_seed(1)
    r = {k: torch.randn(v.shape, generator=gen) for k, v in out.items() if isinstance(v, torch.Tensor)}
    params = dict(model.named_parameters())
    names = ["vit.encoder.layer.3.output.dense.weight", "class_labels_classifier.layers.0.weight"]

    def ratios(keys):
        loss = sum((out[k] * r[k]).sum() for k in keys) / 4
        grads = torch.autograd.grad(loss, [params[n] for n in names], retain_graph=True)
        return [float(g.norm() / params[n].detach().norm()) for n, g in zip(names, grads)]

    (body, head), (body_heads_only, head_alone) = ratios(list(r)), ratios(["logits", "pred_boxes"])
    assert "last_hidden_state" in r and body > 100 * head  # the encoder takes that output's error directly
    assert body_heads_only < 3 * head_alone and head_alone == pytest.approx(head)  # not a growth with depth
    report = initaudit.audit(model, inputs={"pixel_values": x})
    assert not [f for f in report.findings if f.rule in ("IA206", "IA207")]


class _ExplodingTrunkAlsoReturned(nn.Module):
    """A saturated N(0, 1) tanh trunk whose last hidden state is returned beside the head's output."""

    def __init__(self) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(100, 100), nn.Tanh())])
        self.head = nn.Sequential(nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 10))
        for m in self.trunk:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=1.0)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        h = self.trunk(x)
        return self.head(h), h


def test_an_exploding_trunk_that_is_also_returned_is_still_found():
    torch.manual_seed(0)
    report = initaudit.audit(_ExplodingTrunkAlsoReturned().eval(), inputs=torch.randn(64, 100))
    (f,) = _of(report, "IA207")
    assert f.layer.startswith("trunk.") and f.evidence["reference"].startswith("trunk.")
