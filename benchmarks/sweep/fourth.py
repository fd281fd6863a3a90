"""A fourth held-out list for ``benchmarks/sweep/run.py``: architectures in none of
``tests/zoo/registry.py``, ``text.py``, ``vision.py``, ``plain.py`` or ``fresh.py``. Built from each
library's config with its own default initialisation (no download), small widths, so every finding
at warning or error severity is a false alarm unless a forward pass shows the defect.

    python benchmarks/sweep/run.py benchmarks/sweep/fourth.py --forms module,onnx --out fourth.jsonl
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh import AUDIO, DEC, ENC, S2S, H, V, _diffusers, _plain, _timm, _tv, hf  # noqa: E402


class Siren(nn.Module):
    """SIREN (Sitzmann et al. 2020): sine activations sin(30·Wx), first layer U(-1/n, 1/n), the
    others U(-sqrt(6/n)/30, sqrt(6/n)/30), as the paper initialises them."""

    def __init__(self, width: int = 64, depth: int = 4, omega: float = 30.0):
        super().__init__()
        self.omega = omega
        self.layers = nn.ModuleList([nn.Linear(2, width)] + [nn.Linear(width, width) for _ in range(depth - 1)])
        self.out = nn.Linear(width, 1)
        with torch.no_grad():
            self.layers[0].weight.uniform_(-1 / 2, 1 / 2)
            for layer in list(self.layers[1:]) + [self.out]:
                bound = math.sqrt(6 / width) / omega
                layer.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.sin(self.omega * layer(x))
        return self.out(x)


class NeRF(nn.Module):
    """NeRF MLP: positional encoding, eight ReLU layers with the input concatenated back at the
    fifth, a density head and a view-conditioned colour head."""

    def __init__(self, width: int = 64, freqs: int = 6):
        super().__init__()
        self.freqs = freqs
        d_in = 3 + 3 * 2 * freqs
        self.trunk = nn.ModuleList([nn.Linear(d_in, width)] + [
            nn.Linear(width + (d_in if i == 5 else 0), width) for i in range(1, 8)])
        self.sigma = nn.Linear(width, 1)
        self.feature = nn.Linear(width, width)
        self.rgb = nn.Sequential(nn.Linear(width + d_in, width // 2), nn.ReLU(), nn.Linear(width // 2, 3))

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        bands = [x] + [f(2.0 ** k * x) for k in range(self.freqs) for f in (torch.sin, torch.cos)]
        return torch.cat(bands, -1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self._encode(x)
        h = p
        for i, layer in enumerate(self.trunk):
            if i == 5:
                h = torch.cat([h, p], -1)
            h = torch.relu(layer(h))
        rgb = torch.sigmoid(self.rgb(torch.cat([self.feature(h), p], -1)))
        return torch.cat([rgb, torch.relu(self.sigma(h))], -1)


class Highway(nn.Module):
    """Highway network (Srivastava et al. 2015): y = T(x)·H(x) + (1 - T(x))·x with the transform
    gate's bias at -2, so each layer starts close to carrying its input."""

    def __init__(self, width: int = 64, depth: int = 10):
        super().__init__()
        self.inp = nn.Linear(20, width)
        self.h = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.t = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        for t in self.t:
            nn.init.constant_(t.bias, -2.0)
        self.out = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.inp(x))
        for h, t in zip(self.h, self.t):
            gate = torch.sigmoid(t(x))
            x = gate * torch.relu(h(x)) + (1 - gate) * x
        return self.out(x)


