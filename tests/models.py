"""Models the tests build: healthy controls (DESIGN §6) and models with one real defect each.

Every builder seeds its own generator so the suite is deterministic.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

ACTS = {"relu": nn.ReLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}


def mlp(depth: int = 5, width: int = 100, act: str = "relu", init: str = "he", *, d_in: int | None = None,
        d_out: int | None = None, seed: int = 0, bias: str = "zeros") -> nn.Sequential:
    """``depth`` Linear layers of ``width`` units, an activation after each but the last.

    init: "normal1" N(0, 1), "normal001" N(0, 0.01^2), "xavier" (gain 1, as in Glorot & Bengio),
    "he" (kaiming_normal_, relu), "default" (PyTorch's own).
    """
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    d_in = d_in or width
    for i in range(depth):
        fi = d_in if i == 0 else width
        fo = (d_out or width) if i == depth - 1 else width
        lin = nn.Linear(fi, fo)
        if init == "normal1":
            nn.init.normal_(lin.weight, std=1.0)
        elif init == "normal001":
            nn.init.normal_(lin.weight, std=0.01)
        elif init == "xavier":
            nn.init.xavier_normal_(lin.weight)
        elif init == "he":
            nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
        if init != "default" and bias == "zeros":
            nn.init.zeros_(lin.bias)
        layers.append(lin)
        if i < depth - 1:
            layers.append(ACTS[act]())
    return nn.Sequential(*layers)


class FunctionalMLP(nn.Module):
    """Activations applied with F.relu / torch.tanh in forward: only tracing sees them."""

    def __init__(self, act: str = "relu", init: str = "he", seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 64), nn.Linear(64, 64), nn.Linear(64, 10)
        self.act = act
        for m in (self.fc1, self.fc2):
            if init == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif init == "xavier_tanh":
                nn.init.xavier_normal_(m.weight, gain=nn.init.calculate_gain("tanh"))
            nn.init.zeros_(m.bias)

    def forward(self, x):
        f = F.relu if self.act == "relu" else torch.tanh
        return self.fc3(f(self.fc2(f(self.fc1(x)))))


# --- GPT-2 style pre-LayerNorm transformer (Hugging Face Conv1D layout, 0.02 init) -----------

class Conv1D(nn.Module):
    """As transformers.pytorch_utils.Conv1D: a Linear that stores its weight (in, out)."""

    def __init__(self, nf: int, nx: int):
        super().__init__()
        self.nf = nf
        self.weight = nn.Parameter(torch.empty(nx, nf))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.normal_(self.weight, std=0.02)

    def forward(self, x):
        size_out = x.size()[:-1] + (self.nf,)
        x = torch.addmm(self.bias, x.view(-1, x.size(-1)), self.weight)
        return x.view(size_out)


class GPT2Attention(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.c_attn = Conv1D(3 * d, d)
        self.c_proj = Conv1D(d, d)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q = q.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        k = k.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        v = v.view(b, t, self.n_head, c // self.n_head).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).contiguous().view(b, t, c))


class GPT2MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = Conv1D(4 * d, d)
        self.act = nn.GELU(approximate="tanh")
        self.c_proj = Conv1D(d, 4 * d)

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    def __init__(self, d: int, n_head: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = GPT2Attention(d, n_head)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = GPT2MLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT2(nn.Module):
    def __init__(self, vocab: int = 512, ctx: int = 64, d: int = 64, n_layer: int = 4, n_head: int = 4,
                 seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.h = nn.ModuleList(GPT2Block(d, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):  # GPT-2's scaled residual projections
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
        nn.init.normal_(self.wte.weight, std=0.02)
        nn.init.normal_(self.wpe.weight, std=0.02)

    def forward(self, idx):
        pos = torch.arange(idx.size(1), device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


# --- ResNet-style CNN with zero-init last BN gamma -------------------------------------------

class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        identity = x if self.down is None else self.down(x)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return F.relu(out)


class ResNetish(nn.Module):
    def __init__(self, widths=(16, 32, 64), blocks: int = 2, classes: int = 10, seed: int = 0,
                 zero_init_residual: bool = True):
        super().__init__()
        torch.manual_seed(seed)
        self.stem = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(widths[0])
        layers, c = [], widths[0]
        for i, w in enumerate(widths):
            for j in range(blocks):
                layers.append(BasicBlock(c, w, 2 if (j == 0 and i > 0) else 1))
                c = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = F.relu(self.bn(self.stem(x)))
        x = self.pool(self.layers(x)).flatten(1)
        return self.fc(x)


class LSTMTagger(nn.Module):
    """Embedding -> 2-layer LSTM (orthogonal hidden weights, forget-gate bias 1) -> Linear."""

    def __init__(self, vocab: int = 200, d: int = 32, hidden: int = 64, classes: int = 5, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = nn.Embedding(vocab, d)
        self.lstm = nn.LSTM(d, hidden, num_layers=2, batch_first=True)
        self.head = nn.Linear(hidden, classes)
        for name, p in self.lstm.named_parameters():
            if name.startswith("weight_hh"):
                for block in p.data.chunk(4, 0):
                    nn.init.orthogonal_(block)
            elif name.startswith("weight_ih"):
                nn.init.xavier_uniform_(p)
            elif name.startswith("bias_ih"):
                nn.init.zeros_(p)
                p.data[hidden:2 * hidden] = 1.0  # forget gate
            else:
                nn.init.zeros_(p)

    def forward(self, idx):
        out, _ = self.lstm(self.emb(idx))
        return self.head(out)


def classifier_with_zero_head(seed: int = 0) -> nn.Sequential:
    m = mlp(3, 64, "relu", "he", d_in=32, d_out=10, seed=seed)
    nn.init.zeros_(m[-1].weight)
    return m


def healthy_controls() -> dict[str, nn.Module]:
    """DESIGN §6 and issue 2's controls: none may produce an error or a warning."""
    return {
        "gpt2": GPT2(),
        "resnet_zero_gamma": ResNetish(),
        "lstm_orthogonal": LSTMTagger(),
        "he_relu_20": mlp(20, 100, "relu", "he"),
        "zero_head": classifier_with_zero_head(),
        "torch_default_shallow": mlp(2, 64, "relu", "default", d_in=32, d_out=10),
        "xavier_tanh": mlp(5, 100, "tanh", "xavier"),
        "functional_relu": FunctionalMLP("relu", "he"),
        "embedding_default": nn.Sequential(nn.Embedding(100, 32), nn.LayerNorm(32), nn.Linear(32, 4)),
        "depthwise": nn.Sequential(nn.Conv2d(16, 16, 3, groups=16, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                                   nn.Conv2d(16, 32, 1), nn.BatchNorm2d(32), nn.ReLU()),
    }
