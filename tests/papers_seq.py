"""Published initialisation schemes of tests/papers.py, continued: recurrent cells, gated and
periodic MLPs, and convolutional stacks (WaveNet, TCN, PixelCNN, LSUV, delta-orthogonal), written
as people write them in plain torch.nn code. ``papers`` re-exports every builder here."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils import parametrizations as P

W = 64  # width of the MLP-style models

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
