"""False-alarm causes found on held-out transformers architectures (a sweep of 39 text, audio,
MoE and state-space models not in the first zoo), each with a measurement of what is really
there, and a control that keeps the true finding."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import initaudit
from zoo.conftest import build
from zoo.forms import call, save_safetensors

MODEL_FORMS = ("module", "safetensors-model")


def _of(report, rule, layer=""):
    return [f for f in report.findings if f.rule == rule and layer in f.layer and f.severity.value != "info"]


def _inputs_of(model, inputs, name: str) -> torch.Tensor:
    got = []
    hook = model.get_submodule(name).register_forward_pre_hook(lambda m, a: got.append(a[0].detach()))
    try:
        with torch.no_grad():
            call(model.eval(), inputs)
    finally:
        hook.remove()
    return got[0]


def _outputs_of(model, inputs, names: list[str]) -> dict[str, torch.Tensor]:
    got = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, a, o, n=n: got.setdefault(n, (o[0] if isinstance(o, tuple) else o).detach())) for n in names]
    try:
        with torch.no_grad():
            call(model.eval(), inputs)
    finally:
        for h in hooks:
            h.remove()
    return got


# --- Mamba: a state-space decay is not a layer ---------------------------------------------------------

def test_mamba_a_log_rows_are_its_design_not_copied_units(zoo_report):
    model, inputs = build("mamba")
    mixer = model.backbone.layers[0].mixer
    a_log = mixer.A_log.detach()
    n = a_log.shape[1]
    # S4D-real: A = -exp(A_log) = -(1..N) in every channel: identical rows, positive mean
    assert torch.allclose(a_log, torch.log(torch.arange(1, n + 1, dtype=torch.float32)).expand_as(a_log))
    # the channels it decays carry different signals, so identical decays make no copied units
    y = _inputs_of(model, inputs, "backbone.layers.0.mixer.out_proj").reshape(-1, a_log.shape[0])
    corr = torch.corrcoef(y.T)
    off = corr[~torch.eye(len(corr), dtype=torch.bool)]
    assert off.abs().max() < 0.999
    for form in (*MODEL_FORMS, "safetensors-bare"):
        report = zoo_report("mamba", form)
        assert not [f for f in report.findings if "A_log" in f.layer and f.rule in ("IA103", "IA105")], form
        assert not [f for f in report.findings if f.severity.value == "error"], form


class RawLinear(nn.Module):
    """A layer written with raw parameters, applied by matmul: its rows are units."""

    def __init__(self, copied: bool):
        super().__init__()
        self.w = nn.Parameter(torch.rand(32, 16) if not copied else torch.randn(1, 16).repeat(32, 1) * 0.25)
        self.head = nn.Linear(32, 4)

    def forward(self, x):
        return self.head(torch.relu(x @ self.w.t()))


def test_raw_parameters_applied_as_a_layer_are_still_judged(tmp_path):
    torch.manual_seed(0)
    copied = initaudit.audit(RawLinear(copied=True))
    assert [f.layer for f in _of(copied, "IA103")] == ["w"]
    shifted = initaudit.audit(RawLinear(copied=False))  # torch.rand: mean 0.5
    assert [f.layer for f in _of(shifted, "IA105")] == ["w"]
    bare = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    with torch.no_grad():
        bare[0].weight[1:] = bare[0].weight[0]
    path = save_safetensors(bare, tmp_path / "m.safetensors")
    assert [f.layer for f in _of(initaudit.audit(path), "IA103")] == ["0.weight"]


class ConstGate(nn.Module):
    """WavLM's gated relative-position constant, ones(1, heads, 1, 1), and a constant per-channel
    decay table, beside a zeroed layer."""

    def __init__(self):
        super().__init__()
        self.gru_rel_pos_const = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.decay = nn.Parameter(torch.ones(4, 8))
        self.fc = nn.Linear(16, 16)
        nn.init.zeros_(self.fc.weight)


def test_a_constant_parameter_of_no_layer_in_a_bare_checkpoint_is_not_a_dead_layer(tmp_path):
    report = initaudit.audit(save_safetensors(ConstGate(), tmp_path / "m.safetensors"))
    # the zeroed layer is still found; alone in a file with no architecture (no peers), its place
    # cannot be told (hidden or a zero-initialised end), so a warning that says so
    assert [(f.layer, f.severity.value) for f in report.findings if f.rule == "IA102" and f.severity.value != "info"] \
        == [("fc.weight", "warning")]


# --- Gemma-2: x + norm(f(x)) --------------------------------------------------------------------------

def test_gemma2_sandwich_norm_resets_the_small_branch(zoo_report):
    model, inputs = build("gemma2")
    layer = "model.layers.0"
    got = _outputs_of(model, inputs, [f"{layer}.mlp.down_proj", f"{layer}.post_feedforward_layernorm"])
    x = _inputs_of(model, inputs, f"{layer}.mlp")
    branch, normed = got[f"{layer}.mlp.down_proj"], got[f"{layer}.post_feedforward_layernorm"]
    # N(0, 0.02) gate/up/down at width 32-64: the branch really is ~1e-3 of its input ...
    assert branch.std() / x.std() < 0.01
    # ... and the post-branch norm gives the residual stream a unit-scale branch: nothing shrinks
    assert 0.5 < normed.std() < 2.0
    for form in MODEL_FORMS:
        assert not _of(zoo_report("gemma2", form), "IA104", ".mlp."), form


class NormedChain(nn.Module):
    """norm -> three tanh layers at N(0, 0.02) -> norm -> head, with no skip connection."""

    def __init__(self, residual: bool):
        super().__init__()
        self.residual = residual
        self.pre, self.post = nn.LayerNorm(64), nn.LayerNorm(64)
        self.fc = nn.ModuleList(nn.Linear(64, 64) for _ in range(3))
        self.head = nn.Linear(64, 4)
        for m in self.fc:
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, x):
        h = self.pre(x)
        for m in self.fc:
            h = torch.tanh(m(h))
        h = self.post(h)
        return self.head(x + h if self.residual else h)


def test_a_small_stack_ending_in_a_norm_without_a_skip_still_warns():
    torch.manual_seed(0)
    plain = [f.layer for f in _of(initaudit.audit(NormedChain(residual=False)), "IA104")]
    assert {"fc.0.weight", "fc.1.weight"} <= set(plain)  # fc.2: a norm follows it (info)
    assert not _of(initaudit.audit(NormedChain(residual=True)), "IA104", "fc.")


def test_gemma2_soft_capped_scores_are_attention_scores_in_onnx(zoo_report, tmp_path):
    from initaudit.loaders.target import load_target
    from zoo.forms import export_onnx

    model, inputs = build("gemma2")
    cap = model.config.attn_logit_softcapping
    assert cap and cap > 0  # scores = cap * tanh(scores / cap) before the softmax
    graph, _ = load_target(str(export_onnx(model, inputs, tmp_path / "g.onnx")))
    assert sum(n.kind == "attention" for n in graph.nodes) == model.config.num_hidden_layers
    assert not _of(zoo_report("gemma2", "onnx"), "IA104")


# --- Qwen2-MoE: a branch behind a sigmoid gate ------------------------------------------------------------

def test_qwen2_moe_shared_expert_behind_its_gate_is_a_residual_branch(zoo_report):
    model, inputs = build("qwen2_moe")
    mlp = "model.layers.0.mlp"
    gate = torch.sigmoid(_outputs_of(model, inputs, [f"{mlp}.shared_expert_gate"])[f"{mlp}.shared_expert_gate"])
    assert 0.3 < float(gate.min()) and float(gate.max()) < 0.7  # half open for every token at init
    x = _inputs_of(model, inputs, mlp)
    down = _outputs_of(model, inputs, [f"{mlp}.shared_expert.down_proj"])[f"{mlp}.shared_expert.down_proj"]
    assert down.std() / x.std() < 0.01  # a small branch, added to the residual stream
    for form in MODEL_FORMS:
        report = zoo_report("qwen2_moe", form)
        rows = {r["param"]: r for r in report.layers}
        assert rows[f"{mlp}.shared_expert.down_proj.weight"]["residual_end"]
        assert not _of(report, "IA104", mlp), form


class GatedChain(nn.Module):
    """x -> tanh stack at N(0, 0.02) -> * sigmoid(gate(x)) -> head: a gated branch with no skip."""

    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(64, 64) for _ in range(3))
        self.gate = nn.Linear(64, 1)
        self.head = nn.Linear(64, 4)
        for m in self.fc:
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, x):
        h = x
        for m in self.fc:
            h = torch.tanh(m(h))
        return self.head(h * torch.sigmoid(self.gate(x)))


def test_a_gated_stack_with_no_sum_after_it_still_warns():
    torch.manual_seed(0)
    report = initaudit.audit(GatedChain())
    assert not report.layers or not next(r for r in report.layers if r["param"] == "fc.2.weight")["residual_end"]
    assert {"fc.1.weight", "fc.2.weight"} <= {f.layer for f in _of(report, "IA104")}


# --- Qwen3 exported to ONNX: LLaMA's RMSNorm as Sqrt, Div(1, .), Mul --------------------------------------

def test_qwen3_onnx_norms_are_norm_nodes(zoo_report):
    report = zoo_report("qwen3", "onnx")
    assert report.probe is not None and report.probe.ran
    assert not [f for f in report.findings if f.rule in ("IA205", "IA204", "IA109", "IA110")
                and f.severity.value != "info"]
    # q_proj and k_proj of both layers feed q_norm / k_norm (RMSNorm over each head)
    assert sum(bool(r["normalized_after"]) for r in report.layers) >= 4


# --- Mixtral: expert weights applied through views the recorder follows ----------------------------------

def test_moe_expert_weights_stay_judged_as_weights():
    pytest.importorskip("transformers")
    import transformers

    torch.manual_seed(0)
    config = transformers.MixtralConfig(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2, num_local_experts=4,
                                        num_experts_per_tok=2, max_position_embeddings=64)
    model = transformers.MixtralForCausalLM(config).eval()
    experts = model.model.layers[0].mlp.experts
    with torch.no_grad():
        experts.gate_up_proj.zero_()  # a defect: every expert's output is zero
        assert experts(torch.randn(16, 32), torch.zeros(16, 2, dtype=torch.long),
                       torch.ones(16, 2)).abs().max() == 0
    report = initaudit.audit(model)
    assert "model.layers.0.mlp.experts.down_proj" in {r["param"] for r in report.layers}
    assert [f.layer for f in report.findings if f.rule == "IA102"] == ["model.layers.0.mlp.experts.gate_up_proj"]


class FunctionalAttention(nn.Module):
    """WavLM's attention: its projections' weights handed to F.multi_head_attention_forward, an
    op nothing models, so what follows them is unknown (not "no activation")."""

    def __init__(self, d: int = 32):
        super().__init__()
        self.q, self.k, self.v, self.out = (nn.Linear(d, d) for _ in range(4))
        for m in (self.q, self.k, self.v, self.out):
            nn.init.normal_(m.weight, std=0.02)
        self.head = nn.Linear(d, 4)

    def forward(self, x):
        x = x.transpose(0, 1)
        bias = torch.cat((self.q.bias, self.k.bias, self.v.bias))
        y, _ = nn.functional.multi_head_attention_forward(
            x, x, x, 32, 4, torch.empty([0]), bias, None, None, False, 0.0, self.out.weight, self.out.bias,
            use_separate_proj_weight=True, q_proj_weight=self.q.weight, k_proj_weight=self.k.weight,
            v_proj_weight=self.v.weight, need_weights=False)
        return self.head(y.transpose(0, 1).mean(1))


def test_weights_an_unmodelled_op_applies_keep_an_unknown_activation():
    torch.manual_seed(0)
    report = initaudit.audit(FunctionalAttention(), inputs=torch.randn(4, 8, 32))
    assert {"q.weight", "k.weight", "v.weight", "out.weight"} <= {r["param"] for r in report.layers}
    assert not _of(report, "IA104")


# --- ConvBERT: softmax weights from a layer's logits, and nn.Dropout inside attention --------------------

def _relative_gradients(model, inputs) -> dict[str, float]:
    """|dL/dW| / |W| per weight under the probe's loss (a fixed random projection of the logits)."""
    model = model.eval()
    model.zero_grad()
    logits = call(model, inputs).logits
    r = torch.randn(logits.shape, generator=torch.Generator().manual_seed(0))
    ((logits * r).sum() / logits.shape[0]).backward()
    out = {n: float(p.grad.norm() / p.detach().norm()) for n, p in model.named_parameters()
           if p.grad is not None and p.dim() > 1}
    model.zero_grad()
    return out


