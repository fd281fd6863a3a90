"""Held-out vision / diffusion / plain torch.nn architectures for ``benchmarks/sweep/run.py``: none is
in ``tests/zoo/registry.py``. Each is built from its library's config with the library's own default
initialisation (``pretrained=False`` / ``weights=None``, no download), small where a kwarg allows
(10 classes, reduced depth or width, small images), so every finding at warning or error severity is
a false alarm unless a forward pass shows the defect.

    python benchmarks/sweep/run.py benchmarks/sweep/vision.py --forms module,onnx --out vision.jsonl
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def _timm(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(name, pretrained=False, num_classes=10, **kw).eval()
    return build


def _tv(name: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision

        return torchvision.models.get_model(name, weights=None, **kw).eval()
    return build


def _tv_vit() -> nn.Module:
    """torchvision's VisionTransformer class at a small config (vit_b_16's builder fixes the depth)."""
    from torchvision.models.vision_transformer import VisionTransformer

    return VisionTransformer(image_size=224, patch_size=16, num_layers=2, num_heads=4, hidden_dim=128,
                             mlp_dim=512, num_classes=10).eval()


def _diffusers(cls: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import diffusers

        return getattr(diffusers, cls)(**kw).eval()
    return build


class BatchNormCNN(nn.Module):
    """A CIFAR classifier as tutorials write it: conv-BN-ReLU-pool blocks, dropout, a linear head."""

    def __init__(self, classes: int = 10):
        super().__init__()
        def block(i: int, o: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.Conv2d(o, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True),
                                 nn.MaxPool2d(2))
        self.features = nn.Sequential(block(3, 32), block(32, 64), block(64, 128))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout(0.5), nn.Linear(128 * 4 * 4, 256),
                                        nn.ReLU(), nn.Linear(256, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ConvAutoencoder(nn.Module):
    """An MNIST convolutional autoencoder: strided convs down, ConvTranspose up, sigmoid output."""

    def __init__(self):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(32, 64, 7))
        self.decoder = nn.Sequential(nn.ConvTranspose2d(64, 32, 7), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 16, 3, stride=2, padding=1, output_padding=1),
                                     nn.ReLU(),
                                     nn.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1),
                                     nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


class LSTMClassifier(nn.Module):
    """A sentiment classifier: embedding, 2-layer bidirectional LSTM, the last state into a linear head."""

    def __init__(self, vocab: int = 1000, emb: int = 64, hidden: int = 64, classes: int = 2):
        super().__init__()
        self.embedding = nn.Embedding(vocab, emb, padding_idx=0)
        self.lstm = nn.LSTM(emb, hidden, num_layers=2, batch_first=True, bidirectional=True, dropout=0.2)
        self.fc = nn.Linear(2 * hidden, classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embedding(tokens))
        return self.fc(out[:, -1])


class DCGANGenerator(nn.Module):
    """A DCGAN generator: z (batch, nz, 1, 1) -> ConvTranspose-BN-ReLU stack -> tanh image."""

    def __init__(self, nz: int = 64, ngf: int = 32, nc: int = 3):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


def _plain(cls: type) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return cls().eval()
    return build


_UNET1D = dict(sample_size=64, in_channels=2, out_channels=2, block_out_channels=(8, 32, 64),
               down_block_types=("DownBlock1DNoSkip", "DownBlock1D", "AttnDownBlock1D"),
               up_block_types=("AttnUpBlock1D", "UpBlock1D", "UpBlock1DNoSkip"),
               mid_block_type="UNetMidBlock1D", extra_in_channels=16)

MODELS: dict[str, Callable[[], nn.Module]] = {
    # timm CNNs
    "resnet50d": _timm("resnet50d"),
    "seresnext26d": _timm("seresnext26d_32x4d"),
    "regnety_002": _timm("regnety_002"),
    "efficientnetv2_b0": _timm("tf_efficientnetv2_b0"),
    "mobilenetv4_small": _timm("mobilenetv4_conv_small"),
    "ghostnet_050": _timm("ghostnet_050"),
    "rexnet_100": _timm("rexnet_100"),
    "hrnet_w18_small": _timm("hrnet_w18_small"),
    "dla46_c": _timm("dla46_c"),
    "cspresnet50": _timm("cspresnet50"),
    "dpn68": _timm("dpn68"),
    "xception41": _timm("xception41"),
    "nf_resnet26": _timm("nf_resnet26"),
    "vovnet19b_dw": _timm("ese_vovnet19b_dw"),
    "repvit_m1": _timm("repvit_m1"),
    "fastvit_t8": _timm("fastvit_t8"),
    "edgenext_xx_small": _timm("edgenext_xx_small"),
    # timm transformers / hybrids / MLPs
    "pvt_v2_b0": _timm("pvt_v2_b0"),
    "twins_svt": _timm("twins_svt_small", depths=(1, 1, 2, 1)),
    "crossvit_tiny": _timm("crossvit_tiny_240"),
    "eva02_tiny": _timm("eva02_tiny_patch14_224", img_size=112, depth=4),
    "maxvit_nano": _timm("maxvit_nano_rw_256", img_size=128),
    "coatnet_nano": _timm("coatnet_nano_rw_224"),
    "efficientformer_l1": _timm("efficientformer_l1"),
    "tiny_vit_5m": _timm("tiny_vit_5m_224"),
    "levit_128s": _timm("levit_128s"),
    "xcit_nano": _timm("xcit_nano_12_p16_224", depth=4),
    "gmlp_ti16": _timm("gmlp_ti16_224"),
    "poolformer_s12": _timm("poolformer_s12"),
    # torchvision
    "shufflenet_v2_tv": _tv("shufflenet_v2_x0_5", num_classes=10),
    "squeezenet_tv": _tv("squeezenet1_1", num_classes=10),
    "mnasnet_tv": _tv("mnasnet0_5", num_classes=10),
    "regnet_y_400mf_tv": _tv("regnet_y_400mf", num_classes=10),
    "convnext_tiny_tv": _tv("convnext_tiny", num_classes=10),
    "swin_t_tv": _tv("swin_t", num_classes=10),
    "vit_small_tv": _tv_vit,
    "lraspp_tv": _tv("lraspp_mobilenet_v3_large", num_classes=10, weights_backbone=None),
    "fcn_resnet50_tv": _tv("fcn_resnet50", num_classes=10, weights_backbone=None),
    # diffusers
    "unet1d": _diffusers("UNet1DModel", **_UNET1D),
    "unet2d_attn": _diffusers("UNet2DModel", sample_size=16, in_channels=3, out_channels=3,
                              layers_per_block=1, block_out_channels=(32, 64),
                              down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8),
    "vqmodel": _diffusers("VQModel", in_channels=3, out_channels=3, block_out_channels=(32, 64),
                          down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
                          up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4,
                          norm_num_groups=8, num_vq_embeddings=64, sample_size=32),
    "dit_small": _diffusers("DiTTransformer2DModel", num_attention_heads=2, attention_head_dim=16,
                            in_channels=4, num_layers=2, sample_size=8, patch_size=2, num_embeds_ada_norm=10),
    # plain torch.nn programs
    "bn_cnn": _plain(BatchNormCNN),
    "conv_autoencoder": _plain(ConvAutoencoder),
    "lstm_classifier": _plain(LSTMClassifier),
    "dcgan_generator": _plain(DCGANGenerator),
}
