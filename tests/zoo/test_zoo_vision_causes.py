"""Causes found by the fourth held-out sweep (vision, diffusers, torchvision; issue 8), each with
a measurement of what is really there and a control that must still be found."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import initaudit
from zoo.conftest import build


def _of(report, rule, severity=None):
    return [f for f in report.findings if f.rule == rule and (severity is None or f.severity.value == severity)]


# --- GCViT: a global-query generator reaches the loss only through softmax logits -----------------------

def test_gcvit_query_generator_and_se_pairs_are_no_depth_fall(zoo_report):
    report = zoo_report("gcvit_timm", "module")
    g = report.probe.grads
    # the global-query generator (MBConv + squeeze-excite + pool + norm -> the query slot only):
    # its error passes the softmax's near-zero derivative, at every stage alike
    gen = [g[f"stages.{i}.global_block.blocks.conv1.conv_pw.weight"].ratio for i in (0, 3)]
    trunk = [g[f"stages.{i}.blocks.0.mlp.fc2.weight"].ratio for i in (0, 3)]
    assert all(q < 0.05 * t for q, t in zip(gen, trunk))
    # the downsample MBConv's squeeze-excite pair is small at the first stage and the last alike:
    # no fall with depth (measured 0.002-0.017 of the reference at every stage)
    se = [g[f"stages.{i}.downsample.conv_block.se.fc2.weight"].ratio for i in (1, 3)]
    assert 0.1 < se[0] / se[1] < 10 and 0.3 < trunk[0] / trunk[1] < 3
    assert not _of(report, "IA206") and not _of(report, "IA207")


def _sigmoid_attention() -> nn.Module:
    """A deep sigmoid stack (Xavier: sigmoid' <= 1/4 per layer, a real fall) whose output is the
    query, key and value of one self-attention."""
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.stack = nn.Sequential(*[m for _ in range(10) for m in (nn.Linear(32, 32), nn.Sigmoid())])
            self.attn = nn.MultiheadAttention(32, 4, batch_first=True)
            self.head = nn.Linear(32, 4)

        def forward(self, x):
            h = self.stack(x)
            return self.head(self.attn(h, h, h, need_weights=False)[0])

    torch.manual_seed(0)
    net = Net()
    for m in net.stack:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
    return net


def test_a_vanishing_stack_that_also_feeds_the_values_still_warns():
    report = initaudit.audit(_sigmoid_attention(), inputs=torch.randn(4, 8, 32))
    assert [f.layer for f in _of(report, "IA206")] == ["stack.0.weight"]


def test_a_steady_fall_over_a_wide_window_still_warns():
    """64 sigmoid layers at 3.6x Xavier's gain: the signal stays near 1/2 while each layer passes
    back a fraction of the gradient it gets, a fall at every layer alike; the windows are 7
    layers wide (median against median) and still see it."""
    torch.manual_seed(0)
    model = nn.Sequential(*[m for _ in range(64) for m in (nn.Linear(32, 32), nn.Sigmoid())])
    for m in model:
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight, gain=3.6)
            nn.init.zeros_(m.bias)
    (f,) = _of(initaudit.audit(model, inputs=torch.randn(16, 32)), "IA206")
    assert len(f.evidence["window"]) == 7 and f.severity.value == "error"


# --- probe conventions: frames (UNet3D), packed tokens with position ids (Flux), the unCLIP prior ---------

def _probe_of(model):
    report = initaudit.audit(model, probe_batch_size=2)
    probe = report.to_json()["probe"]
    assert probe["ran"], probe["skipped_reason"]
    return report, probe["convention"]


def test_unet3d_is_probed_on_frames_and_its_zero_temporal_convs_end_residual_branches():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    model = diffusers.UNet3DConditionModel(
        in_channels=4, out_channels=4, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
        cross_attention_dim=16, attention_head_dim=8, sample_size=8,
        down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"), up_block_types=("UpBlock3D", "CrossAttnUpBlock3D")).eval()
    temporal = model.down_blocks[0].temp_convs[0]
    assert bool((temporal.conv4[-1].weight == 0).all())  # diffusers zero-initialises the last temporal conv
    x = torch.randn(2 * 4, 16, 8, 8)
    with torch.no_grad():
        assert torch.equal(temporal(x, num_frames=4), x)  # so the temporal layer starts as the identity
    report, convention = _probe_of(model)
    assert convention == "diffusers UNet3DConditionModel: sample + timestep + encoder_hidden_states"
    assert report.to_json()["capture"] == "trace"
    assert not _of(report, "IA102", "error")


def test_flux_and_the_prior_are_probed_with_no_inputs():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    flux = diffusers.FluxTransformer2DModel(patch_size=1, in_channels=16, num_layers=1, num_single_layers=1,
                                            attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                            pooled_projection_dim=32, axes_dims_rope=(4, 6, 6), guidance_embeds=True).eval()
    assert _probe_of(flux)[1] == ("diffusers FluxTransformer2DModel: hidden_states + img_ids + txt_ids + timestep"
                                  " + guidance + encoder_hidden_states + pooled_projections")
    prior = diffusers.PriorTransformer(num_attention_heads=2, attention_head_dim=8, num_layers=2, embedding_dim=16,
                                       num_embeddings=4, additional_embeddings=4).eval()
    report, convention = _probe_of(prior)
    assert convention == "diffusers PriorTransformer: hidden_states + proj_embedding + encoder_hidden_states + timestep"
    # clip_mean / clip_std un-normalise the pipeline's latents outside forward(): truly unused by it
    assert {f.layer for f in _of(report, "IA209", "warning")} <= {"clip_mean"}


# --- ONNX: a Constant node is part of the program, not a parameter (TResNet's anti-alias blur) ----------

class _Blurred(nn.Module):
    def __init__(self, copies: bool = False):
        super().__init__()
        layers = pytest.importorskip("timm.layers")
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.blur = layers.BlurPool2d(channels=16, filt_size=3, stride=2)  # a fixed binomial filter
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.head = nn.Linear(16, 4)
        if copies:
            with torch.no_grad():
                self.conv2.weight.copy_(self.conv2.weight[:1].expand_as(self.conv2.weight))

    def forward(self, x):
        x = torch.relu(self.conv2(self.blur(torch.relu(self.conv1(x)))))
        return self.head(x.mean((2, 3)))


def test_a_fixed_blur_filter_in_an_onnx_export_is_no_weight(tmp_path):
    from zoo.forms import export_onnx

    torch.manual_seed(0)
    model = _Blurred().eval()
    assert "blur.filt" not in model.state_dict()  # a non-persistent buffer: no parameter, never trained
    onnx = pytest.importorskip("onnx")
    path = export_onnx(model, torch.randn(2, 3, 16, 16), tmp_path / "m.onnx")
    proto = onnx.load(str(path))
    constants = {o for n in proto.graph.node if n.op_type == "Constant" for o in n.output}
    convs = [n for n in proto.graph.node if n.op_type == "Conv"]
    assert any(n.input[1] in constants for n in convs)  # torch.onnx wrote the filter as a Constant node
    report = initaudit.audit(path)
    assert [row["param"] for row in report.to_json()["layers"] if row["param"] in constants] == []
    assert not [f for f in report.findings if f.severity.value in ("error", "warning")]


def test_copied_conv_units_in_an_onnx_export_are_still_an_error(tmp_path):
    from zoo.forms import export_onnx

    torch.manual_seed(0)
    path = export_onnx(_Blurred(copies=True).eval(), torch.randn(2, 3, 16, 16), tmp_path / "m.onnx")
    found = _of(initaudit.audit(path), "IA103", "error")
    assert [f.layer for f in found] == ["conv2.weight"]


# --- bare checkpoints: a chain's zero last layer is not judged by the chain's earlier layers -----------

def _bare_ia102(model, tmp_path):
    from zoo.forms import save_safetensors

    report = initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors"))
    return {f.layer: f.severity.value for f in _of(report, "IA102")}


def test_a_flow_couplings_zero_ends_in_a_bare_checkpoint_are_unplaced_not_dead(tmp_path):
    from zoo.test_zoo_heldout import _flow

    model, x = _flow(torch.exp), torch.randn(64, 8)
    with torch.no_grad():
        assert torch.equal(model[:3](x), x)  # measured: each coupling starts as the identity (exp(0) = 1)
    found = _bare_ia102(model, tmp_path)
    assert found == {f"{i}.{b}.2.weight": "warning" for i in range(3) for b in "st"}


def test_a_zero_first_layer_of_a_coupling_branch_stays_an_error_in_a_bare_checkpoint(tmp_path):
    from zoo.test_zoo_heldout import _flow

    model = _flow(torch.exp)
    for i in range(3):  # the ends learn; a zero first layer before ReLU is dead
        nn.init.normal_(model[i].s[2].weight, std=0.1)
        nn.init.zeros_(model[i].s[0].weight)
    found = _bare_ia102(model, tmp_path)
    assert {k: v for k, v in found.items() if ".s." in k} == {f"{i}.s.0.weight": "error" for i in range(3)}


# --- bare checkpoints: a zero BatchNorm gamma the file cannot place (RegNetZ, TResNet) --------------------

class _Stage(nn.Module):
    """RegNetZ's pattern: the stage's first block changes width and has no identity path (gamma 1);
    the others end their residual branch in a zero-gamma BatchNorm (timm's zero_init_last)."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList()
        for i, (cin, cout) in enumerate([(8, 16), (16, 16), (16, 16)]):
            block = nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
            if i:
                nn.init.zeros_(block[1].weight)
            self.blocks.append(block)

    def forward(self, x):
        for i, block in enumerate(self.blocks):
            x = block(x) if i == 0 else x + block(x)
        return x


def test_a_zero_gamma_a_bare_checkpoint_cannot_place_is_said_so(tmp_path):
    from zoo.forms import save_safetensors

    torch.manual_seed(0)
    model = _Stage().train()
    x = torch.randn(4, 8, 8, 8)
    with torch.no_grad():
        first = model.blocks[0](x)
        assert torch.equal(model(x), first)  # measured: the zero-gamma blocks start as the identity
    found = _of(initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors")), "IA108")
    assert [f.layer for f in found] == ["blocks.1.1.weight", "blocks.2.1.weight"]
    assert all("cannot tell" in f.message and "outside a residual branch" not in f.message for f in found)


def test_a_zero_gamma_in_the_trunk_of_a_live_module_is_still_a_cut():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.Flatten(), nn.Linear(8 * 8 * 8, 4))
    nn.init.zeros_(model[1].weight)
    (f,) = _of(initaudit.audit(model, probe_enabled=False), "IA108", "error")  # relu'(beta = 0) = 0
    assert f.layer == "1.weight" and "outside a residual branch" in f.message


# --- probe conventions: ControlNet's conditioning image, SDXL's and Kandinsky's added conditions ---------

def test_sdxl_controlnet_and_a_kandinsky_unet_are_probed_with_no_inputs():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    control = diffusers.ControlNetModel(
        in_channels=4, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8, cross_attention_dim=32,
        attention_head_dim=8, conditioning_embedding_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), addition_embed_type="text_time",
        addition_time_embed_dim=8, projection_class_embeddings_input_dim=32 + 6 * 8).eval()
    report, convention = _probe_of(control)
    assert convention == ("diffusers ControlNetModel: sample + timestep + encoder_hidden_states + controlnet_cond"
                          " + added_cond_kwargs")
    # with the dataflow recorded, its zero convolutions are output layers (they unblock after one
    # step: test_zoo_heldout.test_controlnet_zero_convolutions_unblock_after_one_step)
    assert not _of(report, "IA102", "error") and _of(report, "IA102", "info")
    kandinsky = diffusers.UNet2DConditionModel(
        in_channels=4, out_channels=8, block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=8,
        cross_attention_dim=32, attention_head_dim=8, sample_size=8,
        down_block_types=("ResnetDownsampleBlock2D", "SimpleCrossAttnDownBlock2D"),
        up_block_types=("SimpleCrossAttnUpBlock2D", "ResnetUpsampleBlock2D"), mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        encoder_hid_dim=16, encoder_hid_dim_type="image_proj", addition_embed_type="image",
        resnet_time_scale_shift="scale_shift").eval()
    assert _probe_of(kandinsky)[1] == ("diffusers UNet2DConditionModel: sample + timestep + encoder_hidden_states"
                                       " + added_cond_kwargs")


# --- probe conventions: 1-D UNets, torchvision video and optical flow -------------------------------------

def test_a_1d_unet_and_torchvision_video_and_flow_models_are_probed_with_no_inputs():
    diffusers = pytest.importorskip("diffusers")
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    unet = diffusers.UNet1DModel(sample_size=64, extra_in_channels=16, block_out_channels=(8, 32, 64)).eval()
    assert _probe_of(unet)[1] == "diffusers UNet1DModel: sample + timestep"
    from torchvision.models.video.resnet import BasicBlock, BasicStem, Conv3DSimple, VideoResNet

    video = VideoResNet(BasicBlock, [Conv3DSimple] * 4, [1, 1, 1, 1], BasicStem, num_classes=4).eval()  # r3d, 1 block a stage
    assert _probe_of(video)[1] == "torchvision video: clips 3x8x112x112"
    flow = torchvision.models.optical_flow.raft_small(weights=None).eval()
    assert _probe_of(flow)[1] == "torchvision optical flow: image1 + image2 3x128x128"


# --- squeeze-excite layers probed with a batch whose last-stage BatchNorms see 2 values ----------------

def test_se_gradients_behind_batchnorms_of_two_values_are_not_exploding():
    model, _ = build("efficientnet_timm")  # timm efficientnet_b0: stride 32, so 1 x 1 at 32 px
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = initaudit.audit(model, inputs=x)
    pops = {s.module: s.norm_population for s in report.probe.sites if s.kind == "norm"}
    assert min(pops.values()) == 2 and pops["bn2"] == 2  # batch 2 x 1 x 1 per channel
    # the SE layers' ratio against the last stage: thousands of times (measured 4.7e3), since the
    # error passes BatchNorms dividing by the std of 2 values: information, not a finding
    assert not _of(report, "IA207", "error") and not _of(report, "IA207", "warning")
    (f,) = _of(report, "IA207", "info")
    assert f.evidence["ratio"] > 100 and len(f.evidence["thin_norms"]) >= 10
    # 8 values per channel at the last stage (batch 2 x 2 x 2): the same layers grow by far less
    report = initaudit.audit(model, inputs=torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    assert min(s.norm_population for s in report.probe.sites if s.kind == "norm") == 8
    assert not _of(report, "IA207")


# --- bare checkpoints: a layer a BatchNorm in the file normalises, a second classifier over the same classes --

def test_inception_v3_bare_fixed_std_convs_before_batchnorm_and_its_aux_head_are_info(tmp_path):
    """timm/torchvision Inception-v3 draws every conv and linear trunc_normal(0, 0.1) (0.001 for
    the aux classifier's fc, its ``stddev`` attribute), 1.3-3.5x the largest scheme's std at
    their fans. Every conv feeds a BatchNorm (``conv``/``bn`` in the file), which divides the
    scale away: measured on one block in training mode, the output and the input gradient are
    the same at 0.1 as at He's std (to 4e-4 of their spread, BatchNorm's eps). The aux fc (768 -> 1000) widens, but its 1000 classes are
    the main head's: a head, which a small draw only starts near uniform."""
    timm = pytest.importorskip("timm")
    from zoo.forms import save_safetensors

    torch.manual_seed(0)
    model = timm.create_model("inception_v3", pretrained=False, aux_logits=True)
    # conv 48 -> 64, 5x5, then BatchNorm, ReLU (a copy: its running statistics would read as trained)
    block = copy.deepcopy(model.Mixed_5b.branch5x5_2).train()
    assert abs(block.conv.weight.std().item() - 0.1) < 0.002
    x = torch.randn(2, 48, 9, 9, requires_grad=True)
    outs = []
    for scale in (1.0, (2 / (48 * 25)) ** 0.5 / 0.1):  # as drawn; rescaled to He's std
        w = block.conv.weight.detach().clone()
        with torch.no_grad():
            block.conv.weight.mul_(scale)
        y = block(x)
        (g,) = torch.autograd.grad(y.square().sum(), x)
        outs.append((y.detach(), g))
        with torch.no_grad():
            block.conv.weight.copy_(w)
    for a, b in zip(*outs):  # the same up to BatchNorm's eps (measured: 4e-4 of the spread)
        assert (a - b).abs().max() < 1e-2 * b.std()
    report = initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors"))
    assert not _of(report, "IA104", "warning") and not _of(report, "IA104", "error")
    info = {f.layer: f for f in _of(report, "IA104", "info")}
    assert "a normalisation follows" in info["Mixed_5b.branch5x5_2.conv.weight"].message
    assert info["Mixed_5b.branch5x5_2.conv.weight"].evidence["ratio"] > 1.5
    assert "small head" in info["AuxLogits.fc.weight"].message and "output layer" in info["fc.weight"].message


def test_a_bare_conv_with_no_norm_after_it_and_a_blown_up_head_still_warn(tmp_path):
    """The same 3x the schemes' std warns on a conv no BatchNorm in the file follows, and a head
    far past IA110's lines (10x the largest scheme's std) warns; the conv a BatchNorm follows is info."""
    from zoo.forms import save_safetensors

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(16, 64, 3), nn.BatchNorm2d(64), nn.ReLU(), nn.Conv2d(64, 64, 3), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
    for i in (0, 3):
        nn.init.normal_(model[i].weight, std=3 * (5 / 3) / (model[i].weight[0].numel() ** 0.5))
    nn.init.normal_(model[7].weight, std=10 * 1.2 * (5 / 3) / 10 ** 0.5)
    report = initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors"))
    found = {f.layer: f.severity.value for f in _of(report, "IA104")}
    assert found == {"0.weight": "info", "3.weight": "warning", "7.weight": "warning"}


# --- ONNX: a stack across BatchNorms the exporter folded does not compound (MobileViT's conv_1x1) ---------

def _chain(bn: bool) -> nn.Module:
    """Ten 3x3 conv (-> BatchNorm) -> ReLU blocks, each conv at 1.3x He's std, then a 1x1 conv
    with no norm after it (MobileViT's conv_1x1 into its transformer), at 1.3x Xavier's."""
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for _ in range(10):
        conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        nn.init.normal_(conv.weight, std=1.3 * (2 / 144) ** 0.5)
        layers += [conv, *([nn.BatchNorm2d(16)] if bn else []), nn.ReLU()]
    last = nn.Conv2d(16, 16, 1, bias=False)
    nn.init.normal_(last.weight, std=1.3 * (2 / 32) ** 0.5)
    return nn.Sequential(*layers, last, nn.Flatten(), nn.Linear(16 * 8 * 8, 4))


def _last_conv_output_std(model: nn.Module, x: torch.Tensor) -> float:
    return model[:-2](x).std().item()


def test_onnx_stack_across_folded_batchnorms_is_graded_by_the_layers_own_factor(tmp_path):
    """In an eval-mode export the BatchNorms are folded (fresh statistics: identity), so the
    segment from the input reaches the 1x1 conv across ten layers at 1.3x (1.3^10 = 14x). In
    training every BatchNorm resets the scale: measured, the 1x1 conv's output is 1.3x the
    He/Xavier-drawn chain's, not 14x."""
    from zoo.forms import export_onnx

    x = torch.randn(2, 16, 8, 8)
    model = _chain(bn=True).train()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for m in ref:
            if isinstance(m, nn.Conv2d):
                m.weight.div_(1.3)
    ratio = _last_conv_output_std(model, x) / _last_conv_output_std(ref, x)
    assert 1.2 < ratio < 1.4
    model = _chain(bn=True)
    report = initaudit.audit(export_onnx(model, x, tmp_path / "m.onnx"), inputs=(x,))
    assert not _of(report, "IA104", "warning") and not _of(report, "IA104", "error")
    (f,) = [f for f in _of(report, "IA104", "info") if "folded" in f.message]
    assert f.evidence["ratio"] == pytest.approx(1.3, rel=0.1)


def test_onnx_stack_with_no_batchnorm_still_compounds(tmp_path):
    """The same chain with no BatchNorm: the scale really compounds (measured 1.3^11 ~ 18x at the
    1x1 conv), and IA104 still warns there in the ONNX form."""
    from zoo.forms import export_onnx

    x = torch.randn(64, 16, 8, 8)
    model = _chain(bn=False)
    ref = copy.deepcopy(model)
    with torch.no_grad():
        for m in ref:
            if isinstance(m, nn.Conv2d):
                m.weight.div_(1.3)
    assert _last_conv_output_std(model, x) / _last_conv_output_std(ref, x) > 10
    report = initaudit.audit(export_onnx(model, x[:2], tmp_path / "m.onnx"), inputs=(x[:2],))
    assert "20.weight" in {f.layer for f in _of(report, "IA104", "warning")}


# --- NFNet: a zero gain ends each residual branch (skip-init), then squeeze-excite reads zeros -----------

def _small_nfnet() -> nn.Module:
    """timm's NormFreeNet from the nfnet_l0 config at small widths: each block ends conv3 (a
    ScaledStdConv2d whose gain is zero at init) -> SE gate -> * 2.0 -> * alpha -> + shortcut."""
    pytest.importorskip("timm")
    import dataclasses

    from timm.models.nfnet import NormFreeNet, model_cfgs

    cfg = dataclasses.replace(model_cfgs["nfnet_l0"], depths=(1, 1, 1, 1), channels=(64, 128, 192, 256),
                              stem_chs=16, num_features=256, group_size=16)
    torch.manual_seed(0)
    return NormFreeNet(cfg, num_classes=10).eval()


def _after_one_step(model: nn.Module, x: torch.Tensor, names: list[str], lr: float = 0.01) -> dict:
    """Per weight, (rows with zero gradient, distinct gradient rows, rows) after one SGD step on
    the probe's loss <r, y> / batch: whether the first update separates the units."""
    torch.manual_seed(0)
    r = torch.randn_like(model(x))
    params = dict(model.named_parameters())
    for step in range(2):
        model.zero_grad()
        ((model(x) * r).sum() / x.shape[0]).backward()
        if step == 0:
            with torch.no_grad():
                for p in model.parameters():
                    if p.grad is not None:
                        p -= lr * p.grad
    out = {}
    for n in names:
        rows = params[n].grad.reshape(params[n].shape[0], -1)
        out[n] = (int((rows == 0).all(1).sum()), len({tuple(v.tolist()) for v in rows}), rows.shape[0])
    return out


@pytest.mark.parametrize("form", ["module", "safetensors-model"])
def test_nfnet_squeeze_excite_behind_a_zero_gain_is_unblocked_by_the_first_update(form, tmp_path):
    from zoo.forms import audit_form

    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    report = audit_form(form, _small_nfnet(), x, tmp_path)
    g = report.probe.grads
    # measured: conv3's gain is all zero and gets a gradient; the SE weights after it get none
    assert g["stages.1.0.conv3.gain"].norm > 0 and g["stages.1.0.attn_last.fc1.weight"].norm == 0
    se = [f for f in _of(report, "IA208") if ".attn_last." in f.layer]
    assert len(se) == 8 and {f.severity.value for f in se} == {"info"}
    assert se[0].evidence["zero_factors"] == ["stages.0.0.conv3.gain"]
    # conv3 ends its residual branch through the gate and both gains: no depth fall measured there
    rows = {r["param"]: r for r in report.layers}
    assert all(rows[f"stages.{i}.0.conv3.weight"]["residual_end"] for i in range(4))
    assert not _of(report, "IA204") and not _of(report, "IA208", "error")


def test_one_update_of_the_zero_gain_separates_the_squeeze_excite_units():
    se = [f"stages.1.0.attn_last.{n}.weight" for n in ("fc1", "fc2")]
    after = _after_one_step(_small_nfnet(), torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0)), se)
    fc1, fc2 = after[se[0]], after[se[1]]
    assert fc2 == (0, 128, 128)  # every fc2 row gets its own gradient
    assert fc1[1] - (fc1[0] > 0) >= fc1[2] // 4  # fc1's live units (ReLU keeps about half) too


