"""The dataflow recorded from one forward pass (initaudit.capture) and the shared pattern
recogniser (initaudit.patterns) on real model definitions and small written-out forms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initaudit
from initaudit.loaders.target import load_target
from initaudit.probe import ProbeOptions, capture_graph


def captured(model: nn.Module, **options):
    graph, _ = load_target(model)
    capture_graph(graph, ProbeOptions(**options))
    return graph


def following(graph, name: str, through=("transparent",)) -> list:
    """Nodes reached from ``name`` through shape-only nodes."""
    users: dict[str, list] = {}
    for n in graph.nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    out, stack, seen = [], [name], set()
    while stack:
        for u in users.get(stack.pop(), []):
            if u.name in seen:
                continue
            seen.add(u.name)
            (stack.append(u.name) if u.kind in through else out.append(u))
    return out


def node(graph, name: str):
    return next(n for n in graph.nodes if n.name == name)


@pytest.fixture(scope="module")
def llama():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=128,
                                   num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                                   max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg)


def test_llama_dataflow_is_recorded_from_the_forward_pass(llama):
    g = captured(llama)
    assert g.capture == "trace"
    for layer in range(4):
        pre = f"model.layers.{layer}"
        # SiLU of the gated MLP feeds the product with up_proj: act(gate(x)) * up(x)
        act = following(g, f"{pre}.mlp.gate_proj")
        assert [n.kind for n in act] == ["act"] and act[0].activation.name == "silu"
        mul = following(g, act[0].name)
        assert [n.kind for n in mul] == ["mul"]
        assert set(mul[0].inputs) == {act[0].name, f"{pre}.mlp.up_proj"}
        assert g.params[f"{pre}.mlp.gate_proj.weight"].activation.name == "silu"
        # o_proj and down_proj end residual branches; q, k, v go into attention
        assert g.params[f"{pre}.self_attn.o_proj.weight"].residual_end
        assert g.params[f"{pre}.mlp.down_proj.weight"].residual_end
        for proj in ("q_proj", "k_proj", "v_proj"):
            assert not g.params[f"{pre}.self_attn.{proj}.weight"].residual_end
            # through the rotary embedding (q cos + rotate(q) sin is not a residual add)
            assert [n.kind for n in following(g, f"{pre}.self_attn.{proj}")] == ["attention"]
    assert sum(n.kind == "add" for n in g.nodes) == 8  # two residual adds per layer, no more
    assert g.params["lm_head.weight"].is_output


def test_llama_audit_probes_without_inputs_and_raises_no_depth_error(llama):
    report = initaudit.audit(llama, probe_batch_size=4)
    doc = report.to_json()
    assert doc["capture"] == "trace"
    assert doc["probe"]["ran"] and doc["probe"]["convention"] == "transformers: input_ids + attention_mask"
    assert not [f for f in report.findings if f.rule == "IA109" and f.severity.value == "error"]
    assert not [f for f in report.findings if f.severity.value == "error"]
    assert any("inputs by convention" in n for n in report.notes)


def test_gpt2_conv1d_and_written_out_gelu():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
        n_layer=2, n_embd=64, n_head=4, vocab_size=256, n_positions=64, bos_token_id=0, eos_token_id=0))
    g = captured(model)
    assert g.capture == "trace"
    fc = g.params["transformer.h.0.mlp.c_fc.weight"]
    assert fc.activation.name == "gelu" and fc.activation_source == "trace"
    acts = following(g, "transformer.h.0.mlp.c_fc")
    assert [n.op for n in acts] == ["gelu(decomposed)"]  # NewGELU 0.5x(1+tanh(...)), one node
    assert not [n for n in g.nodes if n.kind == "add" and ".mlp.act" in n.name]  # x + 0.044715x^3
    assert g.params["transformer.h.0.attn.c_proj.weight"].residual_end
    assert g.params["transformer.h.0.mlp.c_proj.weight"].residual_end
    attn = following(g, "transformer.h.0.attn.c_attn")
    assert [n.kind for n in attn] == ["attention"] and attn[0].attrs["tokens"] == 16


@pytest.mark.parametrize("batch_first", [True, False])
def test_transformer_encoder_both_layouts(batch_first):
    torch.manual_seed(0)
    layer = nn.TransformerEncoderLayer(32, 4, 64, batch_first=batch_first)
    model = nn.TransformerEncoder(layer, 3, enable_nested_tensor=False)
    report = initaudit.audit(model, probe_batch_size=4)
    doc = report.to_json()
    assert doc["capture"] == "trace" and doc["probe"]["ran"]
    assert ("batch first" if batch_first else "sequence first") in doc["probe"]["convention"]
    rows = {r["param"]: r for r in doc["layers"]}
    for i in range(3):
        assert rows[f"layers.{i}.linear1.weight"]["activation"] == "relu"
        assert rows[f"layers.{i}.self_attn.out_proj.weight"]["residual_end"]
        assert rows[f"layers.{i}.linear2.weight"]["residual_end"]
    assert len(doc["signal"]) >= 9  # a real depth profile, not one row


class Written(nn.Module):
    """Activations, gates, attention and concatenation written out in forward()."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b, self.c = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.gate, self.up = nn.Linear(16, 32), nn.Linear(16, 32)
        self.down = nn.Linear(32, 16)
        self.q, self.k, self.v = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 16)
        self.glu_in, self.cat_out = nn.Linear(16, 32), nn.Linear(32, 16)
        self.gamma = nn.Parameter(torch.full((16,), 1e-4))

    def forward(self, x):
        h = self.a(x)
        h = h * torch.sigmoid(h)  # SiLU
        h = self.b(h)
        h = h * 0.5 * (1.0 + torch.erf(h / math.sqrt(2.0)))  # erf GELU
        h = self.c(h)
        h = h * torch.tanh(F.softplus(h))  # Mish
        h = h + self.gamma * self.down(F.gelu(self.gate(h)) * self.up(h))  # GeGLU, LayerScale
        t = h.unsqueeze(1).expand(-1, 4, -1)
        s = torch.softmax(self.q(t) @ self.k(t).transpose(-1, -2) / 4.0, dim=-1)
        h = (s @ self.v(t)).mean(1)
        g = F.glu(self.glu_in(h), dim=-1)
        return self.cat_out(torch.cat([g, h], dim=-1))


