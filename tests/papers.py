"""Published initialisation schemes written as people write them in plain torch.nn code, and the
textbook defects they guard against (issue 8).

Each builder is seeded and small (CPU tests) with the depth the scheme is about. ``SCHEMES`` are
legitimate (no error, no unproven warning); ``DEFECTS`` each carry one real defect. ``inputs(name)``
gives the probe batch each model reads.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations as P

from papers_seq import (  # noqa: F401  (re-exported: tests call papers.<builder>)
    W, CausalConv, Highway, MaskedConv2d, NeRF, SeqModel, Sine, TCNBlock, WaveNetBlock, chrono_lstm,
    dcgan_generator, delta_orthogonal, highway, irnn, lstm_forget1, lsuv, nerf, pixelcnn, selu_lecun, siren,
    tcn, wavenet)


# --- residual schemes -------------------------------------------------------------------------

class FixupBlock(nn.Module):
    """Fixup (Zhang et al. 2019): scalar biases before each layer, a scalar multiplier, no norm."""

    def __init__(self, c: int):
        super().__init__()
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)

    def forward(self, x):
        out = F.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        return F.relu(out + x)


class FixupNet(nn.Module):
    def __init__(self, blocks: int = 8, c: int = 16, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.bias1 = nn.Parameter(torch.zeros(1))
        self.layers = nn.Sequential(*[FixupBlock(c) for _ in range(blocks)])
        self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(c, classes)
        m = 2  # layers per branch
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        for b in self.layers:
            w = b.conv1.weight
            nn.init.normal_(w, 0, math.sqrt(2 / (w.shape[0] * w[0].numel())) * blocks ** (-1 / (2 * m - 2)))
            nn.init.zeros_(b.conv2.weight)
        nn.init.zeros_(self.fc.weight)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x):
        x = F.relu(self.conv(x) + self.bias1)
        x = self.layers(x)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x + self.bias2)


def fixup() -> nn.Module:
    torch.manual_seed(0)
    return FixupNet()


class AlphaResidualMLP(nn.Module):
    """ReZero (Bachlechner et al. 2020): x + alpha * f(x), alpha a scalar at 0, no norm."""

    def __init__(self, depth: int = 16, width: int = W, d_in: int = 32, classes: int = 10):
        super().__init__()
        self.inp = nn.Linear(d_in, width)
        self.fc1 = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.fc2 = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        self.alpha = nn.ParameterList(nn.Parameter(torch.zeros(1)) for _ in range(depth))
        self.head = nn.Linear(width, classes)
        for lin in [self.inp, *self.fc1, *self.fc2]:
            nn.init.xavier_normal_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x):
        x = self.inp(x)
        for fc1, fc2, a in zip(self.fc1, self.fc2, self.alpha):
            x = x + a * fc2(F.relu(fc1(x)))
        return self.head(x)


def rezero() -> nn.Module:
    torch.manual_seed(0)
    return AlphaResidualMLP()


class SkipInitBlock(nn.Module):
    """SkipInit (De & Smith 2020): a conv ResNet block without BatchNorm, x + alpha * f(x), alpha = 0."""

    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.alpha = nn.Parameter(torch.zeros(()))
        for conv in (self.conv1, self.conv2):
            nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
            nn.init.zeros_(conv.bias)

    def forward(self, x):
        return x + self.alpha * self.conv2(F.relu(self.conv1(F.relu(x))))


def skipinit(blocks: int = 8, c: int = 16) -> nn.Module:
    torch.manual_seed(0)
    stem = nn.Conv2d(3, c, 3, padding=1)
    nn.init.kaiming_normal_(stem.weight, nonlinearity="relu")
    nn.init.zeros_(stem.bias)
    return nn.Sequential(stem, *[SkipInitBlock(c) for _ in range(blocks)], nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


class Attention(nn.Module):
    """Multi-head self-attention with separate q/k/v/o projections; ``scale`` multiplies QK^T."""

    def __init__(self, d: int, heads: int, scale: float | None = None, head_scale: bool = False):
        super().__init__()
        self.h, self.dh = heads, d // heads
        self.scale = scale if scale is not None else self.dh ** -0.5
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        # NormFormer's head scale: one learned gain per head before the output projection
        self.head_scale = nn.Parameter(torch.ones(heads, 1, 1)) if head_scale else None

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = (p(x).view(b, t, self.h, self.dh).transpose(1, 2) for p in (self.q, self.k, self.v))
        w = torch.softmax(q @ k.transpose(-1, -2) * self.scale, dim=-1)
        heads = w @ v if self.head_scale is None else (w @ v) * self.head_scale
        return self.o(heads.transpose(1, 2).reshape(b, t, d))


class TBlock(nn.Module):
    """A transformer block in one of the layouts the papers use (``norm``: pre, post, none, normformer)."""

    def __init__(self, d: int, heads: int, norm: str = "pre", alpha: float = 1.0, scale: float | None = None):
        super().__init__()
        self.norm, self.alpha = norm, alpha
        self.attn = Attention(d, heads, scale, head_scale=norm == "normformer")
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)
        if norm != "none":
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        if norm == "normformer":  # Shleifer et al. 2021: a norm after attention and after the FFN's act
            self.ln_attn, self.ln_ffn = nn.LayerNorm(d), nn.LayerNorm(4 * d)

    def ffn(self, x):
        h = F.gelu(self.fc1(x))
        return self.fc2(self.ln_ffn(h) if self.norm == "normformer" else h)

    def forward(self, x):
        if self.norm == "post":  # DeepNorm: LN(alpha * x + f(x))
            x = self.ln1(self.alpha * x + self.attn(x))
            return self.ln2(self.alpha * x + self.ffn(x))
        if self.norm == "none":
            x = x + self.attn(x)
            return x + self.ffn(x)
        a = self.attn(self.ln1(x))
        x = x + (self.ln_attn(a) if self.norm == "normformer" else a)
        return x + self.ffn(self.ln2(x))


class TinyLM(nn.Module):
    """Token embedding, learned positions, ``n`` blocks, a final norm and an untied head."""

    def __init__(self, n: int = 6, d: int = 64, heads: int = 4, vocab: int = 256, ctx: int = 16,
                 norm: str = "pre", alpha: float = 1.0, final_norm: bool = True, scale: float | None = None):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Parameter(torch.zeros(1, ctx, d))
        self.blocks = nn.ModuleList(TBlock(d, heads, norm, alpha, scale) for _ in range(n))
        self.ln_f = nn.LayerNorm(d) if final_norm else nn.Identity()
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, ids):
        x = self.tok(ids) + self.pos[:, : ids.shape[1]]
        for b in self.blocks:
            x = b(x)
        return self.head(self.ln_f(x))


def _gpt2_init(model: TinyLM, std: float = 0.02) -> None:
    n = len(model.blocks)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            # GPT-2 / Megatron: residual output projections at std / sqrt(2 n_layer)
            scaled = name.endswith(("attn.o.weight", "fc2.weight"))
            nn.init.normal_(p, 0.0, std / math.sqrt(2 * n) if scaled else std)
        elif name.endswith("bias"):
            nn.init.zeros_(p)


def gpt2_scaled() -> nn.Module:
    torch.manual_seed(0)
    m = TinyLM(n=8)
    _gpt2_init(m)
    return m


def normformer() -> nn.Module:
    torch.manual_seed(0)
    m = TinyLM(n=8, norm="normformer")
    _gpt2_init(m)
    return m


def deepnet(n: int = 12) -> nn.Module:
    """DeepNet (Wang et al. 2022), encoder-only DeepNorm: x_{l+1} = LN(alpha x + f(x)) with
    alpha = (2N)^(1/4); the FFN, value and output projections Xavier with gain beta = (8N)^(-1/4),
    queries and keys Xavier with gain 1."""
    torch.manual_seed(0)
    alpha, beta = (2 * n) ** 0.25, (8 * n) ** -0.25
    m = TinyLM(n=n, norm="post", alpha=alpha, final_norm=False)
    for b in m.blocks:
        for lin in (b.attn.q, b.attn.k):
            nn.init.xavier_normal_(lin.weight, gain=1.0)
        for lin in (b.attn.v, b.attn.o, b.fc1, b.fc2):
            nn.init.xavier_normal_(lin.weight, gain=beta)
        for lin in (b.attn.q, b.attn.k, b.attn.v, b.attn.o, b.fc1, b.fc2):
            nn.init.zeros_(lin.bias)
    nn.init.normal_(m.tok.weight, 0, m.tok.weight.shape[1] ** -0.5)
    return m


def tfixup(n: int = 6) -> nn.Module:
    """T-Fixup (Huang et al. 2020): no LayerNorm; Xavier everywhere, embeddings N(0, d^-1/2), the
    value, output and FFN weights of every block scaled by 0.67 N^(-1/4)."""
    torch.manual_seed(0)
    m = TinyLM(n=n, norm="none", final_norm=False)
    d = m.tok.weight.shape[1]
    for b in m.blocks:
        for lin in (b.attn.q, b.attn.k, b.attn.v, b.attn.o, b.fc1, b.fc2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        for lin in (b.attn.v, b.attn.o, b.fc1, b.fc2):
            lin.weight.data.mul_(0.67 * n ** -0.25)
    nn.init.normal_(m.tok.weight, 0, d ** -0.5)
    nn.init.xavier_uniform_(m.head.weight)
    return m


def mup(n: int = 4, d: int = 128) -> nn.Module:
    """muP (Yang et al. 2021, mup's MuReadout): zero readout and zero queries, attention scaled by
    1/d_head instead of 1/sqrt(d_head), hidden weights N(0, 1/fan_in)."""
    torch.manual_seed(0)
    m = TinyLM(n=n, d=d, scale=1 / (d // 4))
    for name, p in m.named_parameters():
        if p.dim() >= 2 and "tok" not in name:
            nn.init.normal_(p, 0, p.shape[1] ** -0.5)
        elif name.endswith("bias"):
            nn.init.zeros_(p)
    for b in m.blocks:
        nn.init.zeros_(b.attn.q.weight)
    nn.init.zeros_(m.head.weight)
    return m


# --- runtime scales and parametrisations ------------------------------------------------------

class ScaledLinear(nn.Module):
    """A weight stored at N(0, 1/lr_mul) and multiplied at run time: NTK parametrisation
    (Jacot et al. 2018; gain / sqrt(fan_in)) and StyleGAN's equalised learning rate
    (Karras et al. 2018; gain sqrt(2) / sqrt(fan_in), times lr_mul)."""

    def __init__(self, fan_in: int, fan_out: int, gain: float = 1.0, lr_mul: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(fan_out, fan_in) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(fan_out))
        self.w_mul, self.b_mul = gain / math.sqrt(fan_in) * lr_mul, lr_mul

    def forward(self, x):
        return F.linear(x, self.weight * self.w_mul, self.bias * self.b_mul)


def ntk(depth: int = 8, width: int = W) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [ScaledLinear(32 if i == 0 else width, width, gain=math.sqrt(2)), nn.ReLU()]
    return nn.Sequential(*layers, ScaledLinear(width, 10))


def stylegan_mapping(depth: int = 8, width: int = W) -> nn.Module:
    """StyleGAN's mapping network: 8 equalised-lr layers (lr_mul 0.01) with leaky ReLU 0.2, the
    latent normalised first (pixel norm)."""
    torch.manual_seed(0)

    class PixelNorm(nn.Module):
        def forward(self, x):
            return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-8)

    layers: list[nn.Module] = [PixelNorm()]
    for _ in range(depth):
        layers += [ScaledLinear(width, width, gain=math.sqrt(2), lr_mul=0.01), nn.LeakyReLU(0.2)]
    return nn.Sequential(*layers)


def weightnorm_mlp(depth: int = 8, width: int = W) -> nn.Module:
    """Weight normalisation (Salimans & Kingma 2016) with their data-dependent init: v ~ N(0, 0.05),
    then g and b set on a batch so each unit's pre-activation has mean 0 and variance 1."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    x = torch.randn(256, 32)
    for i in range(depth):
        lin = nn.Linear(32 if i == 0 else width, width)
        nn.init.normal_(lin.weight, 0, 0.05)
        lin = P.weight_norm(lin)
        with torch.no_grad():
            t = lin(x)
            mu, sd = t.mean(0), t.std(0)
            lin.parametrizations.weight.original0.div_(sd[:, None])
            lin.bias.copy_(-mu / sd)
            x = F.relu(lin(x))
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def spectral_gan_disc(c: int = 32) -> nn.Module:
    """An SN-GAN discriminator (Miyato et al. 2018): spectral norm on every conv, leaky ReLU 0.1."""
    torch.manual_seed(0)
    sn = P.spectral_norm
    return nn.Sequential(
        sn(nn.Conv2d(3, c, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(c, c, 4, 2, 1)), nn.LeakyReLU(0.1),
        sn(nn.Conv2d(c, 2 * c, 3, 1, 1)), nn.LeakyReLU(0.1), sn(nn.Conv2d(2 * c, 2 * c, 4, 2, 1)),
        nn.LeakyReLU(0.1), sn(nn.Conv2d(2 * c, 4 * c, 3, 1, 1)), nn.LeakyReLU(0.1), nn.Flatten(),
        sn(nn.Linear(4 * c * 8 * 8, 1)))


def orthogonal_param(depth: int = 12, width: int = W) -> nn.Module:
    """A tanh MLP whose weights are orthogonal parametrisations (Lezcano-Casado 2019)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(depth):
        layers += [P.orthogonal(nn.Linear(width, width)), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def zero_init(depth: int = 10, width: int = W) -> nn.Module:
    """ZerO init (Zhao et al. 2022) in a plain ReLU MLP: square layers the identity, the widening
    input layer a partial identity times a normalised Hadamard matrix, the shrinking head a partial
    identity (Zhao et al., Algorithm 1: c * I* H I* when widening, I* when shrinking)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    d_in = 32
    for i in range(depth):
        lin = nn.Linear(d_in if i == 0 else width, width)
        with torch.no_grad():
            if i == 0:
                h = torch.tensor([[1.0]])
                while h.shape[0] < width:
                    h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
                lin.weight.copy_(h[:, :d_in] / math.sqrt(width) * math.sqrt(width / d_in))
            else:
                lin.weight.copy_(torch.eye(width))
            lin.bias.zero_()
        layers += [lin, nn.ReLU()]
    head = nn.Linear(width, 10)  # a shrinking layer: the partial identity I* (Algorithm 1)
    with torch.no_grad():
        head.weight.copy_(torch.eye(10, width))
        head.bias.zero_()
    return nn.Sequential(*layers, head)


# --- textbook defects ----------------------------------------------------------------------------

def _plain(depth: int, act: type[nn.Module], init, width: int = W) -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(32 if i == 0 else width, width)
        init(lin.weight)
        nn.init.zeros_(lin.bias)
        layers += [lin, act()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def xavier_relu20() -> nn.Module:
    return _plain(20, nn.ReLU, nn.init.xavier_normal_)


def he_tanh() -> nn.Module:
    return _plain(8, nn.Tanh, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))


def zero_hidden() -> nn.Module:
    m = _plain(5, nn.ReLU, lambda w: nn.init.kaiming_normal_(w, nonlinearity="relu"))
    nn.init.zeros_(m[4].weight)
    return m


def equal_rows() -> nn.Module:
    m = _plain(5, nn.Tanh, nn.init.xavier_normal_)
    with torch.no_grad():
        m[4].weight.copy_(m[4].weight[:1].expand_as(m[4].weight))
    return m


def lstm_zero() -> nn.Module:
    torch.manual_seed(0)
    rnn = nn.LSTM(16, 64, batch_first=True)
    nn.init.zeros_(rnn.weight_hh_l0)
    nn.init.zeros_(rnn.bias_ih_l0)
    nn.init.zeros_(rnn.bias_hh_l0)
    return SeqModel(rnn, 64)


def normal1_mlp12() -> nn.Module:
    return _plain(12, nn.ReLU, lambda w: nn.init.normal_(w, 0, 1))


def highway_closed() -> nn.Module:
    return highway(gate_bias=3.0)


SCHEMES = {f.__name__: f for f in (
    fixup, rezero, skipinit, tfixup, deepnet, gpt2_scaled, normformer, mup, ntk, stylegan_mapping,
    weightnorm_mlp, spectral_gan_disc, orthogonal_param, lstm_forget1, chrono_lstm, irnn, highway,
    siren, nerf, selu_lecun, dcgan_generator, wavenet, tcn, pixelcnn, lsuv, delta_orthogonal, zero_init)}
DEFECTS = {f.__name__: f for f in (
    xavier_relu20, he_tanh, zero_hidden, equal_rows, lstm_zero, normal1_mlp12, highway_closed)}


def inputs(name: str, batch: int = 64) -> torch.Tensor:
    """The probe batch the model ``name`` reads (images, sequences, token ids, coordinates)."""
    g = torch.Generator().manual_seed(0)
    if name in ("fixup", "skipinit"):
        return torch.randn(batch, 3, 16, 16, generator=g)
    if name == "spectral_gan_disc":
        return torch.randn(batch, 3, 32, 32, generator=g)
    if name in ("delta_orthogonal",):
        return torch.randn(batch, 3, 8, 8, generator=g)
    if name in ("tfixup", "deepnet", "gpt2_scaled", "normformer", "mup"):
        return torch.randint(0, 256, (batch, 16), generator=g)
    if name in ("lstm_forget1", "chrono_lstm", "irnn", "lstm_zero"):
        return torch.randn(batch, 20, 16, generator=g)
    if name == "siren":
        return torch.rand(batch, 2, generator=g) * 2 - 1
    if name == "nerf":
        return torch.rand(batch, 3, generator=g) * 2 - 1
    if name == "dcgan_generator":
        return torch.randn(batch, 32, 1, 1, generator=g)
    if name in ("wavenet", "tcn"):
        return torch.randn(batch, 1, 64, generator=g)
    if name == "pixelcnn":
        return torch.rand(batch, 1, 12, 12, generator=g)
    if name == "stylegan_mapping":
        return torch.randn(batch, W, generator=g)
    if name == "orthogonal_param":
        return torch.randn(batch, W, generator=g)
    return torch.randn(batch, 32, generator=g)


def _attach_inputs() -> None:
    """Each builder carries ``example_inputs()`` so ``--model tests/papers.py:NAME`` probes it."""
    for name, f in {**SCHEMES, **DEFECTS}.items():
        f.example_inputs = (lambda n=name: inputs(n))


_attach_inputs()
