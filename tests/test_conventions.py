"""IA104 on family conventions, recognised by their mechanism (never by a name), and the planted
defects each relaxation could hide:

- query and key projections set the attention's temperature, not the signal's scale: small ones
  (0.02, CLIP's and T5's depth- and head-scaled queries) only start the softmax nearer uniform;
  large ones saturate it (a warning, with the attention measured near one-hot);
- an ONNX export's attention, with the padding mask computed from a graph input, is the same
  pattern as in the torch forms;
- a residual branch that ends behind a LayerScale gain: the skip path carries the signal, so a
  small branch is info; the same stack with no skip is still a warning;
- a training-only branch (an auxiliary classifier) the eval-mode forward pass never reaches is
  judged with the activation unknown; a spread outside every scheme is still a finding;
- a BatchNorm the exporter folded into a conv whose zero bias it merged with another layer's;
- a plain tanh MLP at N(0, 0.02) (a fixed std across fans) is still a warning.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

import initaudit
from initaudit.attention_scores import score_projections
from initaudit.loaders.target import load_target
from initaudit.rule import Severity
from onnx_models import export

D, HEADS, T, B = 32, 4, 8, 4


class Attention(nn.Module):
    """Self-attention written out as BERT and CLIP do: softmax(Q K^T / sqrt(d) + mask) V."""

    def __init__(self):
        super().__init__()
        self.q, self.k, self.v, self.o = (nn.Linear(D, D) for _ in range(4))
        self.last = None

    def forward(self, x, mask):
        def heads(t):
            return t.view(t.shape[0], T, HEADS, D // HEADS).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(D // HEADS)
        scores = scores + (1.0 - mask[:, None, None, :]) * -10000.0
        self.last = scores.softmax(-1)
        out = (self.last @ v).transpose(1, 2).reshape(x.shape[0], T, D)
        return self.o(out)


class Encoder(nn.Module):
    """Pre-LN blocks x + a(LN(x)), x + gamma * fc2(gelu(fc1(LN(x)))); ``skip=False`` drops the
    residual adds (a plain chain of the same layers)."""

    def __init__(self, layers: int = 2, std: dict | None = None, gamma: float | None = None,
                 skip: bool = True, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.skip = skip
        self.ln1 = nn.ModuleList(nn.LayerNorm(D) for _ in range(layers))
        self.ln2 = nn.ModuleList(nn.LayerNorm(D) for _ in range(layers))
        self.attn = nn.ModuleList(Attention() for _ in range(layers))
        self.fc1 = nn.ModuleList(nn.Linear(D, 4 * D) for _ in range(layers))
        self.fc2 = nn.ModuleList(nn.Linear(4 * D, D) for _ in range(layers))
        self.gamma = nn.ParameterList(nn.Parameter(torch.full((D,), gamma)) for _ in range(layers)) \
            if gamma is not None else None
        self.head = nn.Linear(D, 10)
        std = {"q": 0.02, "k": 0.02, "v": 0.02, "o": 0.02, "fc1": 0.02, "fc2": 0.02, **(std or {})}
        for i in range(layers):
            a = self.attn[i]
            for name in ("q", "k", "v", "o"):
                nn.init.normal_(getattr(a, name).weight, std=std[name])
                nn.init.zeros_(getattr(a, name).bias)
            for name in ("fc1", "fc2"):
                nn.init.normal_(getattr(self, name)[i].weight, std=std[name])
                nn.init.zeros_(getattr(self, name)[i].bias)

    def forward(self, x, mask):
        for i in range(len(self.attn)):
            a = self.attn[i](self.ln1[i](x), mask)
            x = x + a if self.skip else a
            m = self.fc2[i](nn.functional.gelu(self.fc1[i](self.ln2[i](x))))
            if self.gamma is not None:
                m = self.gamma[i] * m
            x = x + m if self.skip else m
        return self.head(x)


def inputs():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, T)
    mask[:, -2:] = 0.0  # padding
    return torch.randn(B, T, D, generator=g), mask


def ia104(report, severity=Severity.WARNING):
    return {f.layer: f for f in report.findings if f.rule == "IA104" and f.severity is severity}


def audit(model):
    return initaudit.audit(model, inputs=inputs(), probe_enabled=False)


# ---- attention queries and keys -------------------------------------------------------------


def test_queries_and_keys_at_0_02_only_start_the_softmax_near_uniform():
    model = Encoder()
    r = audit(model)
    assert ia104(r) == {}
    infos = ia104(r, Severity.INFO)
    for name in ("attn.0.q.weight", "attn.0.k.weight", "attn.1.q.weight"):
        assert "feeds attention scores" in infos[name].message
    assert "feeds attention scores" not in infos["attn.0.v.weight"].message  # V carries the signal
    # measured: near-uniform attention over the 6 unmasked tokens
    audit_x, mask = inputs()
    with torch.no_grad():
        model(audit_x, mask)
    assert model.attn[0].last.max().item() < 2.0 / 6


def test_large_queries_and_keys_saturate_the_softmax():
    """Planted: q and k at N(0, 1) (every Linear re-drawn N(0, 1) does this to attention)."""
    model = Encoder(std={"q": 1.0, "k": 1.0})
    r = audit(model)
    hits = ia104(r)
    assert {"attn.0.q.weight", "attn.0.k.weight", "attn.1.q.weight", "attn.1.k.weight"} <= set(hits)
    assert "softmax starts sharper" in hits["attn.0.q.weight"].message
    assert hits["attn.0.q.weight"].evidence["attention_logits_factor"] > 5
    assert hits["attn.0.q.weight"].evidence["attention_partners"] == ["attn.0.k.weight"]
    x, mask = inputs()
    with torch.no_grad():
        model(x, mask)
    assert model.attn[0].last.max(-1).values.mean().item() > 0.9  # measured: one-hot attention


def test_depth_and_head_scaled_projections_clip_and_t5():
    """CLIP: q/k/v at d^-1/2 (2 L)^-1/2, out at d^-1/2, fc1 at (2d)^-1/2, fc2 at d^-1/2 (2 L)^-1/2;
    T5: the query at (d_model d_kv)^-1/2 (its logits are not divided by sqrt(d_kv))."""
    layers = 24  # ViT-L/14's depth: the branch input at 0.14x Xavier
    branch = D ** -0.5 * (2 * layers) ** -0.5
    clip = Encoder(layers, std={"q": branch, "k": branch, "v": branch, "o": D ** -0.5,
                                "fc1": (2 * D) ** -0.5, "fc2": branch})
    r = audit(clip)
    assert ia104(r) == {}
    infos = ia104(r, Severity.INFO)
    assert "feeds attention scores" in infos["attn.20.q.weight"].message
    assert "residual branch" in infos["attn.20.v.weight"].message
    t5 = Encoder(std={"q": (D * D // HEADS) ** -0.5, "k": D ** -0.5, "v": D ** -0.5, "o": D ** -0.5,
                      "fc1": D ** -0.5, "fc2": (4 * D) ** -0.5})
    r = audit(t5)
    assert ia104(r) == {}
    assert "feeds attention scores" in ia104(r, Severity.INFO)["attn.0.q.weight"].message


# ---- ONNX attention -------------------------------------------------------------------------


def test_onnx_attention_with_an_input_mask_is_the_torch_pattern(tmp_path):
    model = Encoder().eval()
    path = export(model, inputs(), tmp_path / "enc.onnx", input_names=["x", "mask"])
    graph, _ = load_target(path)
    attention = [n for n in graph.nodes if n.kind == "attention"]
    assert len(attention) == 2
    scores = score_projections(graph)
    assert len(scores) == 4  # q and k of both blocks, whatever the exporter named them
    assert all(len(partners) == 1 for partners in scores.values())
    r = initaudit.audit(path, probe_enabled=False)
    assert ia104(r) == {}


# ---- residual branches behind a LayerScale gain ----------------------------------------------


def test_a_branch_behind_layer_scale_ends_in_the_residual_add():
    r = audit(Encoder(gamma=1e-6))
    assert ia104(r) == {}
    assert "residual branch" in ia104(r, Severity.INFO)["fc1.0.weight"].message


def test_the_same_stack_without_the_skip_is_still_a_warning():
    """Planted: the LayerScale model with its residual adds removed really loses the signal."""
    model = Encoder(gamma=1e-6, skip=False)
    hits = ia104(audit(model))
    assert {"fc1.0.weight", "fc2.0.weight"} <= set(hits)
    x, mask = inputs()
    out = []
    hook = model.fc2[0].register_forward_hook(lambda m, a, o: out.append(o.std().item()))
    with torch.no_grad():
        model(x, mask)
    hook.remove()
    assert out[0] < 0.05  # measured: the branch keeps ~1% of its normalised (unit) input


# ---- training-only branches -----------------------------------------------------------------


class WithAux(nn.Module):
    """GoogLeNet's shape: an auxiliary classifier run only in training mode."""

    def __init__(self, aux_std: float):
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.aux = nn.Sequential(nn.Conv2d(64, 32, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
        nn.init.kaiming_normal_(self.stem[0].weight, mode="fan_out", nonlinearity="relu")
        nn.init.trunc_normal_(self.aux[0].weight, std=aux_std, a=-2, b=2)

    def forward(self, x):
        h = self.stem(x)
        out = self.head(h)
        return (out, self.aux(h)) if self.training else out


def test_a_branch_the_eval_pass_never_reaches_has_an_unknown_activation():
    r = initaudit.audit(WithAux(0.01), inputs=torch.randn(2, 3, 16, 16), probe_enabled=False)
    assert "aux.0.weight" not in ia104(r)
    row = next(layer for layer in r.layers if layer["param"] == "aux.0.weight")
    assert row["expected"] is None  # judged as with no architecture


def test_a_training_only_branch_far_outside_every_scheme_is_still_found():
    """Planted: the auxiliary conv at N(0, 1), 8x the largest scheme's std for fan_in 64."""
    model = WithAux(1.0)
    r = initaudit.audit(model, inputs=torch.randn(2, 3, 16, 16), probe_enabled=False)
    assert "nearest known scheme" in ia104(r)["aux.0.weight"].message
    with torch.no_grad():
        h = model.stem(torch.randn(2, 3, 16, 16))
        assert model.aux[0](h).std().item() > 5 * h.std().item()  # measured


# ---- BatchNorm folded into a conv by the exporter --------------------------------------------


def test_a_folded_batchnorm_whose_zero_bias_was_merged_is_seen(tmp_path):
    """MobileNetV3's linear bottleneck: conv -> BN with no activation, exported in eval mode with
    fresh statistics; the folded bias is zero, and the exporter merges it with an equal zero bias
    of another layer (an Identity), so the bias carries no generated name of its own."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 8, 1, bias=False), nn.BatchNorm2d(8),
                          nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 4, 1))
    nn.init.zeros_(model[4].bias)
    nn.init.kaiming_normal_(model[2].weight, mode="fan_out")
    path = export(model, (torch.randn(1, 3, 8, 8),), tmp_path / "bn.onnx")
    import onnx

    proto = onnx.load(str(path))
    conv = [n for n in proto.graph.node if n.op_type == "Conv"][1]
    producer = {o: n for n in proto.graph.node for o in n.output}
    assert "::" in conv.input[1] and producer[conv.input[2]].op_type == "Identity"  # the merged bias
    graph, _ = load_target(path)
    folded = graph.params[conv.input[1]]
    assert folded.normalized_after
    r = initaudit.audit(path, probe_enabled=False)
    assert conv.input[1] not in ia104(r)


# ---- a fixed std is no licence ----------------------------------------------------------------


def test_a_tanh_mlp_at_0_02_is_still_a_warning():
    """Planted: N(0, 0.02) in every layer of a tanh MLP of alternating widths (a std shared
    across fans, as the 0.02 convention is): the signal really vanishes."""
    torch.manual_seed(0)
    widths = [64, 128, 64, 128, 64, 128]
    layers: list[nn.Module] = []
    for fi, fo in zip(widths, widths[1:]):
        lin = nn.Linear(fi, fo)
        nn.init.normal_(lin.weight, std=0.02)
        nn.init.zeros_(lin.bias)
        layers += [lin, nn.Tanh()]
    layers.append(nn.Linear(128, 10))
    model = nn.Sequential(*layers)
    x = torch.randn(64, 64)
    r = initaudit.audit(model, inputs=x, probe_enabled=False)
    hits = ia104(r)
    assert {"2.weight", "4.weight", "6.weight", "8.weight"} <= set(hits)
    assert "fixed-std" in hits["4.weight"].message
    with torch.no_grad():
        assert model[:9](x).std().item() < 1e-3 * x.std().item()  # measured