class _SE(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Conv2d(c, c // 4, 1), nn.ReLU(), nn.Conv2d(c // 4, c, 1)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x):
        return x * torch.sigmoid(self.fc2(self.act(self.fc1(x.mean((2, 3), keepdim=True)))))


class _ZeroConvSEBlock(nn.Module):
    """relu(x + SE(mid(conv2(relu(bn(conv1(x))))))), conv2's weight and bias zero: a plain SE-ResNet
    block with no learned gain. ``mid`` a ReLU: conv2 blocks its own gradient (relu'(0) = 0)."""

    def __init__(self, c: int, relu: bool):
        super().__init__()
        self.conv1, self.bn = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.mid, self.se = nn.Conv2d(c, c, 3, padding=1), nn.ReLU() if relu else nn.Identity(), _SE(c)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x):
        return torch.relu(x + self.se(self.mid(self.conv2(torch.relu(self.bn(self.conv1(x)))))))


def _zero_conv_se_net(relu: bool) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), _ZeroConvSEBlock(16, relu), _ZeroConvSEBlock(16, relu),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10))


def test_squeeze_excite_behind_a_zero_conv_before_relu_stays_an_error():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    # measured: the zero conv gets no gradient (ReLU at 0), so one update changes nothing there
    names = ["2.conv2.weight", "2.se.fc2.weight"]
    assert _after_one_step(_zero_conv_se_net(True), x, names) == {"2.conv2.weight": (16, 1, 16),
                                                                  "2.se.fc2.weight": (16, 1, 16)}
    report = initaudit.audit(_zero_conv_se_net(True), inputs=x)
    assert {f.layer for f in _of(report, "IA208", "error")} == {"1.conv2", "1.se.fc2", "2.conv2", "2.se.fc2"}
    assert {f.layer for f in _of(report, "IA102", "error")} == {"1.conv2.weight", "2.conv2.weight"}