def test_written_out_patterns_are_recognised():
    g = captured(Written())
    acts = {p: g.params[f"{p}.weight"].activation for p in ("a", "b", "c", "gate")}
    assert {k: v.name for k, v in acts.items()} == {"a": "silu", "b": "gelu", "c": "mish", "gate": "gelu"}
    mul = following(g, "up")
    assert [n.kind for n in mul] == ["mul"] and len(mul[0].inputs) == 2
    scale = following(g, "down")
    assert [n.kind for n in scale] == ["mul"] and scale[0].param == "gamma"  # LayerScale
    assert [n.kind for n in following(g, scale[0].name)] == ["add"]
    for proj in ("q", "k", "v"):
        assert [n.kind for n in following(g, proj)] == ["attention"]
    att = following(g, "q")[0]
    assert att.op == "attention(decomposed)" and att.attrs["tokens"] == 4
    assert [n.kind for n in following(g, att.name)] == ["pool-avg"]
    assert following(g, att.name)[0].attrs["window"] == 4
    glu = following(g, "glu_in")
    assert sorted(n.kind for n in glu) == ["act", "mul"]
    cats = [n for n in g.nodes if n.kind == "cat"]
    assert len(cats) == 1 and len(cats[0].inputs) == 2
    assert [n.name for n in following(g, cats[0].name)] == ["cat_out"]
    assert g.params["cat_out.weight"].is_output
    assert sum(n.kind == "add" for n in g.nodes) == 1  # only the residual sum


class Pools(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(x)))
        return self.fc(F.adaptive_avg_pool2d(h, 1).flatten(1))


def test_pooling_nodes_carry_their_window():
    g = captured(Pools())
    pools = [n for n in g.nodes if n.kind.startswith("pool")]
    assert [(n.kind, n.attrs.get("window")) for n in pools] == [("pool-max", 4), ("pool-avg", 256)]
    assert g.params["conv.weight"].activation.name == "relu"


