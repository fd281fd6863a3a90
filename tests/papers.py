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

W = 64  # width of the MLP-style models


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


# --- recurrent ----------------------------------------------------------------------------------

class SeqModel(nn.Module):
    def __init__(self, cell: nn.Module, hidden: int, classes: int = 10):
        super().__init__()
        self.rnn, self.head = cell, nn.Linear(hidden, classes)

    def forward(self, x):
        out, _ = self.rnn(x)
        return self.head(out[:, -1])


def lstm_forget1(hidden: int = 64) -> nn.Module:
    """Jozefowicz et al. 2015: forget-gate bias 1; orthogonal W_hh, Xavier W_ih (Keras' defaults)."""
    torch.manual_seed(0)
    rnn = nn.LSTM(16, hidden, batch_first=True)
    for g in range(4):
        nn.init.xavier_uniform_(rnn.weight_ih_l0.data[g * hidden:(g + 1) * hidden])
        nn.init.orthogonal_(rnn.weight_hh_l0.data[g * hidden:(g + 1) * hidden])
    nn.init.zeros_(rnn.bias_ih_l0)
    nn.init.zeros_(rnn.bias_hh_l0)
    rnn.bias_ih_l0.data[hidden:2 * hidden] = 1.0
    return SeqModel(rnn, hidden)


def chrono_lstm(hidden: int = 64, t_max: int = 50) -> nn.Module:
    """Chrono init (Tallec & Ollivier 2018): forget bias log(U(1, T_max - 1)), input bias its negative."""
    torch.manual_seed(0)
    rnn = nn.LSTM(16, hidden, batch_first=True)
    nn.init.zeros_(rnn.bias_ih_l0)
    nn.init.zeros_(rnn.bias_hh_l0)
    f = torch.log(torch.empty(hidden).uniform_(1, t_max - 1))
    rnn.bias_hh_l0.data[hidden:2 * hidden] = f
    rnn.bias_hh_l0.data[:hidden] = -f
    return SeqModel(rnn, hidden)


def irnn(hidden: int = 64) -> nn.Module:
    """IRNN (Le et al. 2015): ReLU RNN with W_hh = I, zero biases, W_ih N(0, 0.001)."""
    torch.manual_seed(0)
    rnn = nn.RNN(16, hidden, nonlinearity="relu", batch_first=True)
    nn.init.normal_(rnn.weight_ih_l0, 0, 0.001)
    nn.init.eye_(rnn.weight_hh_l0)
    nn.init.zeros_(rnn.bias_ih_l0)
    nn.init.zeros_(rnn.bias_hh_l0)
    return SeqModel(rnn, hidden)


# --- gates and special activations --------------------------------------------------------------

class Highway(nn.Module):
    """Highway layer (Srivastava et al. 2015): y = H(x) T(x) + x (1 - T(x)), T = sigmoid(W_T x + b_T)."""

    def __init__(self, width: int, gate_bias: float):
        super().__init__()
        self.h, self.t = nn.Linear(width, width), nn.Linear(width, width)
        nn.init.constant_(self.t.bias, gate_bias)

    def forward(self, x):
        t = torch.sigmoid(self.t(x))
        return F.relu(self.h(x)) * t + x * (1 - t)


def highway(depth: int = 20, width: int = W, gate_bias: float = -2.0) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(32, width), *[Highway(width, gate_bias) for _ in range(depth)],
                         nn.Linear(width, 10))


class Sine(nn.Module):
    def __init__(self, w0: float):
        super().__init__()
        self.w0 = w0

    def forward(self, x):
        return torch.sin(self.w0 * x)


def siren(depth: int = 5, width: int = 128, w0: float = 30.0) -> nn.Module:
    """SIREN (Sitzmann et al. 2020): sin(w0 x); first layer U(-1/n, 1/n), others U(+-sqrt(6/n)/w0)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(2 if i == 0 else width, width)
        n = lin.weight.shape[1]
        bound = 1 / n if i == 0 else math.sqrt(6 / n) / w0
        nn.init.uniform_(lin.weight, -bound, bound)
        layers += [lin, Sine(w0)]
    last = nn.Linear(width, 1)
    nn.init.uniform_(last.weight, -math.sqrt(6 / width) / w0, math.sqrt(6 / width) / w0)
    return nn.Sequential(*layers, last)


class NeRF(nn.Module):
    """NeRF's MLP (Mildenhall et al. 2020): positional encoding of 3-D points with 10 octaves,
    8 ReLU layers with the encoding concatenated again at layer 5; torch's default init."""

    def __init__(self, width: int = 128, octaves: int = 10):
        super().__init__()
        self.octaves = octaves
        d = 3 + 3 * 2 * octaves
        self.layers = nn.ModuleList(nn.Linear(d if i == 0 else width + (d if i == 5 else 0), width)
                                    for i in range(8))
        self.sigma, self.rgb = nn.Linear(width, 1), nn.Linear(width, 3)

    def encode(self, x):
        freqs = 2.0 ** torch.arange(self.octaves, dtype=x.dtype) * math.pi
        xf = x[..., None] * freqs
        return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)

    def forward(self, x):
        e = self.encode(x)
        h = e
        for i, lin in enumerate(self.layers):
            h = F.relu(lin(torch.cat([h, e], -1) if i == 5 else h))
        return torch.cat([self.sigma(h), torch.sigmoid(self.rgb(h))], -1)


