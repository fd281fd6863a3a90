"""Causes found by the held-out sweep of vision and plain torch.nn architectures (issue 8), each
with a measurement of what is really there and a control that must still be found."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import initaudit
from zoo.conftest import build
from zoo.forms import call, save_safetensors


def _of(report, rule, severity=None):
    return [f for f in report.findings if f.rule == rule and (severity is None or f.severity.value == severity)]


def _layer(report, param):
    return next(row for row in report.to_json()["layers"] if row["param"] == param)


# --- ONNX: a Mul by a per-channel initializer is a LayerScale gain ------------------------------------

def test_layerscale_residual_ends_are_seen_in_an_onnx_export(zoo_report):
    model, inputs = build("deit3_timm")
    block = model.blocks[0]
    gamma = block.ls1.gamma
    assert float(gamma.detach().abs().max()) < 1e-4  # timm's DeiT3 LayerScale init: each branch adds ~1e-5 of itself
    x = torch.randn(2, 17, 64)
    with torch.no_grad():
        assert (block(x) - x).std() / x.std() < 1e-3  # the block starts as the identity
    report = zoo_report("deit3_timm", "onnx")
    ends = [row for row in report.to_json()["layers"] if row["residual_end"] and row["op"] == "MatMul"]
    assert len(ends) == 8  # attn.proj and mlp.fc2 of 4 blocks, through the Mul by gamma
    assert not [f for f in report.findings if f.severity.value != "info"]


def test_a_plain_per_channel_scale_without_a_skip_is_still_judged(tmp_path):
    """The gain node carries the multiply on: a 0.02 tanh stack behind a per-channel Mul in ONNX
    is no residual branch and still warns."""
    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(nn.Linear(64, 64) for _ in range(4))
            self.gain = nn.Parameter(torch.full((64,), 0.5))
            for m in self.layers:
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

        def forward(self, x):
            for m in self.layers:
                x = torch.tanh(m(x) * self.gain)
            return x

    from zoo.forms import export_onnx

    path = export_onnx(Scaled(), torch.randn(4, 64), tmp_path / "m.onnx")
    report = initaudit.audit(path, probe_enabled=False)
    assert [f for f in _of(report, "IA104", "warning")]
    assert not any(row["residual_end"] for row in report.to_json()["layers"])


# --- gradients of every layer of a LayerScale branch ----------------------------------------------------

def test_cait_patch_block_gradients_are_small_by_layerscale_design(zoo_report):
    model, inputs = build("cait_timm")
    model = copy.deepcopy(model).train(False)
    out = call(model, inputs)
    out.sum().backward()
    patch = model.blocks[-1].attn.qkv.weight
    cls = model.blocks_token_only[0].attn.v.weight
    ratio = (patch.grad.norm() / patch.norm()) / (cls.grad.norm() / cls.norm())
    # the patch tokens reach the class token only through the class-attention branch's 1e-5 gain:
    # a second LayerScale factor, by design (measured ~1e-6..1e-7)
    assert ratio < 1e-4
    for form in ("module", "safetensors-model"):
        assert not _of(zoo_report("cait_timm", form), "IA206")


# --- per-channel vectors and tables no layer applies ------------------------------------------------------

def test_constant_temperatures_and_zero_bias_tables_are_not_copies_of_units(zoo_report):
    model, _ = build("swinv2_timm")
    scale = model.layers[0].blocks[0].attn.logit_scale
    assert scale.shape == (2, 1, 1) and torch.allclose(scale, torch.full_like(scale, 10.0).log())
    for form in ("module", "safetensors-model", "safetensors-bare"):
        assert not _of(zoo_report("swinv2_timm", form), "IA102", "error")
    levit, _ = build("levit_hf")
    biases = [n for n, p in levit.named_parameters() if n.endswith("attention_biases")]
    assert biases and all(bool((levit.get_parameter(n) == 0).all()) for n in biases)
    tables = [n for n in biases if sum(d > 1 for d in levit.get_parameter(n).shape) == 2]  # (heads, points)
    # zero (heads, points) tables the dataflow adds, never applies as a layer: not read as
    # hidden units (no finding, or an info one), never "units are copies"
    found = {f.layer: f for f in _of(zoo_report("levit_hf", "module"), "IA102")}
    assert tables
    assert all(found[n].severity.value == "info" for n in biases if n in found)


def test_a_zero_hidden_weight_is_still_an_error_beside_them():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    torch.nn.init.zeros_(model[2].weight)
    (f,) = _of(initaudit.audit(model, probe_enabled=False), "IA102")
    assert f.severity.value == "error"


# --- bare checkpoints: an output head from shapes ---------------------------------------------------------

def test_zero_mixer_head_in_a_bare_checkpoint_is_an_output_layer(zoo_report, tmp_path):
    model, inputs = build("mixer_timm")
    assert bool((model.head.weight == 0).all())  # timm zero-initialises the Mixer head
    (f,) = _of(zoo_report("mixer_timm", "safetensors-bare"), "IA102")
    assert f.layer == "head.weight" and f.severity.value == "info" and "output layer" in f.message
    broken = copy.deepcopy(model)
    torch.nn.init.zeros_(broken.blocks[1].mlp_channels.fc2.weight)  # a zeroed hidden layer: its width is read on
    found = _of(initaudit.audit(save_safetensors(broken, tmp_path / "m.safetensors")), "IA102", "error")
    assert [f.layer for f in found] == ["blocks.1.mlp_channels.fc2.weight"]


# --- scales divided away by a normalisation further on ----------------------------------------------------

def test_dcgan_first_conv_scale_is_divided_away_by_the_batchnorm_after_the_next(zoo_report):
    model, inputs = build("dcgan_d")
    model = copy.deepcopy(model).train()  # batch statistics, as in training
    bn = model.main[3]
    seen = []
    hook = bn.register_forward_hook(lambda m, a, out: seen.append(out.detach()))
    try:
        with torch.no_grad():
            call(model, inputs)
            model.main[0].weight.mul_(10.0)  # ten times the first conv's scale ...
            call(model, inputs)
    finally:
        hook.remove()
    # ... gives the same normalised signal (up to the norm's eps, 1e-5 beside a variance ~1e-3)
    assert torch.allclose(seen[0], seen[1], rtol=0.05, atol=0.02)
    for form in ("module", "safetensors-model", "onnx"):
        (f,) = [f for f in _of(zoo_report("dcgan_d", form), "IA104") if f.layer == "main.0.weight"]
        assert f.severity.value == "info" and "normalisation" in f.message


def test_the_same_convs_without_batchnorm_still_warn():
    model = nn.Sequential(nn.Conv2d(3, 16, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                          nn.Conv2d(16, 32, 4, 2, 1, bias=False), nn.LeakyReLU(0.2),
                          nn.Conv2d(32, 64, 4, 2, 1, bias=False), nn.LeakyReLU(0.2), nn.Flatten(),
                          nn.Linear(1024, 1))
    for m in model:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, 0.0, 0.02)
    report = initaudit.audit(model, inputs=torch.randn(4, 3, 32, 32))
    assert {f.layer for f in _of(report, "IA104", "warning")} >= {"0.weight", "2.weight"}


def test_levit_linear_before_its_batchnorm_is_normalised(zoo_report):
    """Linear -> flatten -> BatchNorm1d -> reshape_as(linear output): reshape_as takes only a
    shape from its second argument, so the Linear is followed by the norm, not the activation."""
    row = _layer(zoo_report("levit_hf", "module"), "levit.encoder.stages.0.layers.1.module.linear_up.linear.weight")
    assert row["normalized_after"] and row["activation"] is None


# --- ControlNet's zero convolutions block the first step only ---------------------------------------------

def test_controlnet_zero_convolutions_unblock_after_one_step(zoo_report):
    model, inputs = build("controlnet")
    model = copy.deepcopy(model).train(False)
    zero = [m for m in model.controlnet_down_blocks] + [model.controlnet_mid_block]
    assert all(bool((m.weight == 0).all()) for m in zero)

    def grads():
        model.zero_grad()
        out = model(**inputs)
        sum(t.sum() for t in [*out.down_block_res_samples, out.mid_block_res_sample]).backward()
        return model.conv_in.weight.grad.norm().item(), [m.weight.grad.norm().item() for m in zero]

    behind, own = grads()
    assert behind == 0 and all(g > 0 for g in own)  # blocked now, but the zero convs learn
    with torch.no_grad():
        for m in zero:
            m.weight.sub_(0.1 * m.weight.grad)  # one SGD step
    assert grads()[0] > 0  # the error reaches the layers behind them
    for form in ("module", "safetensors-model"):
        report = zoo_report("controlnet", form)
        assert not _of(report, "IA206", "error") and not _of(report, "IA208", "error")


def test_a_zero_layer_before_relu_still_blocks_for_good():
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))
    torch.nn.init.zeros_(model[2].weight)
    torch.nn.init.zeros_(model[2].bias)
    torch.nn.init.zeros_(model[4].weight)  # a zero head that learns does not unblock a dead ReLU layer
    blocked = [f for f in _of(initaudit.audit(model), "IA206", "error") if "blocked" in f.message]
    assert [f.layer for f in blocked] == ["0.weight"]


# --- probe conventions: diffusers 2-D transformers ------------------------------------------------------

def test_dit_is_probed_with_no_inputs():
    pytest.importorskip("diffusers")
    from diffusers import DiTTransformer2DModel

    torch.manual_seed(0)
    model = DiTTransformer2DModel(sample_size=8, in_channels=4, out_channels=4, patch_size=4, num_layers=2,
                                  num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=10,
                                  norm_num_groups=8).eval()
    probe = initaudit.audit(model, probe_batch_size=4).to_json()["probe"]
    assert probe["ran"], probe["skipped_reason"]
    assert probe["convention"] == "diffusers DiTTransformer2DModel: hidden_states + timestep + class_labels"


# --- NF-ResNet: ScaledStdConv2d gains beside the weight, zero at the branch end (skip-init) ---------------

def test_scaled_std_conv_gains_are_vectors_and_a_zero_gain_unblocks_after_one_step():
    layers = pytest.importorskip("timm.layers")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = layers.ScaledStdConv2d(16, 16, 3, padding=1)
            self.conv2 = layers.ScaledStdConv2d(16, 16, 1, gain_init=0.0)  # timm's zero_init_last

        def forward(self, x):
            return x + self.conv2(torch.relu(self.conv1(x)))

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), Block(), Block(), nn.Flatten(), nn.Linear(16 * 64, 4))
    x = torch.randn(4, 3, 8, 8)
    model(x).sum().backward()
    branch_end = model[1].conv2
    assert branch_end.weight.grad.norm() == 0 and branch_end.gain.grad.norm() > 0  # blocked now, the gain learns
    report = initaudit.audit(model, inputs=x)
    assert not [f for f in report.findings if f.severity.value == "error"]
    assert all(f.severity.value == "info" for f in _of(report, "IA208"))


# --- a flow's coupling: zero last layers whose branch gates the signal passing it (RealNVP, Glow) ---------

class _Coupling(nn.Module):
    """x_a + x_b * g(tanh(s(x_a))) + t(x_a) on the unmasked half (RealNVP); g = exp starts as the
    identity, g = tanh as a coupling that drops that half."""

    def __init__(self, gate=torch.exp, d: int = 8, h: int = 32):
        super().__init__()
        self.gate = gate
        self.register_buffer("mask", (torch.arange(d) % 2).float())
        self.s = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d))
        self.t = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d))
        for last in (self.s[-1], self.t[-1]):
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, x):
        xa = x * self.mask
        s = torch.tanh(self.s(xa)) * (1 - self.mask)
        return xa + (1 - self.mask) * (x * self.gate(s) + self.t(xa))


def _flow(gate):
    torch.manual_seed(0)
    return nn.Sequential(*[_Coupling(gate) for _ in range(3)], nn.Linear(8, 8))


def test_zero_ends_of_a_flow_coupling_gate_are_legitimate():
    model, x = _flow(torch.exp), torch.randn(64, 8)
    with torch.no_grad():
        assert torch.equal(model[:3](x), x)  # every coupling starts as the identity: exp(0) = 1
    model(x).pow(2).sum().backward()
    s_end = model[0].s[-1].weight.grad
    assert len({tuple(r) for r in s_end[0::2].tolist()}) == 4  # each unmasked unit of the zero layer gets its own gradient
    report = initaudit.audit(model, inputs=x)
    assert not _of(report, "IA102", "error") and not _of(report, "IA208", "warning")
    gated = [f for f in _of(report, "IA102", "info") if f.layer.endswith("s.2.weight")]
    assert len(gated) == 3 and all(f.evidence["position"].startswith("zero-initialised last layer of a branch that gates")
                                   for f in gated)


def test_a_zero_layer_whose_gate_closes_the_trunk_is_still_an_error():
    """With g = tanh the gate is tanh(0) = 0 at init: the coupling drops the unmasked half of its
    input (measured), so the zero layer is no legitimate start and stays an error."""
    model, x = _flow(torch.tanh), torch.randn(64, 8)
    with torch.no_grad():
        out = model[0](x)
    assert torch.equal(out[:, 0::2], torch.zeros_like(out[:, 0::2])) and out[:, 1::2].abs().min() > 0
    report = initaudit.audit(model, inputs=x)
    assert {f.layer for f in _of(report, "IA102", "error")} == {f"{i}.s.2.weight" for i in range(3)}


# --- a latent rounded before its decoder: a stop-gradient by design (diffusers' AutoencoderTiny) ----------

class _RoundedAE(nn.Module):
    def __init__(self, unused_result: bool = False):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 4, 3, 2, 1))
        self.dec = nn.Sequential(nn.ConvTranspose2d(4, 8, 4, 2, 1), nn.ReLU(), nn.ConvTranspose2d(8, 3, 4, 2, 1))
        self.side = nn.Conv2d(3, 3, 1)
        self.unused_result = unused_result

    def forward(self, x):
        z = torch.sigmoid(self.enc(x)).mul(255).round().byte()  # stored as bytes, as a latent cache does
        if self.unused_result:
            self.side(x)  # computed and dropped: really unused
        return self.dec(z / 255.0)


def test_parameters_behind_a_rounded_latent_are_stopped_not_unused():
    torch.manual_seed(0)
    model, x = _RoundedAE(unused_result=True), torch.randn(4, 3, 16, 16)
    model(x).sum().backward()
    assert model.enc[0].weight.grad is None and model.side.weight.grad is None  # no gradient reaches either
    report = initaudit.audit(model, inputs=x)
    warned = {f.layer for f in _of(report, "IA209", "warning")}
    stopped = {f.layer: f.evidence.get("stopped_at") for f in _of(report, "IA209", "info")}
    assert warned == {"side"}  # the dropped result is still reported
    assert stopped == {"enc.0": ["round"], "enc.2": ["round"]}


# --- a per-device cache a forward fills in place (timm's EfficientFormer attention_bias_cache) ----------

class _CachedBias(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.bias_table = nn.Parameter(torch.zeros(8))
        self.cache: dict = {}  # filled in eval mode, as timm's get_attention_biases does

    def forward(self, x):
        if not self.training:
            self.cache.setdefault(str(x.device), self.bias_table * 2)
        return self.fc(x) + self.cache.get(str(x.device), self.bias_table * 2)


def test_the_probe_leaves_no_tensor_in_a_cache_the_forward_fills_in_place():
    torch.manual_seed(0)
    model = _CachedBias().eval()
    initaudit.audit(model, inputs=torch.randn(4, 8))
    assert model.cache == {}  # the probe's tensor (part of its autograd graph) is not left in the model
    copy.deepcopy(model)  # a non-leaf tensor there made deepcopy fail (audit(path, model=model) copies it)


# --- probe conventions: SD3's joint text context and pooled projection, T2I-Adapter's image, TNT's size -----

def _probe_of(model):
    probe = initaudit.audit(model, probe_batch_size=4).to_json()["probe"]
    assert probe["ran"], probe["skipped_reason"]
    return probe["convention"]


def test_sd3_and_t2i_adapter_are_probed_with_no_inputs():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    sd3 = diffusers.SD3Transformer2DModel(sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                          caption_projection_dim=32, pooled_projection_dim=32,
                                          pos_embed_max_size=16).eval()
    assert _probe_of(sd3) == ("diffusers SD3Transformer2DModel: hidden_states + timestep + encoder_hidden_states"
                              " + pooled_projections")
    adapter = diffusers.T2IAdapter(in_channels=3, channels=(32, 64), num_res_blocks=1, downscale_factor=4,
                                   adapter_type="full_adapter").eval()
    assert _probe_of(adapter) == "diffusers T2IAdapter: x"


def test_a_timm_model_built_for_another_size_is_probed_at_that_size():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("tnt_s_patch16_224", pretrained=False, img_size=32, depth=2, num_classes=10).eval()
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)  # the checkpoint's size, not this model's
    assert _probe_of(model) == "timm pretrained_cfg input_size (3, 32, 32)"


# --- a squeeze-excite gate behind a zero-init last BatchNorm gamma (TResNet's blocks) -------------------

def test_depth_rules_take_no_ratio_from_a_zero_gamma_norm():
    """TResNet zero-initialises each block's last BatchNorm gamma, and its squeeze-excite gate comes
    after that norm: from there the spread is 0 (the block is the identity at init, measured), and
    the static prediction had 'grows to inf x' (IA110) and 'correlation 1' (IA111) errors at se.fc2."""
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("tresnet_m", pretrained=False, num_classes=10, layers=[1, 1, 1, 1]).eval()
    block = model.body.layer1[0]
    assert float(block.conv2.bn.weight.abs().max()) == 0
    x = torch.randn(4, 3, 64, 64)
    grabbed = []
    hook = block.conv2.register_forward_hook(lambda m, a, out: grabbed.append(out))
    try:
        with torch.no_grad():
            model.train()(x)
    finally:
        hook.remove()
        model.eval()
    assert float(grabbed[0].abs().max()) == 0  # batch statistics: the branch starts at exactly 0
    report = initaudit.audit(model, inputs=x)
    assert not [f for f in report.findings if f.rule in ("IA109", "IA110", "IA111") and f.severity.value != "info"]