def test_convbert_dynamic_kernels_are_small_by_design_not_a_vanishing_depth(zoo_report):
    from initaudit.loaders.target import load_target
    from initaudit.probe import ProbeOptions, capture_graph

    model, inputs = build("convbert")
    ratio = _relative_gradients(model, inputs)
    att = "convbert.encoder.layer.{}.attention.self.{}.weight"
    ffn = ratio["convbert.encoder.layer.1.intermediate.dense.weight"]
    for part in ("key_conv_attn_layer.depthwise", "key_conv_attn_layer.pointwise", "conv_kernel_layer"):
        first, last = ratio[att.format(0, part)], ratio[att.format(1, part)]
        assert 1 / 3 < first / last < 3, part  # the same in both layers: no fall with depth ...
        assert first < 1e-3 * ffn, part  # ... but ~1e-5 of the FFN's in every layer, by design
    # the kernels are softmax(conv_kernel_layer(key_conv(x) * query(x))) averaging conv_out_layer's
    # unfolded span; the self-attention's softmax(Q K^T) reaches V through an nn.Dropout module
    graph, _ = load_target(model)
    capture_graph(graph, ProbeOptions())
    kinds = [n.op for n in graph.nodes if n.kind == "attention"]
    layers = model.config.num_hidden_layers
    assert kinds.count("attention(weights)") == layers and kinds.count("attention(decomposed)") == layers
    for form in MODEL_FORMS:
        assert not _of(zoo_report("convbert", form), "IA206"), form


