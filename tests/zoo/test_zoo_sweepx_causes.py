"""False-alarm causes found by the fourth held-out transformers sweep (issue 8) and the text
leftovers of the third: each with the measurement of what is really there, and a control where
the real defect still fires."""

from __future__ import annotations

import torch
from torch import nn

import initaudit
from zoo.conftest import build
from zoo.registry import BATCH


def _of(report, rule, layer="", severities=("error", "warning")):
    return [f for f in report.findings if f.rule == rule and layer in f.layer and f.severity.value in severities]


# --- Longformer: global attention is input-gated ------------------------------------------------------

def _global_grads(model, inputs) -> dict[str, bool]:
    """Whether each global projection receives a gradient from sum(logits)."""
    model.zero_grad()
    model(**inputs).logits.sum().backward()
    got = {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in model.named_parameters()
           if "_global" in n and n.endswith("weight")}
    model.zero_grad()
    return got


def test_longformer_global_projections_are_probed_by_the_librarys_convention():
    model, inputs = build("longformer")
    # measured: without global_attention_mask no token attends globally and the global
    # projections get no gradient; with the first token global (the documented use) all do
    assert not any(_global_grads(model, inputs).values())
    mask = torch.zeros_like(inputs["input_ids"])
    mask[:, 0] = 1
    assert all(_global_grads(model, {**inputs, "global_attention_mask": mask}).values())
    report = initaudit.audit(model)  # no inputs: by convention, the first token global
    assert "global_attention_mask" in report.probe.to_json()["convention"]
    assert not _of(report, "IA209", severities=("error", "warning", "info"))
    # the sliding-window scores (einsum over strided chunks, cat with the global scores,
    # softmax) are attention logits: the query/key gradients are small by design
    assert not _of(report, "IA206")
    assert not [f for f in report.findings if f.severity.value == "error"]


def test_longformer_with_inputs_that_set_no_global_token_says_input_gated():
    model, inputs = build("longformer")
    report = initaudit.audit(model, inputs=inputs)
    gated = [f for f in report.findings if f.rule == "IA209"]
    assert gated and all(f.severity.value == "info" and "is_global_attn" in f.message for f in gated)
    assert {f.layer.rpartition(".")[2] for f in gated} == {"query_global", "key_global", "value_global"}


class SideInput(nn.Module):
    """A layer only a helper method uses, the helper called under ``if extra is not None``
    (``wired``) or never called (a forgotten wiring)."""

    def __init__(self, wired: bool):
        super().__init__()
        self.wired = wired
        self.fc, self.side, self.head = nn.Linear(16, 16), nn.Linear(16, 16), nn.Linear(16, 4)

    def forward(self, x, extra=None):
        h = self.fc(x)
        if extra is not None and self.wired:
            h = h + self._side(extra)
        return self.head(h)

    def _side(self, extra):
        return self.side(extra)


class Unwired(SideInput):
    def forward(self, x, extra=None):
        return self.head(self.fc(x))


def test_a_layer_used_by_a_helper_called_only_for_an_input_is_input_gated_and_an_unwired_one_warns():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    gated = _of(initaudit.audit(SideInput(wired=True), inputs=x), "IA209", severities=("info",))
    assert [f.layer for f in gated] == ["side"] and "extra is not None" in gated[0].message
    # control: the helper exists but nothing calls it: unused, a warning
    unwired = _of(initaudit.audit(Unwired(wired=True), inputs=x), "IA209")
    assert [f.layer for f in unwired] == ["side"]


class SigmoidStackThenSoftmax(nn.Module):
    """Ten sigmoid layers at Xavier scale and a classifier whose logits go through a softmax:
    the gradient really vanishes towards the input."""

    def __init__(self, width: int = 64, depth: int = 10):
        super().__init__()
        self.body = nn.ModuleList(nn.Linear(width, width) for _ in range(depth))
        for m in self.body:
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        self.head = nn.Linear(width, 8)

    def forward(self, x):
        h = x
        for m in self.body:
            h = torch.sigmoid(m(h))
        return torch.softmax(self.head(h), dim=-1)