class ActNormFlow(nn.Module):
    """Glow-style flow steps: ActNorm (per-channel scale and shift), an invertible 1x1 convolution
    initialised as a random rotation (QR of a Gaussian), an affine coupling whose last conv is
    zero-initialised so every step starts as the identity."""

    def __init__(self, channels: int = 8, steps: int = 4, hidden: int = 32):
        super().__init__()
        self.scales = nn.ParameterList(nn.Parameter(torch.ones(1, channels, 1, 1)) for _ in range(steps))
        self.shifts = nn.ParameterList(nn.Parameter(torch.zeros(1, channels, 1, 1)) for _ in range(steps))
        self.mix = nn.ModuleList()
        self.nets = nn.ModuleList()
        for _ in range(steps):
            conv = nn.Conv2d(channels, channels, 1, bias=False)
            with torch.no_grad():
                conv.weight.copy_(torch.linalg.qr(torch.randn(channels, channels))[0][:, :, None, None])
            self.mix.append(conv)
            last = nn.Conv2d(hidden, channels, 3, padding=1)
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
            self.nets.append(nn.Sequential(nn.Conv2d(channels // 2, hidden, 3, padding=1), nn.ReLU(),
                                           nn.Conv2d(hidden, hidden, 1), nn.ReLU(), last))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logdet = x.new_zeros(x.shape[0])
        for scale, shift, mix, net in zip(self.scales, self.shifts, self.mix, self.nets):
            x = mix(x * scale + shift)
            a, b = x.chunk(2, 1)
            log_s, t = net(a).chunk(2, 1)
            b = b * torch.exp(torch.tanh(log_s)) + t
            logdet = logdet + torch.tanh(log_s).flatten(1).sum(1)
            x = torch.cat([a, b], 1)
        return x.flatten(1).sum(1) + logdet


class ResMLP(nn.Module):
    """ResMLP-style blocks on a token sequence: Affine (alpha·x + beta) in place of norms, a
    token-mixing linear and a channel MLP, each branch behind a LayerScale of 0.1."""

    def __init__(self, tokens: int = 16, dim: int = 32, depth: int = 4):
        super().__init__()
        self.embed = nn.Linear(12, dim)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.alpha1, block.beta1 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
            block.alpha2, block.beta2 = nn.Parameter(torch.ones(dim)), nn.Parameter(torch.zeros(dim))
            block.tokens = nn.Linear(tokens, tokens)
            block.fc1, block.fc2 = nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)
            block.ls1, block.ls2 = nn.Parameter(0.1 * torch.ones(dim)), nn.Parameter(0.1 * torch.ones(dim))
            self.blocks.append(block)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        for b in self.blocks:
            y = b.alpha1 * x + b.beta1
            x = x + b.ls1 * b.tokens(y.transpose(1, 2)).transpose(1, 2)
            y = b.alpha2 * x + b.beta2
            x = x + b.ls2 * b.fc2(nn.functional.gelu(b.fc1(y)))
        return self.head(x.mean(1))


class MoEMLP(nn.Module):
    """A top-2 mixture-of-experts MLP stack as written by hand: a router, experts of two linears
    with GELU, weighted sum of the chosen experts, residual and pre-LayerNorm."""

    def __init__(self, dim: int = 32, experts: int = 4, depth: int = 3):
        super().__init__()
        self.embed = nn.Embedding(100, dim)
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(depth))
        self.routers = nn.ModuleList(nn.Linear(dim, experts, bias=False) for _ in range(depth))
        self.experts = nn.ModuleList(
            nn.ModuleList(nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
                          for _ in range(experts)) for _ in range(depth))
        self.head = nn.Linear(dim, 100)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        for norm, router, experts in zip(self.norms, self.routers, self.experts):
            y = norm(x)
            weights, chosen = router(y).softmax(-1).topk(2, -1)
            out = torch.zeros_like(y)
            for e, expert in enumerate(experts):
                w = (weights * (chosen == e)).sum(-1, keepdim=True)
                out = out + w * expert(y)
            x = x + out
        return self.head(x)