class PooledSigmoidStack(nn.Module):
    """Ten sigmoid layers at Xavier scale, then attention pooling: softmax(score(h)) over the
    tokens weights h (``h^T @ w``), then a head."""

    def __init__(self, width: int = 64, depth: int = 10):
        super().__init__()
        self.body = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        for m in self.body:
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        self.score = nn.Linear(width, 1)
        self.head = nn.Linear(width, 4)

    def forward(self, x):
        h = x
        for m in self.body:
            h = torch.sigmoid(m(h))
        w = torch.softmax(self.score(h), dim=1)  # (batch, tokens, 1)
        return self.head((h.transpose(1, 2) @ w).squeeze(-1))


def test_softmax_pooling_is_recognised_and_a_vanishing_stack_before_it_still_found():
    torch.manual_seed(0)
    model = PooledSigmoidStack().eval()
    x = torch.randn(8, 12, 64)
    report = initaudit.audit(model, inputs=x)
    model.zero_grad()
    model(x).sum().backward()
    ratio = {n: float(p.grad.norm() / p.detach().norm()) for n, p in model.named_parameters()
             if n.endswith("weight")}
    assert ratio["body.0.weight"] < 0.01 * ratio["body.9.weight"]  # the fall is real
    assert [f.layer for f in _of(report, "IA206")] == ["body.0.weight"]
    # the pooling is softmax weights averaging h over the tokens: inputs [logits, values]
    from initaudit.loaders.target import load_target
    from initaudit.probe import ProbeOptions, capture_graph

    graph, _ = load_target(model)
    capture_graph(graph, ProbeOptions(inputs=x))
    pooled = [n for n in graph.nodes if n.kind == "attention"]
    assert [(n.op, len(n.inputs), n.attrs.get("tokens")) for n in pooled] == [("attention(weights)", 2, 12)]


