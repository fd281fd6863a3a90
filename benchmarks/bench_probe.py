"""Probe overhead on a GPT-2-small-sized transformer and a ResNet-18-sized CNN, built locally.

    python benchmarks/bench_probe.py [--quick] [--histograms] [--only gpt2|resnet]

Prints, for each model, the times of a plain forward, of the forward probe (statistics only),
of a plain forward + backward (a training step's cross-entropy vs random labels) and of the full
probe (forward statistics + backward + gradient statistics), all measured in the same run, and
the ratios the probe must stay under: forward probe <= 1.5x a plain forward, full probe <= 1.3x
a plain forward + backward. ``--histograms`` adds both probes with per-site histograms (what
``--histograms`` and ``--html`` collect) to the same rounds, held to the same targets. Ratios are the median over rounds of probe / plain timed in the same
round (robust to load drifting on a shared machine). Both sides run in the probe's mode
(eval, BatchNorm in train mode). Sizes are chosen to finish in a few minutes on 2 CPU cores:
GPT-2 small (124M parameters, 12 layers, d=768, vocab 50257) on 4 sequences of 64 tokens;
ResNet-18 (11.7M parameters) on 8 images of 3x224x224.

The model builders are also used by the probe tests (small sizes) as healthy controls.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


# --- GPT-2 style pre-LayerNorm transformer (nanoGPT layout, GPT-2 init) -----------------------

class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.c_attn(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(b, t, d))


class MLP(nn.Module):
    def __init__(self, d: int):
        super().__init__()
        self.c_fc = nn.Linear(d, 4 * d)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        return self.c_proj(self.gelu(self.c_fc(x)))


class Block(nn.Module):
    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, heads)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = MLP(d)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, vocab: int = 50257, ctx: int = 1024, d: int = 768, heads: int = 12,
                 n_layer: int = 12):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(ctx, d)
        self.drop = nn.Dropout(0.1)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * n_layer))
            elif name.endswith(".weight") and p.dim() == 2:
                nn.init.normal_(p, std=0.02)
            elif name.endswith(".bias"):
                nn.init.zeros_(p)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def gpt2(small: bool = False) -> GPT:
    """GPT-2 small (124M), or a 2-layer d=64 model of the same layout."""
    torch.manual_seed(0)
    return GPT(vocab=512, ctx=64, d=64, heads=4, n_layer=2) if small else GPT()


# --- ResNet style CNN (torchvision layout, kaiming fan_out, zero-init last BN gamma) ----------

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)  # one module called twice per block
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), classes: int = 1000,
                 zero_init_residual: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stage = [BasicBlock(cin, w, 1 if i == 0 else 2)] + [BasicBlock(w, w, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*stage))
            cin = w
        self.layers = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        if zero_init_residual:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    nn.init.zeros_(m.bn2.weight)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.avgpool(self.layers(x))
        return self.fc(torch.flatten(x, 1))


def resnet18(small: bool = False) -> ResNet:
    """ResNet-18 (11.7M), or the same layout with widths 16..128 and 10 classes."""
    torch.manual_seed(0)
    return ResNet(widths=(16, 32, 64, 128), classes=10) if small else ResNet()


# --- benchmark --------------------------------------------------------------------------------

def _plain(model: nn.Module, inputs: torch.Tensor, backward: bool) -> None:
    from initaudit.probe.torch_probe import _BATCH_STAT_NORMS

    model.eval()
    for m in model.modules():
        if isinstance(m, _BATCH_STAT_NORMS):
            m.train()
    if not backward:
        with torch.no_grad():
            model(inputs)
        return
    out = model(inputs)
    gen = torch.Generator().manual_seed(1)
    flat = out.reshape(-1, out.shape[-1])
    labels = torch.randint(0, out.shape[-1], (flat.shape[0],), generator=gen)
    grads = torch.autograd.grad(F.cross_entropy(flat, labels), [p for p in model.parameters()])
    del grads


def bench(label: str, model: nn.Module, inputs: torch.Tensor, repeats: int,
          histograms: bool = False) -> dict[str, float]:
    """Time the plain runs and the probes in interleaved rounds; with ``histograms`` also the
    probes with per-site histograms (what ``--histograms`` and ``--html`` collect), in the same
    rounds, so both sets of ratios share one baseline."""
    from initaudit.loaders.torch_module import graph_from_module
    from initaudit.probe.inputs import from_object
    from initaudit.probe.options import ProbeOptions
    from initaudit.probe.torch_probe import probe_module

    graph = graph_from_module(model, label)
    probe_inputs = from_object(inputs, "file", "benchmark")

    def probe(backward: bool, hist: bool):
        return lambda: probe_module(model, graph, probe_inputs,
                                    ProbeOptions(backward=backward, histograms=hist))

    runs = {"forward": lambda: _plain(model, inputs, backward=False),
            "forward probe": probe(False, False),
            "forward+backward": lambda: _plain(model, inputs, backward=True),
            "full probe": probe(True, False)}
    if histograms:
        runs["forward probe, histograms"] = probe(False, True)
        runs["full probe, histograms"] = probe(True, True)
    for fn in runs.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in runs}
    for _ in range(repeats):
        # Rounds interleave the variants (load drifts hit all alike); inside a round each
        # variant runs once untimed first, so every timed run finds the allocator in the same
        # warm state whatever ran before it.
        for k, fn in runs.items():
            fn()
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    best = {k: min(v) for k, v in times.items()}

    def ratio(probe_key: str, plain_key: str, target: float) -> str:
        # Paired ratios (same round), median over rounds; the min-time ratio as a cross-check.
        paired = statistics.median(p / b for p, b in zip(times[probe_key], times[plain_key]))
        ratios[probe_key] = paired
        return (f"{probe_key} {best[probe_key] * 1e3:.0f} ms -> {paired:.2f}x (target <= {target}x; "
                f"min-time {best[probe_key] / best[plain_key]:.2f}x)")

    ratios: dict[str, float] = {}
    lines = [f"forward {best['forward'] * 1e3:.0f} ms", ratio("forward probe", "forward", 1.5)]
    if histograms:
        lines.append(ratio("forward probe, histograms", "forward", 1.5))
    lines += [f"forward+backward {best['forward+backward'] * 1e3:.0f} ms",
              ratio("full probe", "forward+backward", 1.3)]
    if histograms:
        lines.append(ratio("full probe, histograms", "forward+backward", 1.3))
    print(f"{label} [median of {repeats} paired ratios]:\n  " + "\n  ".join(lines), flush=True)
    return ratios


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small models, for a smoke test")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--only", choices=("gpt2", "resnet"), help="run one of the two models")
    ap.add_argument("--histograms", action="store_true",
                    help="also time the probes with per-site histograms (what --histograms and --html "
                         "collect), against the same baseline")
    args = ap.parse_args(argv)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}", flush=True)
    gen = torch.Generator().manual_seed(0)
    dev = torch.device(args.device)
    if args.only != "resnet":
        gpt = gpt2(args.quick).to(dev)
        vocab = gpt.wte.num_embeddings
        tokens = torch.randint(0, vocab, (4, 64), generator=gen).to(dev)
        bench("GPT-2 small (seq 64, batch 4)" if not args.quick else "GPT-2 layout, small", gpt,
              tokens, args.repeats, args.histograms)
        del gpt
    if args.only == "gpt2":
        return 0
    cnn = resnet18(args.quick).to(dev)
    side = 64 if args.quick else 224
    images = torch.randn(8, 3, side, side, generator=gen).to(dev)
    bench(f"ResNet-18 ({side}x{side}, batch 8)" if not args.quick else "ResNet layout, small", cnn,
          images, args.repeats, args.histograms)
    return 0


if __name__ == "__main__":
    sys.exit(main())