def test_layers_reaching_a_softmax_with_no_product_are_still_judged_for_depth():
    torch.manual_seed(0)
    report = initaudit.audit(SigmoidStackThenSoftmax().eval(), inputs=torch.randn(BATCH * 4, 64))
    assert [f.layer for f in _of(report, "IA206")] == ["body.0.weight"]


# --- NLLB-MoE: an expert no token was routed to ---------------------------------------------------------

class TinyMoE(nn.Module):
    """Top-1 routing over four experts, each expert's output weighted by its router probability
    (the dispatch loop of NLLB-MoE and Switch); ``favour`` biases the router towards experts."""

    def __init__(self, favour: tuple[float, ...] = (3.0, 3.0, 3.0, -30.0)):
        super().__init__()
        self.router = nn.Linear(16, 4)
        self.experts = nn.ModuleList(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16)) for _ in range(4))
        self.head = nn.Linear(16, 4)
        with torch.no_grad():
            self.router.bias.copy_(torch.tensor(favour))

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=-1)
        top = probs.argmax(dim=-1)
        out = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):
            idx = (top == i).nonzero()[:, 0]
            if idx.numel():
                out = out.index_add(0, idx, expert(x[idx]) * probs[idx, i, None])
        return self.head(out)


class DenseEnsemble(TinyMoE):
    """The same members summed with no router, the last one forgotten: a wiring bug."""

    def forward(self, x):
        return self.head(sum(e(x) for e in self.experts[:3]))


def test_an_expert_no_token_was_routed_to_is_input_gated_and_a_forgotten_member_warns():
    torch.manual_seed(0)
    x = torch.randn(64, 16)
    model = TinyMoE()
    gated = [f for f in initaudit.audit(model, inputs=x).findings if f.rule == "IA209"]
    assert {(f.layer, f.severity.value) for f in gated} == {("experts.3.0", "info"), ("experts.3.2", "info")}
    assert "router" in gated[0].message
    # measured: the expert is reached when the router's scores favour it
    favoured = TinyMoE(favour=(0.0, 0.0, 0.0, 30.0))
    favoured.load_state_dict({**model.state_dict(), "router.bias": torch.tensor([0.0, 0.0, 0.0, 30.0])})
    favoured(x).sum().backward()
    assert favoured.experts[3][0].weight.grad.abs().sum() > 0
    # control: members summed with no router, one never called: a warning
    dense = _of(initaudit.audit(DenseEnsemble(), inputs=x), "IA209")
    assert [f.layer for f in dense if "experts" in f.layer] == ["experts.3.0", "experts.3.2"]


def test_nllb_moe_unrouted_experts_are_not_unused(zoo_report):
    model, inputs = build("nllb_moe")
    got = []
    hook = model.model.encoder.layers[0].ffn.experts.register_forward_pre_hook(lambda m, a: got.append(a[1]))
    with torch.no_grad():
        model(**inputs)
    hook.remove()
    per_expert = got[0].sum(0)
    assert (per_expert == 0).any() and (per_expert > 0).sum() >= 2  # measured: routing skips some at init
    for form in ("module", "safetensors-model"):
        report = zoo_report("nllb_moe", form)
        assert not _of(report, "IA209"), form
        assert not [f for f in report.findings if f.severity.value == "error"], form


# --- Zamba2: a fused projection whose slices feed different functions ---------------------------------

def _spreads(model, inputs, names: list[str]) -> dict[str, float]:
    out = {}

    def keep(name):
        def hook(m, args, kwargs, o):
            x = args[0] if args else kwargs.get("hidden_states")
            out.setdefault(name, ((o[0] if isinstance(o, tuple) else o).std().item(), x.std().item()))
        return hook

    hooks = [model.get_submodule(n).register_forward_hook(keep(n), with_kwargs=True) for n in names]
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in hooks:
            h.remove()
    return out