def test_capture_changes_nothing_in_the_model():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    model.train()
    model.layer1.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    rng = torch.random.get_rng_state()
    g = captured(model, batch_size=4)
    assert g.capture == "trace"
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert modes == [m.training for m in model.modules()]
    assert torch.equal(rng, torch.random.get_rng_state())
    assert not model._forward_hooks and not model._forward_pre_hooks
    assert all(not m._forward_hooks for m in model.modules())
    assert torch.backends.mha.get_fastpath_enabled()


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 2)

    def forward(self, x, y):
        return self.b(torch.tanh(self.a(x) + y))


def test_no_inputs_keeps_fx_and_says_why():
    report = initaudit.audit(TwoInputs())
    assert report.capture == "fx"
    assert any("dataflow from torch.fx" in n and "no inputs" in n for n in report.notes)
    rows = {r["param"]: r for r in report.layers}
    assert rows["a.weight"]["activation"] is None  # a.weight -> add -> tanh: fx sees the add


def test_user_inputs_drive_the_capture():
    report = initaudit.audit(TwoInputs(), inputs=(torch.randn(4, 8), torch.randn(4, 8)))
    assert report.capture == "trace" and report.probe.ran


def test_onnx_export_goes_through_the_same_recogniser(tmp_path):
    pytest.importorskip("onnx")
    from initaudit.loaders.onnx_loader import load_onnx

    model = Written().eval()
    path = tmp_path / "written.onnx"
    torch.onnx.export(model, (torch.randn(2, 16),), str(path), dynamo=False)
    g = load_onnx(path)
    kinds = [n.kind for n in g.nodes]
    acts = sorted(n.activation.name for n in g.nodes if n.kind == "act")
    assert acts == sorted(["silu", "gelu", "mish", "gelu", "sigmoid"])  # sigmoid: GLU's gate
    assert kinds.count("attention") == 1 and kinds.count("cat") == 1 and kinds.count("add") == 1
    gated = [n for n in g.nodes if n.kind == "mul" and len(n.inputs) == 2]
    assert len(gated) == 2  # GeGLU and GLU
    assert kinds.count("pool-avg") == 1  # the mean over tokens


class ElmanLM(nn.Module):
    """A recurrent cell written out: h = tanh(x W_ih + h W_hh), unrolled over the sequence."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.ih, self.hh, self.head = nn.Embedding(40, 16), nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 40)

    def forward(self, ids):
        x = self.emb(ids)
        h = torch.zeros(ids.shape[0], 32)
        for t in range(x.shape[1]):
            h = torch.tanh(self.ih(x[:, t]) + self.hh(h))
        return self.head(h)


def test_recurrent_cell_sum_is_not_a_residual_add():
    g = captured(ElmanLM())
    assert g.capture == "trace"
    sums = [n for n in g.nodes if n.kind == "add"]
    assert len(sums) == 16 and all(n.attrs.get("residual") is False for n in sums)  # SEQ_LEN steps
    for name in ("ih.weight", "hh.weight"):
        assert g.params[name].activation.name == "tanh" and not g.params[name].residual_end


@pytest.mark.parametrize("reshaped", [False, True])
def test_a_branch_ending_in_a_gate_then_two_gains_ends_at_the_residual_sum(reshaped):
    """NFNet's block end, x + alpha * (2.0 * (f * sigmoid(g(f)))): the sum is three products past
    the branch's last layer, and the layer still ends a residual branch; also where the gate
    reaches the product through shape-only ops (ECA's ``sigmoid(y).view(...).expand_as(x)``)."""
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2, self.gate = nn.Linear(8, 8), nn.Linear(8, 8), nn.Linear(8, 8)
            self.head = nn.Linear(8, 2)

        def forward(self, x):
            f = self.fc2(torch.relu(self.fc1(x)))
            gate = torch.sigmoid(self.gate(f))
            f = f * (gate.view(-1, 8).expand_as(f) if reshaped else gate)
            return self.head(x + 0.2 * (2.0 * f))

    g = captured(Block(), inputs=torch.randn(4, 8))
    assert g.params["fc2.weight"].residual_end and not g.params["fc1.weight"].residual_end
