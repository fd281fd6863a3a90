"""A third held-out list for ``benchmarks/sweep/run.py``: architectures in none of
``tests/zoo/registry.py``, ``text.py``, ``vision.py`` or ``plain.py``. Built from each library's
config with its own default initialisation (no download), small widths, so every finding at
warning or error severity is a false alarm unless a forward pass shows the defect.

    python benchmarks/sweep/run.py benchmarks/sweep/fresh.py --forms module,onnx --out fresh.jsonl
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

V, H = 128, 32
DEC = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
           max_position_embeddings=64)
ENC = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
           max_position_embeddings=64)
S2S = dict(vocab_size=V, d_model=H, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
           pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
AUDIO = dict(vocab_size=32, hidden_size=H, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=4)


def hf(config_cls: str, model_cls: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kw)).eval()
    build.__name__ = model_cls
    return build


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


def _diffusers(cls: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import diffusers

        return getattr(diffusers, cls)(**kw).eval()
    return build


class WaveNet(nn.Module):
    """WaveNet-style stack: dilated causal convs, tanh * sigmoid gates, residual and skip 1x1s."""

    def __init__(self, channels: int = 32, layers: int = 8):
        super().__init__()
        self.inp = nn.Conv1d(1, channels, 1)
        self.filters = nn.ModuleList(nn.Conv1d(channels, channels, 2, dilation=2 ** (i % 4)) for i in range(layers))
        self.gates = nn.ModuleList(nn.Conv1d(channels, channels, 2, dilation=2 ** (i % 4)) for i in range(layers))
        self.res = nn.ModuleList(nn.Conv1d(channels, channels, 1) for _ in range(layers))
        self.out = nn.Sequential(nn.ReLU(), nn.Conv1d(channels, channels, 1), nn.ReLU(), nn.Conv1d(channels, 16, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.inp(x)
        skip = 0
        for f, g, r in zip(self.filters, self.gates, self.res):
            d = f.dilation[0]
            z = torch.tanh(f(nn.functional.pad(h, (d, 0)))) * torch.sigmoid(g(nn.functional.pad(h, (d, 0))))
            z = r(z)
            h = h + z
            skip = skip + z
        return self.out(skip)


class RealNVPCoupling(nn.Module):
    """RealNVP affine couplings as flows are written: the scale/shift net's last layer zero-initialised."""

    def __init__(self, dim: int = 8, hidden: int = 64, blocks: int = 4):
        super().__init__()
        self.nets = nn.ModuleList()
        for _ in range(blocks):
            net = nn.Sequential(nn.Linear(dim // 2, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                nn.Linear(hidden, dim))
            nn.init.zeros_(net[-1].weight)
            nn.init.zeros_(net[-1].bias)
            self.nets.append(net)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, net in enumerate(self.nets):
            a, b = x.chunk(2, dim=1)
            if i % 2:
                a, b = b, a
            s, t = net(a).chunk(2, dim=1)
            b = b * torch.exp(torch.tanh(s)) + t
            x = torch.cat([a, b], dim=1) if i % 2 == 0 else torch.cat([b, a], dim=1)
        return x


class TCN(nn.Module):
    """Temporal convolutional network (Bai et al.): weight-normed dilated convs, N(0, 0.01) init."""

    def __init__(self, channels: int = 32, levels: int = 4):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i in range(levels):
            cin = 1 if i == 0 else channels
            c1 = nn.utils.parametrizations.weight_norm(nn.Conv1d(cin, channels, 3, dilation=2 ** i))
            c2 = nn.utils.parametrizations.weight_norm(nn.Conv1d(channels, channels, 3, dilation=2 ** i))
            down = nn.Conv1d(cin, channels, 1) if cin != channels else None
            for conv in (c1, c2):
                conv.parametrizations.weight.original1.data.normal_(0, 0.01)
            if down is not None:
                down.weight.data.normal_(0, 0.01)
            self.blocks.append(nn.ModuleList([c1, c2, down] if down is not None else [c1, c2]))
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            c1, c2 = block[0], block[1]
            d = c1.dilation[0] * 2
            h = torch.relu(c1(nn.functional.pad(x, (d, 0))))
            h = torch.relu(c2(nn.functional.pad(h, (d, 0))))
            res = block[2](x) if len(block) == 3 else x
            x = torch.relu(h + res)
        return self.head(x[:, :, -1])


class PixelCNN(nn.Module):
    """PixelCNN with type-A/B masked convolutions (a mask buffer multiplied into the kernel)."""

    class Masked(nn.Conv2d):
        def __init__(self, kind: str, *a, **kw):
            super().__init__(*a, **kw)
            mask = torch.ones_like(self.weight)
            k = self.kernel_size[0]
            mask[:, :, k // 2, k // 2 + (kind == "B"):] = 0
            mask[:, :, k // 2 + 1:] = 0
            self.register_buffer("mask", mask)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return nn.functional.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)

    def __init__(self, channels: int = 32, layers: int = 5):
        super().__init__()
        mods: list[nn.Module] = [self.Masked("A", 1, channels, 7, padding=3), nn.BatchNorm2d(channels), nn.ReLU()]
        for _ in range(layers):
            mods += [self.Masked("B", channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU()]
        mods.append(nn.Conv2d(channels, 256, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class GCN(nn.Module):
    """Two-layer graph convolution (Kipf & Welling) over a dense normalised adjacency buffer."""

    def __init__(self, nodes: int = 20, features: int = 16, hidden: int = 32, classes: int = 4):
        super().__init__()
        a = (torch.rand(nodes, nodes, generator=torch.Generator().manual_seed(0)) < 0.2).float()
        a = ((a + a.T) > 0).float() + torch.eye(nodes)
        d = a.sum(1).rsqrt()
        self.register_buffer("adj", d[:, None] * a * d[None, :])
        self.w1 = nn.Linear(features, hidden)
        self.w2 = nn.Linear(hidden, classes)
        nn.init.xavier_uniform_(self.w1.weight)
        nn.init.xavier_uniform_(self.w2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.adj @ self.w1(x))
        return self.adj @ self.w2(nn.functional.dropout(h, 0.5, self.training))


class DLRM(nn.Module):
    """DLRM-style recommender: embedding bags for sparse ids, a bottom MLP, dot interactions, a top MLP."""

    def __init__(self, tables: int = 3, rows: int = 100, dim: int = 16):
        super().__init__()
        self.embs = nn.ModuleList(nn.EmbeddingBag(rows, dim, mode="sum") for _ in range(tables))
        self.bottom = nn.Sequential(nn.Linear(13, 64), nn.ReLU(), nn.Linear(64, dim), nn.ReLU())
        n = tables + 1
        self.top = nn.Sequential(nn.Linear(dim + n * (n - 1) // 2, 64), nn.ReLU(), nn.Linear(64, 1))

    def forward(self, dense: torch.Tensor, sparse: torch.Tensor) -> torch.Tensor:
        x = self.bottom(dense)
        feats = [x] + [emb(sparse[:, i:i + 1]) for i, emb in enumerate(self.embs)]
        t = torch.stack(feats, 1)
        z = t @ t.transpose(1, 2)
        i, j = torch.triu_indices(t.shape[1], t.shape[1], 1)
        return torch.sigmoid(self.top(torch.cat([x, z[:, i, j]], 1)))


def _plain(cls: type) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        return cls().eval()
    return build


def _convmixer() -> nn.Module:
    from timm.models.convmixer import ConvMixer

    return ConvMixer(dim=128, depth=4, kernel_size=9, patch_size=7, num_classes=10).eval()


_UNET_COND = dict(sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                  down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=32,
                  attention_head_dim=8, norm_num_groups=8)

MODELS: dict[str, Callable[[], nn.Module]] = {
    # decoder-only
    "mixtral": hf("MixtralConfig", "MixtralForCausalLM", **DEC, num_key_value_heads=2, num_local_experts=4,
                  num_experts_per_tok=2),
    "nemotron": hf("NemotronConfig", "NemotronForCausalLM", **DEC, num_key_value_heads=2),
    "glm": hf("GlmConfig", "GlmForCausalLM", **DEC, num_key_value_heads=2, head_dim=8, pad_token_id=0,
               eos_token_id=2),
    "helium": hf("HeliumConfig", "HeliumForCausalLM", **DEC, num_key_value_heads=2, head_dim=8),
    "biogpt": hf("BioGptConfig", "BioGptForCausalLM", **DEC),
    "ctrl": hf("CTRLConfig", "CTRLLMHeadModel", vocab_size=V, n_embd=H, n_layer=2, n_head=4, dff=64,
               n_positions=64),
    "gemma3_text": hf("Gemma3TextConfig", "Gemma3ForCausalLM", **DEC, num_key_value_heads=2, head_dim=8,
                      sliding_window=16),
    "falcon_mamba": hf("FalconMambaConfig", "FalconMambaForCausalLM", vocab_size=V, hidden_size=H,
                       state_size=8, num_hidden_layers=2, expand=2, conv_kernel=4),
    "rwkv": hf("RwkvConfig", "RwkvForCausalLM", vocab_size=V, hidden_size=H, num_hidden_layers=2,
               attention_hidden_size=H, intermediate_size=64, context_length=64),
    # encoders
    "mobilebert": hf("MobileBertConfig", "MobileBertForMaskedLM", **ENC, embedding_size=16, intra_bottleneck_size=16,
                     true_hidden_size=16, num_feedforward_networks=2),
    "deberta": hf("DebertaConfig", "DebertaForMaskedLM", **ENC),
    "fnet": hf("FNetConfig", "FNetForMaskedLM", vocab_size=V, hidden_size=H, intermediate_size=64,
               num_hidden_layers=2, max_position_embeddings=64),
    "nystromformer": hf("NystromformerConfig", "NystromformerForMaskedLM", **ENC, num_landmarks=4,
                        segment_means_seq_len=8),
    "canine": hf("CanineConfig", "CanineModel", hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64, num_hash_functions=4, num_hash_buckets=64, downsampling_rate=4,
                 max_position_embeddings=128),
    "ernie": hf("ErnieConfig", "ErnieForMaskedLM", **ENC),
    # encoder-decoders
    "m2m100": hf("M2M100Config", "M2M100ForConditionalGeneration", **S2S),
    "plbart": hf("PLBartConfig", "PLBartForConditionalGeneration", **S2S),
    "umt5": hf("UMT5Config", "UMT5ForConditionalGeneration", vocab_size=V, d_model=H, d_kv=8, d_ff=64,
               num_layers=2, num_heads=4, decoder_start_token_id=0),
    "longt5": hf("LongT5Config", "LongT5ForConditionalGeneration", vocab_size=V, d_model=H, d_kv=8, d_ff=64,
                 num_layers=2, num_heads=4, decoder_start_token_id=0, local_radius=4),
    # audio
    "unispeech": hf("UniSpeechConfig", "UniSpeechForCTC", **AUDIO),
    "wav2vec2_conformer": hf("Wav2Vec2ConformerConfig", "Wav2Vec2ConformerForCTC", **AUDIO,
                             conv_depthwise_kernel_size=7),
    "ast": hf("ASTConfig", "ASTForAudioClassification", hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64, num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=16,
              time_stride=16, num_labels=10),
    # vision (transformers)
    "cvt": hf("CvtConfig", "CvtForImageClassification", embed_dim=[16, 32, 64], num_heads=[1, 2, 4],
              depth=[1, 2, 3], num_labels=10),  # transformers indexes drop-path rates by stage
    "focalnet": hf("FocalNetConfig", "FocalNetForImageClassification", embed_dim=16, depths=[1, 1],
                   hidden_sizes=[16, 32], image_size=32, patch_size=4, num_labels=10),
    "mobilenet_v2_hf": hf("MobileNetV2Config", "MobileNetV2ForImageClassification", depth_multiplier=0.35,
                          image_size=64, num_labels=10),
    "efficientnet_hf": hf("EfficientNetConfig", "EfficientNetForImageClassification", width_coefficient=0.25,
                          depth_coefficient=0.25, hidden_dim=320, image_size=64, num_labels=10),
    "yolos": hf("YolosConfig", "YolosForObjectDetection", hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                intermediate_size=64, image_size=[32, 32], patch_size=8, num_detection_tokens=4),
    "data2vec_vision": hf("Data2VecVisionConfig", "Data2VecVisionForImageClassification", image_size=32,
                          patch_size=8, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
                          intermediate_size=64, num_labels=10),
    "patchtst": hf("PatchTSTConfig", "PatchTSTForPrediction", num_input_channels=3, context_length=32,
                   patch_length=8, patch_stride=8, prediction_length=8, d_model=H, num_hidden_layers=2,
                   num_attention_heads=4, ffn_dim=64),
    "blip": hf("BlipConfig", "BlipForImageTextRetrieval",
               text_config=dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                num_attention_heads=4, max_position_embeddings=32, encoder_hidden_size=H),
               vision_config=dict(image_size=32, patch_size=8, hidden_size=H, intermediate_size=64,
                                  num_hidden_layers=2, num_attention_heads=4), projection_dim=32,
               image_text_hidden_size=32),
    # timm
    "resnest14d": _timm("resnest14d"),
    "convmixer": _convmixer,
    "sequencer2d_s": _timm("sequencer2d_s", layers=[1, 1, 1, 1]),
    "mobileone_s0": _timm("mobileone_s0"),
    "pit_ti": _timm("pit_ti_224"),
    "hgnetv2_b0": _timm("hgnetv2_b0"),
    "mambaout_femto": _timm("mambaout_femto"),
    "efficientvit_b0": _timm("efficientvit_b0"),
    # torchvision
    "alexnet_tv": _tv("alexnet", num_classes=10),
    "efficientnet_b0_tv": _tv("efficientnet_b0", num_classes=10),
    "resnext50_tv": _tv("resnext50_32x4d", num_classes=10),
    "r3d_18_tv": _tv("r3d_18", num_classes=10),
    "maxvit_t_tv": _tv("maxvit_t", num_classes=10),
    # diffusers
    "unet2d_cond": _diffusers("UNet2DConditionModel", **_UNET_COND),
    "autoencoder_tiny": _diffusers("AutoencoderTiny", encoder_block_out_channels=(16, 16, 16, 16),
                                   decoder_block_out_channels=(16, 16, 16, 16), num_encoder_blocks=(1, 1, 1, 1),
                                   num_decoder_blocks=(1, 1, 1, 1)),
    "pixart": _diffusers("PixArtTransformer2DModel", num_attention_heads=2, attention_head_dim=16, in_channels=4,
                         out_channels=8, num_layers=2, sample_size=8, patch_size=2, cross_attention_dim=32,
                         caption_channels=32),
    "sd3": _diffusers("SD3Transformer2DModel", sample_size=8, patch_size=2, in_channels=4, num_layers=2,
                      attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                      caption_projection_dim=32, pooled_projection_dim=16, out_channels=4, pos_embed_max_size=16),
    "flux": _diffusers("FluxTransformer2DModel", patch_size=1, in_channels=16, num_layers=1,
                       num_single_layers=1, attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                       pooled_projection_dim=16, axes_dims_rope=(4, 6, 6)),
    "t2i_adapter": _diffusers("T2IAdapter", in_channels=3, channels=(32, 64), num_res_blocks=1, downscale_factor=8),
    # plain torch.nn programs
    "wavenet": _plain(WaveNet),
    "realnvp": _plain(RealNVPCoupling),
    "tcn": _plain(TCN),
    "pixelcnn": _plain(PixelCNN),
    "gcn": _plain(GCN),
    "dlrm": _plain(DLRM),
}