def test_zamba2_in_proj_slices_have_no_single_activation(zoo_report):
    model, inputs = build("zamba2")
    mamba = model.model.layers[0].mamba
    rows = mamba.in_proj.out_features
    # z (gate of the norm), x/B/C (the conv) and dt (softplus, one row per head): softplus
    # follows n_heads of the rows only
    assert mamba.num_heads < rows / 10
    # measured: the mixer is a residual branch that starts small at the family's 0.02 (every
    # Zamba2 linear), while the residual stream carries the signal through the layer
    got = _spreads(model, inputs, ["model.layers.0.input_layernorm", "model.layers.0.mamba", "model.layers.0"])
    normed, _ = got["model.layers.0.input_layernorm"]
    branch, _ = got["model.layers.0.mamba"]
    out, into = got["model.layers.0"]
    assert branch / normed < 0.01 and 0.8 < out / into < 1.25
    for form in ("module", "safetensors-model"):
        report = zoo_report("zamba2", form)
        assert not _of(report, "IA104", "in_proj"), form
        row = next(r for r in report.layers if r["param"] == "model.layers.0.mamba.in_proj.weight")
        assert row["activation"] is None


class SplitTanhStack(nn.Module):
    """Three layers at N(0, 0.02), each output cut in two halves that both go through tanh:
    one function on every row, a real shrink."""

    def __init__(self):
        super().__init__()
        self.fc = nn.ModuleList(nn.Linear(64, 128) for _ in range(3))
        self.head = nn.Linear(64, 4)
        for m in self.fc:
            nn.init.normal_(m.weight, std=0.02)

    def forward(self, x):
        for m in self.fc:
            a, b = m(x).chunk(2, dim=-1)
            x = torch.tanh(a) + torch.tanh(b)
        return self.head(x)


def test_a_split_output_with_one_activation_on_every_slice_is_still_judged():
    torch.manual_seed(0)
    report = initaudit.audit(SplitTanhStack().eval(), inputs=torch.randn(16, 64))
    assert {"fc.0.weight", "fc.1.weight"} <= {f.layer for f in _of(report, "IA104")}


# --- ESM: a head called by another entry point ------------------------------------------------------------

class TwoEntries(SideInput):
    """``side`` called by a public method other than forward (``score``)."""

    def forward(self, x, extra=None):
        return self.head(self.fc(x))

    def score(self, x):
        return self.side(x)


class ReturnedOnly(SideInput):
    """``side`` only returned by a public method, never called: a forgotten layer."""

    def forward(self, x, extra=None):
        return self.head(self.fc(x))

    def get_side(self):
        return self.side


def test_a_layer_called_only_by_another_public_method_is_info_and_a_returned_one_warns():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    called = [f for f in initaudit.audit(TwoEntries(wired=True), inputs=x).findings if f.rule == "IA209"]
    assert [(f.layer, f.severity.value) for f in called] == [("side", "info")]
    assert "TwoEntries.score" in called[0].message
    returned = _of(initaudit.audit(ReturnedOnly(wired=True), inputs=x), "IA209")
    assert [f.layer for f in returned] == ["side"]


def test_esm_contact_head_is_another_entry_point():
    model, inputs = build("esm")
    # measured: forward's masked-LM logits never reach the contact head; predict_contacts does
    model.zero_grad()
    model(**inputs).logits.sum().backward()
    head = model.esm.contact_head.regression.weight
    assert head.grad is None
    model.esm.predict_contacts(inputs["input_ids"], inputs["attention_mask"]).sum().backward()
    assert head.grad is not None and head.grad.abs().sum() > 0
    model.zero_grad()
    report = initaudit.audit(model)
    assert not _of(report, "IA209")
    assert [f.severity.value for f in report.findings if f.rule == "IA209"] == ["info"]


# --- BLIP-2: a Q-Former reading zero learned query tokens ------------------------------------------------

class LearnedQueries(nn.Module):
    """Learned query tokens (zero, as transformers initialises BLIP-2's), normed, projected,
    pooled and added to an encoding of the data; ``learn=False`` freezes the tokens."""

    def __init__(self, learn: bool = True):
        super().__init__()
        self.queries = nn.Parameter(torch.zeros(1, 4, 16), requires_grad=learn)
        self.norm, self.q = nn.LayerNorm(16), nn.Linear(16, 16)
        self.enc, self.head = nn.Linear(16, 16), nn.Linear(16, 4)
        nn.init.zeros_(self.q.bias)  # transformers' zero biases

    def forward(self, x):
        h = self.q(self.norm(self.queries.expand(x.shape[0], -1, -1)))
        return self.head(torch.tanh(h.mean(1) + self.enc(x)))


