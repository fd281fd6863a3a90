"""What the zoo expects of each model: the warnings that are true (with the measurement that
proves each), and the cases that wait on another area of the tool.

Areas (the reasons' prefixes, so the lead can flip them when the work lands):

- "needs capture": the dataflow from a real forward pass (i8-capture). Today transformers 5.x,
  diffusers and nn.TransformerEncoder models fall back to a registration-order chain, so the
  depth rules (IA109 predicted, IA204/IA205 measured segments) judge a guessed chain, and the
  gradient rules cannot see attention query/key inputs or gated products (IA206/IA207 on
  ALBERT's 5-layer profile, the diffusers UNet/VAE attention blocks). ONNX: the loader's
  folded-BatchNorm detection misses layers whose created bias the exporter merged with another
  (MobileNetV3), so depth rules still judge those segments.
- "needs scheme conventions": family init conventions and propagation (i9-math): IA104 on
  CLIP/T5/ConvNeXt/VGG/Inception/timm/torchvision/LSTM-LM conventions and after ONNX renames;
  IA109 on the ONNX or bare forms.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from zoo.forms import call

# Rules whose false-alarm causes are fixed on this branch: held to the zoo's standard now.
OWN_RULES = {"IA101", "IA102", "IA103", "IA105", "IA106", "IA107", "IA108", "IA201", "IA202", "IA203",
             "IA206", "IA207", "IA208", "IA209"}


@dataclass(frozen=True)
class Explained:
    rule: str
    layer: str  # regular expression over the finding's layer
    forms: tuple[str, ...]
    measure: Callable[..., bool]  # (model, inputs, finding) -> the warning is true
    why: str


def mobilevit_collapse(model, inputs, finding) -> bool:
    """Training-mode forward (batch statistics): every encoder stage's output keeps < 2% of the
    input's spread, because each BatchNorm multiplies it by its gamma ~ N(0, 0.02)."""
    stds = []
    hooks = [model.get_submodule(f"mobilevit.encoder.layer.{i}").register_forward_hook(
        lambda m, a, out: stds.append((out[0] if isinstance(out, tuple) else out).std().item()))
        for i in range(5)]
    model.train()
    try:
        with torch.no_grad():
            call(model, inputs)
    finally:
        model.eval()
        for h in hooks:
            h.remove()
    return len(stds) == 5 and max(stds) < 0.02


EXPLAINED: dict[str, list[Explained]] = {
    "mobilevit": [Explained("IA108", r"mobilevit\..*normalization\.weight",
                            ("module", "safetensors-model", "safetensors-bare"), mobilevit_collapse,
                            "transformers 5.x draws MobileViT's BatchNorm gammas from N(0, 0.02)")],
}

BLOCKED: dict[tuple[str, str], str] = {
    ("albert", "module"): "needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("albert", "safetensors-model"): "needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("bart", "module"): "needs capture: depth rules on a registration-order chain (IA109, IA204, IA205)",
    ("bart", "safetensors-model"): "needs capture: depth rules on a registration-order chain (IA109, IA204, IA205)",
    ("bert", "onnx"): "needs ONNX attention recognition: the exported q/k/v projections are judged as linear layers with nothing after them (IA104)",
    ("convnext_hf", "module"): "needs scheme conventions: IA104 on the family's documented init; needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("convnext_hf", "safetensors-model"): "needs scheme conventions: IA104 on the family's documented init; needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("efficientnet_timm", "module"): "needs scheme conventions: IA104 on the family's documented init",
    ("efficientnet_timm", "safetensors-model"): "needs scheme conventions: IA104 on the family's documented init",
    ("electra", "module"): "needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("electra", "safetensors-model"): "needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("googlenet_tv", "module"): "needs scheme conventions: IA104 on the family's documented init",
    ("googlenet_tv", "safetensors-model"): "needs scheme conventions: IA104 on the family's documented init",
    ("gpt2", "onnx"): "needs ONNX attention recognition: the exported q/k/v projection is judged as a linear layer with nothing after it (IA104)",
    ("mobilenetv3_timm", "module"): "needs scheme conventions: IA104 on the family's documented init",
    ("mobilenetv3_timm", "onnx"): "needs scheme conventions: IA104 on the family's documented init; needs scheme conventions: propagation (IA204)",
    ("mobilenetv3_timm", "safetensors-model"): "needs scheme conventions: IA104 on the family's documented init",
    ("swin", "module"): "needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("swin", "safetensors-model"): "needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("unet2d", "module"): "needs capture: depth rules on a registration-order chain (IA109)",
    ("unet2d", "safetensors-model"): "needs capture: depth rules on a registration-order chain (IA109)",
    ("vae", "module"): "needs capture: depth rules on a registration-order chain (IA204)",
    ("vae", "safetensors-model"): "needs capture: depth rules on a registration-order chain (IA204)",
    ("vgg11_tv", "module"): "needs scheme conventions: IA104 on the family's documented init; needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("vgg11_tv", "safetensors-model"): "needs scheme conventions: IA104 on the family's documented init; needs capture: depth rules on a registration-order chain (IA109, IA204)",
    ("whisper", "module"): "needs scheme conventions: IA104 on the family's documented init; needs capture: depth rules on a registration-order chain (IA109, IA204, IA205)",
    ("whisper", "safetensors-model"): "needs scheme conventions: IA104 on the family's documented init; needs capture: depth rules on a registration-order chain (IA109, IA204, IA205)",
}

BLOCKED_OWN: dict[tuple[str, str], str] = {
}