class SetTransformer(nn.Module):
    """Set Transformer (Lee et al. 2019): induced set attention blocks and pooling by multihead
    attention with a learned seed vector."""

    def __init__(self, dim: int = 32, inducing: int = 8):
        super().__init__()
        self.embed = nn.Linear(3, dim)
        self.inducing = nn.Parameter(torch.empty(1, inducing, dim))
        nn.init.xavier_uniform_(self.inducing)
        self.att1 = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.att2 = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))
        self.seed = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.xavier_uniform_(self.seed)
        self.pool = nn.MultiheadAttention(dim, 4, batch_first=True)
        self.head = nn.Linear(dim, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        ind = self.inducing.expand(x.shape[0], -1, -1)
        h = self.att1(ind, x, x, need_weights=False)[0]
        x = x + self.att2(x, h, h, need_weights=False)[0]
        x = x + self.ff(x)
        seed = self.seed.expand(x.shape[0], -1, -1)
        return self.head(self.pool(seed, x, x, need_weights=False)[0].squeeze(1))


class WideDeep(nn.Module):
    """Wide & Deep recommender: a wide linear on one-hot crosses plus a deep MLP on embeddings."""

    def __init__(self, fields: int = 6, vocab: int = 50, dim: int = 8):
        super().__init__()
        self.wide = nn.EmbeddingBag(fields * vocab, 1, mode="sum")
        self.embeds = nn.ModuleList(nn.Embedding(vocab, dim) for _ in range(fields))
        self.deep = nn.Sequential(nn.Linear(fields * dim, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                                  nn.Linear(32, 1))
        self.vocab = vocab

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        offsets = torch.arange(ids.shape[1], device=ids.device) * self.vocab
        wide = self.wide(ids + offsets)
        deep = self.deep(torch.cat([e(ids[:, i]) for i, e in enumerate(self.embeds)], -1))
        return torch.sigmoid(wide + deep)


class VQVAE(nn.Module):
    """VQ-VAE: conv encoder, a codebook initialised U(-1/K, 1/K) as in the reference code, nearest
    code with a straight-through estimator, conv-transpose decoder."""

    def __init__(self, codes: int = 64, dim: int = 16):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 32, 4, 2, 1), nn.ReLU(), nn.Conv2d(32, dim, 4, 2, 1))
        self.codebook = nn.Embedding(codes, dim)
        self.codebook.weight.data.uniform_(-1 / codes, 1 / codes)
        self.decoder = nn.Sequential(nn.ConvTranspose2d(dim, 32, 4, 2, 1), nn.ReLU(),
                                     nn.ConvTranspose2d(32, 3, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.encoder(x).permute(0, 2, 3, 1)
        d = (z.unsqueeze(-2) - self.codebook.weight).pow(2).sum(-1)
        q = self.codebook(d.argmin(-1))
        loss = (q - z.detach()).pow(2).mean() + (q.detach() - z).pow(2).mean() * 0.25
        q = z + (q - z).detach()  # straight through: the decoder's error reaches the encoder
        return self.decoder(q.permute(0, 3, 1, 2)).mean() + loss


class ForgetBiasLSTM(nn.Module):
    """A two-layer LSTM classifier with the forget-gate bias set to 1 (Jozefowicz et al. 2015)."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.embed = nn.Embedding(200, dim)
        self.lstm = nn.LSTM(dim, dim, num_layers=2, batch_first=True)
        for name, p in self.lstm.named_parameters():
            if "bias_ih" in name:
                with torch.no_grad():
                    p[dim:2 * dim].fill_(1.0)
        self.head = nn.Linear(dim, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.lstm(self.embed(ids))[0][:, -1])


class SpectralNormDiscriminator(nn.Module):
    """SN-GAN discriminator: every conv and the linear under spectral normalisation, LeakyReLU(0.1)."""

    def __init__(self):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.net = nn.Sequential(
            sn(nn.Conv2d(3, 32, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(32, 64, 4, 2, 1)), nn.LeakyReLU(0.1),
            sn(nn.Conv2d(64, 64, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(64, 128, 4, 2, 1)), nn.LeakyReLU(0.1))
        self.out = sn(nn.Linear(128 * 8 * 8, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.net(x).flatten(1))


class FTTransformer(nn.Module):
    """FT-Transformer for tabular data: each numeric feature x_j becomes x_j·w_j + b_j (a per-feature
    token, weights N(0, 1/d)), a CLS token, pre-norm transformer layers, a head on CLS."""

    def __init__(self, features: int = 8, dim: int = 32):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(features, dim) / math.sqrt(dim))
        self.bias = nn.Parameter(torch.randn(features, dim) / math.sqrt(dim))
        self.cls = nn.Parameter(torch.randn(1, 1, dim) / math.sqrt(dim))
        layer = nn.TransformerEncoderLayer(dim, 4, 64, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.unsqueeze(-1) * self.weight + self.bias
        tokens = torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1)
        return self.head(self.encoder(tokens)[:, 0])


_PRIOR = dict(num_attention_heads=2, attention_head_dim=16, num_layers=2, embedding_dim=16, num_embeddings=4,
              additional_embeddings=4)

MODELS: dict[str, Callable[[], nn.Module]] = {
    # decoder-only
    "cohere": hf("CohereConfig", "CohereForCausalLM", **DEC, num_key_value_heads=2),
    "gpt_bigcode": hf("GPTBigCodeConfig", "GPTBigCodeForCausalLM", vocab_size=V, n_embd=H, n_layer=2, n_head=4,
                      n_positions=64, multi_query=True),
    "mamba2": hf("Mamba2Config", "Mamba2ForCausalLM", vocab_size=V, hidden_size=H, num_hidden_layers=2,
                 state_size=8, expand=2, head_dim=8, num_heads=8, n_groups=1, chunk_size=16),
    "olmoe": hf("OlmoeConfig", "OlmoeForCausalLM", **DEC, num_key_value_heads=2, num_experts=4,
                num_experts_per_tok=2),
    "deepseek_v3": hf("DeepseekV3Config", "DeepseekV3ForCausalLM", **DEC, num_key_value_heads=4,
                      moe_intermediate_size=16, n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2,
                      n_group=1, topk_group=1, first_k_dense_replace=1, kv_lora_rank=16, q_lora_rank=16,
                      qk_rope_head_dim=4, qk_nope_head_dim=4, v_head_dim=8),
    "recurrent_gemma": hf("RecurrentGemmaConfig", "RecurrentGemmaForCausalLM", vocab_size=V, hidden_size=H,
                          intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=1,
                          lru_width=H, attention_window_size=16, block_types=("recurrent", "recurrent", "attention")),
    "jamba": hf("JambaConfig", "JambaForCausalLM", **DEC, num_key_value_heads=2, num_experts=2,
                num_experts_per_tok=1, attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2,
                expert_layer_offset=1, mamba_d_state=8, mamba_expand=2, use_mamba_kernels=False),
    "dbrx": hf("DbrxConfig", "DbrxForCausalLM", vocab_size=V, d_model=H, n_layers=2, n_heads=4, max_seq_len=64,
               attn_config=dict(kv_n_heads=2, rope_theta=10000.0, clip_qkv=8.0), ffn_config=dict(ffn_hidden_size=64, moe_num_experts=4, moe_top_k=2)),
    # encoders
    "layoutlm": hf("LayoutLMConfig", "LayoutLMForMaskedLM", **ENC),
    "xmod": hf("XmodConfig", "XmodForMaskedLM", **ENC, languages=("en_XX",), default_language="en_XX",
               pad_token_id=1),
    "splinter": hf("SplinterConfig", "SplinterForQuestionAnswering", **ENC),
    "yoso": hf("YosoConfig", "YosoForMaskedLM", **ENC, use_expectation=True),
    # encoder-decoders
    "pegasus_x": hf("PegasusXConfig", "PegasusXForConditionalGeneration", **S2S, block_size=8,
                    num_global_tokens=4),
    "switch_transformers": hf("SwitchTransformersConfig", "SwitchTransformersForConditionalGeneration",
                              vocab_size=V, d_model=H, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                              num_heads=4, num_experts=4, encoder_sparse_step=2, decoder_sparse_step=2,
                              decoder_start_token_id=0),
    "speech_to_text": hf("Speech2TextConfig", "Speech2TextForConditionalGeneration", **S2S,
                         input_feat_per_channel=16, conv_channels=32, max_source_positions=64,
                         max_target_positions=64),
    # audio
    "sew_d": hf("SEWDConfig", "SEWDForCTC", **AUDIO),
    "encodec": hf("EncodecConfig", "EncodecModel", num_filters=8, hidden_size=16, upsampling_ratios=[4, 2],
                  codebook_size=64, num_lstm_layers=1, target_bandwidths=[24.0]),
    "unispeech_sat": hf("UniSpeechSatConfig", "UniSpeechSatForCTC", **AUDIO),
    # vision (transformers)
    "dpt": hf("DPTConfig", "DPTForDepthEstimation", hidden_size=H, num_hidden_layers=4, num_attention_heads=4,
              intermediate_size=64, image_size=32, patch_size=8, backbone_out_indices=[0, 1, 2, 3],
              neck_hidden_sizes=[16, 16, 32, 32], fusion_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5]),
    "mobilevitv2": hf("MobileViTV2Config", "MobileViTV2ForImageClassification", image_size=64, width_multiplier=0.5,
                      num_labels=10),
    "pvt": hf("PvtConfig", "PvtForImageClassification", image_size=64, hidden_sizes=[16, 32, 64, 64],
              depths=[1, 1, 1, 1], num_attention_heads=[1, 2, 4, 4], num_labels=10),
    "glpn": hf("GLPNConfig", "GLPNForDepthEstimation", hidden_sizes=[16, 32, 64, 64], depths=[1, 1, 1, 1],
               num_attention_heads=[1, 2, 4, 4], decoder_hidden_size=16),
    "hiera": hf("HieraConfig", "HieraForImageClassification", embed_dim=16, image_size=[64, 64], depths=[1, 1, 1, 1],
                num_heads=[1, 2, 4, 8], num_labels=10),
    "vilt": hf("ViltConfig", "ViltForMaskedLM", vocab_size=V, hidden_size=H, num_hidden_layers=2,
               num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8, max_position_embeddings=40),
    "swinv2_hf": hf("Swinv2Config", "Swinv2ForImageClassification", image_size=32, patch_size=4, embed_dim=16,
                    depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=10),
    "vit_msn": hf("ViTMSNConfig", "ViTMSNForImageClassification", image_size=32, patch_size=8, hidden_size=H,
                  num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, num_labels=10),
    # timm
    "resnetv2_50": _timm("resnetv2_50"),
    "inception_v3_timm": _timm("inception_v3"),
    "mixnet_s": _timm("mixnet_s"),
    "lcnet_050": _timm("lcnet_050"),
    "convit_tiny": _timm("convit_tiny"),
    "visformer_tiny": _timm("visformer_tiny"),
    "halonet26t": _timm("halonet26t"),
    "botnet26t": _timm("botnet26t_256"),
    "davit_tiny": _timm("davit_tiny", depths=(1, 1, 1, 1)),
    "inception_next_tiny": _timm("inception_next_tiny", depths=(1, 1, 1, 1)),
    "starnet_s1": _timm("starnet_s1"),
    "selecsls42b": _timm("selecsls42b"),
    "gernet_s": _timm("gernet_s"),
    "rdnet_tiny": _timm("rdnet_tiny"),
    # torchvision
    "inception_v3_tv": _tv("inception_v3", num_classes=10, aux_logits=True, init_weights=True),
    "mobilenet_v3_large_tv": _tv("mobilenet_v3_large", num_classes=10),
    "vgg16_bn_tv": _tv("vgg16_bn", num_classes=10),
    "regnet_x_400mf_tv": _tv("regnet_x_400mf", num_classes=10),
    "efficientnet_v2_s_tv": _tv("efficientnet_v2_s", num_classes=10),
    "swin_v2_t_tv": _tv("swin_v2_t", num_classes=10),
    "deeplabv3_mbv3_tv": _tv("deeplabv3_mobilenet_v3_large", num_classes=5, weights_backbone=None),
    "s3d_tv": _tv("s3d", num_classes=10),
    # diffusers
    "prior_transformer": _diffusers("PriorTransformer", **_PRIOR),
    "auraflow": _diffusers("AuraFlowTransformer2DModel", sample_size=8, patch_size=2, in_channels=4,
                           num_mmdit_layers=1, num_single_dit_layers=1, attention_head_dim=8, num_attention_heads=2,
                           joint_attention_dim=32, caption_projection_dim=16, out_channels=4, pos_embed_max_size=64),
    "sana": _diffusers("SanaTransformer2DModel", in_channels=4, out_channels=4, num_attention_heads=2,
                       attention_head_dim=8, num_layers=2, num_cross_attention_heads=2,
                       cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16, sample_size=8,
                       patch_size=1),
    "unet2d_skip": _diffusers("UNet2DModel", sample_size=16, in_channels=3, out_channels=3, layers_per_block=1,
                              block_out_channels=(32, 64), down_block_types=("SkipDownBlock2D", "AttnSkipDownBlock2D"),
                              up_block_types=("AttnSkipUpBlock2D", "SkipUpBlock2D"), norm_num_groups=8,
                              attention_head_dim=8),
    # plain torch.nn programs
    "siren": _plain(Siren),
    "nerf": _plain(NeRF),
    "highway": _plain(Highway),
    "actnorm_flow": _plain(ActNormFlow),
    "resmlp": _plain(ResMLP),
    "moe_mlp": _plain(MoEMLP),
    "set_transformer": _plain(SetTransformer),
    "wide_deep": _plain(WideDeep),
    "vqvae": _plain(VQVAE),
    "forget_bias_lstm": _plain(ForgetBiasLSTM),
    "sn_discriminator": _plain(SpectralNormDiscriminator),
    "ft_transformer": _plain(FTTransformer),
}