def test_squeeze_excite_behind_a_zero_conv_that_gets_a_gradient_is_unblocked():
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    # measured: with no ReLU between, the zero conv gets a gradient; one update separates fc2's rows
    assert _after_one_step(_zero_conv_se_net(False), x, ["2.se.fc2.weight"])["2.se.fc2.weight"] == (0, 16, 16)
    report = initaudit.audit(_zero_conv_se_net(False), inputs=x)
    fc2 = [f for f in _of(report, "IA208") if f.layer.endswith("se.fc2")]
    assert len(fc2) == 2 and {f.severity.value for f in fc2} == {"info"}
    assert fc2[1].evidence["zero_factors"] == ["2.conv2.weight"]


# --- bare checkpoints: a classifier wider than its features (ResMLP-12's 384 -> 1000 zero head) -----------

def test_a_bare_zero_head_wider_than_its_features_is_a_head(tmp_path):
    """timm ResMLP-12 zero-initialises its 384 -> 1000 head: measured, the logits start at 0
    (uniform) and the head's gradient is nonzero, so it learns at the first step. Its width 1000
    is no other weight's input and no multiple of one: read as a head, the zeros are legitimate."""
    timm = pytest.importorskip("timm")
    from zoo.forms import save_safetensors

    torch.manual_seed(0)
    model = timm.create_model("resmlp_12_224", pretrained=False, img_size=32)
    x = torch.randn(2, 3, 32, 32)
    logits = model(x)
    assert logits.abs().max() < 1e-5
    logits.logsumexp(-1).sum().backward()
    assert model.head.weight.grad.abs().max() > 1e-4
    model.zero_grad(set_to_none=True)
    report = initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors"))
    assert not [f for f in report.findings if f.layer == "head.weight" and f.severity.value in ("warning", "error")]


def test_a_bare_zero_fused_qkv_is_no_head(tmp_path):
    """A zeroed fused q/k/v (d -> 3d, unread width) stays a layer: its width is 3x a read one."""
    timm = pytest.importorskip("timm")
    from zoo.forms import save_safetensors

    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, num_classes=10)
    with torch.no_grad():
        model.blocks[1].attn.qkv.weight.zero_()
    report = initaudit.audit(save_safetensors(model, tmp_path / "m.safetensors"))
    found = [f for f in _of(report, "IA102") if f.layer == "blocks.1.attn.qkv.weight"]
    assert found and found[0].severity.value in ("warning", "error")