def _first_step_unblocks(model, x, layer: nn.Linear) -> tuple[bool, bool]:
    """(no gradient at init, a gradient after one Adam step) for ``layer``'s weight."""
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(x).sum().backward()
    before = layer.weight.grad is None or not bool(layer.weight.grad.abs().sum() > 0)
    opt.step()
    opt.zero_grad()
    model(x).sum().backward()
    return before, bool(layer.weight.grad.abs().sum() > 0)


def test_units_reading_zero_learned_tokens_are_unblocked_by_the_first_step_and_frozen_ones_stay_errors():
    torch.manual_seed(0)
    x = torch.randn(8, 16)
    report = initaudit.audit(LearnedQueries(), inputs=x)
    found = [(f.layer, f.severity.value) for f in report.findings if f.rule == "IA208"]
    assert found == [("q", "info")]
    model = LearnedQueries()
    assert _first_step_unblocks(model, x, model.q) == (True, True)  # measured
    # control: frozen zero tokens never move, the copies stay copies: an error
    frozen = initaudit.audit(LearnedQueries(learn=False), inputs=x)
    assert [(f.layer, f.severity.value) for f in frozen.findings if f.rule == "IA208"] == [("q", "error")]


def _blip2():
    import transformers

    vis = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
               intermediate_size=64)
    config = transformers.Blip2Config(
        vision_config=vis, qformer_config=dict(vocab_size=96, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=64,
                                               encoder_hidden_size=32, max_position_embeddings=64),
        text_config=dict(model_type="opt", vocab_size=96, hidden_size=32, ffn_dim=64, num_hidden_layers=2,
                         num_attention_heads=4, word_embed_proj_dim=32, max_position_embeddings=64),
        num_query_tokens=4, image_token_id=95)
    torch.manual_seed(0)
    return transformers.Blip2Model(config).eval()


def test_blip2_qformer_first_layer_is_unblocked_by_its_query_tokens():
    model = _blip2()
    assert not model.query_tokens.detach().abs().sum()  # zero-initialised by the library
    report = initaudit.audit(model)  # inputs by convention
    # the one error is true: Blip2VisionConfig's initializer_range is 1e-10, so the vision tower's
    # layer norms read a signal far below their eps (its output measured at ~1e-6)
    assert model.config.vision_config.initializer_range == 1e-10
    vision_out = model.vision_model(torch.randn(2, 3, 32, 32)).last_hidden_state
    assert vision_out.std() < 1e-4
    errors = [f for f in report.findings if f.severity.value == "error"]
    assert [(f.rule, f.layer.startswith("vision_model.")) for f in errors] == [("IA204", True)]
    assert "below the norm's eps" in errors[0].message
    infos = [f for f in report.findings if f.rule == "IA208"]
    assert infos and all(f.severity.value == "info" and "query_tokens" in f.message for f in infos)


# --- probe inputs by convention: an audio codec, Perceiver's text models ---------------------------------

def _build(config_cls: str, model_cls: str, **kw) -> nn.Module:
    import transformers

    torch.manual_seed(0)
    return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kw)).eval()


def test_encodec_is_probed_with_a_waveform_of_its_channels():
    model = _build("EncodecConfig", "EncodecModel", hidden_size=32, num_filters=8, num_residual_layers=1,
                   upsampling_ratios=[4, 2], codebook_size=64, codebook_dim=32, audio_channels=1,
                   sampling_rate=8000, target_bandwidths=[12.0])
    report = initaudit.audit(model)
    probe = report.probe.to_json()
    assert probe["ran"], probe["skipped_reason"]
    assert probe["input_shapes"][0][1:] == [1, 16 * 8]  # (batch, audio_channels, 16 frames of 8 samples)
    assert not [f for f in report.findings if f.severity.value == "error"]


def test_perceiver_text_model_is_probed_with_token_ids_under_inputs():
    model = _build("PerceiverConfig", "PerceiverForMaskedLM", vocab_size=96, d_latents=32, num_latents=8,
                   d_model=32, num_blocks=1, num_self_attends_per_block=2, num_self_attention_heads=4,
                   num_cross_attention_heads=4, max_position_embeddings=64)
    probe = initaudit.audit(model).probe.to_json()
    assert probe["ran"], probe["skipped_reason"]
    assert probe["convention"].startswith("transformers: inputs")