def nerf() -> nn.Module:
    torch.manual_seed(0)
    return NeRF()


def selu_lecun(depth: int = 16, width: int = W) -> nn.Module:
    """Self-normalising net (Klambauer et al. 2017): SELU, LeCun normal weights, zero biases."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for i in range(depth):
        lin = nn.Linear(32 if i == 0 else width, width)
        nn.init.kaiming_normal_(lin.weight, nonlinearity="linear")  # LeCun normal
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.SELU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def dcgan_generator(nz: int = 32, ngf: int = 16) -> nn.Module:
    """DCGAN generator (Radford et al. 2016, the PyTorch example's weights_init)."""
    torch.manual_seed(0)
    g = nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, 3, 4, 2, 1, bias=False), nn.Tanh())
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)
    return g


class CausalConv(nn.Conv1d):
    def __init__(self, c_in: int, c_out: int, k: int, dilation: int):
        super().__init__(c_in, c_out, k, dilation=dilation)
        self.left = (k - 1) * dilation

    def forward(self, x):
        return super().forward(F.pad(x, (self.left, 0)))


class WaveNetBlock(nn.Module):
    """WaveNet (van den Oord et al. 2016): gated tanh * sigmoid dilated causal conv, 1x1 residual."""

    def __init__(self, c: int, dilation: int):
        super().__init__()
        self.filt, self.gate = CausalConv(c, c, 2, dilation), CausalConv(c, c, 2, dilation)
        self.res = nn.Conv1d(c, c, 1)

    def forward(self, x):
        return x + self.res(torch.tanh(self.filt(x)) * torch.sigmoid(self.gate(x)))


def wavenet(c: int = 32, layers: int = 10) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, c, 1), *[WaveNetBlock(c, 2 ** (i % 10)) for i in range(layers)],
                         nn.ReLU(), nn.Conv1d(c, 8, 1))


class TCNBlock(nn.Module):
    """TCN (Bai et al. 2018): two weight-normed dilated causal convs, weights N(0, 0.01), ReLU."""

    def __init__(self, c: int, dilation: int):
        super().__init__()
        self.c1, self.c2 = CausalConv(c, c, 3, dilation), CausalConv(c, c, 3, dilation)
        for conv in (self.c1, self.c2):
            nn.init.normal_(conv.weight, 0, 0.01)
        self.c1, self.c2 = P.weight_norm(self.c1), P.weight_norm(self.c2)

    def forward(self, x):
        return F.relu(x + self.c2(F.relu(self.c1(x))))


def tcn(c: int = 32, levels: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv1d(1, c, 1), *[TCNBlock(c, 2 ** i) for i in range(levels)], nn.Conv1d(c, 8, 1))


class MaskedConv2d(nn.Conv2d):
    """PixelCNN (van den Oord et al. 2016): the kernel multiplied by a causal mask buffer (type A
    also hides the centre pixel)."""

    def __init__(self, mask_type: str, c_in: int, c_out: int, k: int):
        super().__init__(c_in, c_out, k, padding=k // 2)
        mask = torch.ones_like(self.weight)
        mask[:, :, k // 2, k // 2 + (mask_type == "B"):] = 0
        mask[:, :, k // 2 + 1:] = 0
        self.register_buffer("mask", mask)

    def forward(self, x):
        return F.conv2d(x, self.weight * self.mask, self.bias, padding=self.padding)


def pixelcnn(c: int = 32, layers: int = 8) -> nn.Module:
    torch.manual_seed(0)
    mods: list[nn.Module] = [MaskedConv2d("A", 1, c, 7), nn.ReLU()]
    for _ in range(layers):
        mods += [MaskedConv2d("B", c, c, 3), nn.ReLU()]
    mods += [nn.Conv2d(c, 256, 1)]
    for m in mods:
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            nn.init.zeros_(m.bias)
    return nn.Sequential(*mods)


def lsuv(depth: int = 12, width: int = W) -> nn.Module:
    """LSUV (Mishkin & Matas 2016): orthogonal init, then each layer rescaled until its output on a
    batch has variance 1 (ReLU net, no normalisation)."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    x = torch.randn(256, 32)
    for i in range(depth):
        lin = nn.Linear(32 if i == 0 else width, width)
        nn.init.orthogonal_(lin.weight)
        nn.init.zeros_(lin.bias)
        with torch.no_grad():
            for _ in range(5):
                lin.weight.div_(lin(x).std())
            x = F.relu(lin(x))
        layers += [lin, nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(width, 10))


def delta_orthogonal(depth: int = 16, c: int = 32) -> nn.Module:
    """Delta-orthogonal convolutions (Xiao et al. 2018): a tanh CNN whose kernels are zero but at
    the centre tap, an orthogonal matrix there."""
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(3, c, 3, padding=1), nn.Tanh()]
    for _ in range(depth):
        conv = nn.Conv2d(c, c, 3, padding=1)
        with torch.no_grad():
            conv.weight.zero_()
            q = torch.empty(c, c)
            nn.init.orthogonal_(q)
            conv.weight[:, :, 1, 1] = q
            conv.bias.zero_()
        layers += [conv, nn.Tanh()]
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, 10))


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