def test_a_text_model_whose_config_names_no_vocabulary_is_probed_with_no_inputs():
    pytest.importorskip("transformers")
    import transformers

    torch.manual_seed(0)  # CANINE reads Unicode code points into hashed tables: no vocab_size
    config = transformers.CanineConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                       intermediate_size=64, max_position_embeddings=256, num_hash_buckets=64,
                                       downsampling_rate=4, local_transformer_stride=8)
    assert getattr(config, "vocab_size", None) is None
    report = initaudit.audit(transformers.CanineModel(config).eval())
    assert report.probe is not None and report.probe.ran
    assert "input_ids" in report.probe.convention


def test_a_vision_encoder_decoder_is_probed_at_its_encoders_image_size():
    pytest.importorskip("transformers")
    import transformers

    torch.manual_seed(0)
    encoder = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                     num_hidden_layers=2, num_attention_heads=4)
    decoder = transformers.GPT2Config(vocab_size=96, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                      add_cross_attention=True, is_decoder=True)
    config = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id, config.pad_token_id = 1, 0
    assert getattr(config, "image_size", None) is None  # only the encoder's config knows it
    report = initaudit.audit(transformers.VisionEncoderDecoderModel(config).eval())
    assert report.probe is not None and report.probe.ran, report.probe.skipped_reason
    assert report.probe.convention == "transformers: pixel_values + decoder_input_ids"
    assert [tuple(s) for s in report.probe.input_shapes][0][1:] == (3, 32, 32)
