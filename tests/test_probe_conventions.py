"""Probe inputs from the ecosystems' own conventions: each model is built from a small config
(no downloads), captured from a forward pass and probed with no user-given inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.loaders.target import load_target
from initaudit.probe import ProbeOptions, probe_inputs


def audited(model: nn.Module, batch: int = 4) -> dict:
    doc = initaudit.audit(model, probe_batch_size=batch).to_json()
    assert doc["capture"] == "trace", doc["notes"]
    assert doc["probe"]["ran"], doc["probe"]["skipped_reason"]
    return doc


def _tf():
    return pytest.importorskip("transformers")


def test_bert_text():
    tf = _tf()
    torch.manual_seed(0)
    doc = audited(tf.BertModel(tf.BertConfig(vocab_size=128, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=4, intermediate_size=64)))
    assert doc["probe"]["convention"] == "transformers: input_ids + attention_mask + token_type_ids"
    assert doc["probe"]["input_shapes"] == [[4, 16], [4, 16], [4, 16]]


def test_nystromformer_gets_the_sequence_its_landmarks_are_computed_over():
    """Nystromformer's landmarks are means over ``num_landmarks`` segments of exactly
    ``segment_means_seq_len`` tokens: with 8 (not the usual 16) the forward runs; a 16-token
    input raises a shape error in the attention (so without the config's length, no probe)."""
    tf = _tf()
    torch.manual_seed(0)
    model = tf.NystromformerForMaskedLM(tf.NystromformerConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=64, num_landmarks=4, segment_means_seq_len=8))
    with pytest.raises(RuntimeError):
        model(torch.randint(0, 128, (2, 16)))
    doc = audited(model)
    assert doc["probe"]["input_shapes"][0] == [4, 8]


def test_vilt_gets_text_and_pixels_from_its_one_config():
    """ViLT's one config carries ``image_size``; its forward needs both inputs (text only:
    "You have to specify either pixel_values or image_embeds")."""
    tf = _tf()
    torch.manual_seed(0)
    model = tf.ViltForMaskedLM(tf.ViltConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        image_size=32, patch_size=8, max_position_embeddings=40))
    with pytest.raises(ValueError):
        model(input_ids=torch.randint(0, 128, (2, 16)))
    doc = audited(model)
    assert doc["probe"]["convention"].startswith("transformers: pixel_values + input_ids")
    assert doc["probe"]["input_shapes"][0] == [4, 3, 32, 32]


def test_xlnet_segments_reach_its_relative_segment_encodings():
    """XLNet computes its segment matrix (and so uses ``seg_embed`` and ``r_s_bias``) only
    when ``token_type_ids`` is given: the convention passes a sentence pair, and those
    parameters receive gradients (without it, 2 IA209 warnings per layer)."""
    tf = _tf()
    torch.manual_seed(0)
    model = tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=96, d_model=32, n_layer=2, n_head=4, d_inner=64))
    report = initaudit.audit(model, probe_batch_size=4)
    assert report.probe.convention == "transformers: input_ids + attention_mask + token_type_ids"
    for i in range(2):
        assert report.probe.grads[f"transformer.layer.{i}.rel_attn.seg_embed"].received
        assert report.probe.grads[f"transformer.layer.{i}.rel_attn.r_s_bias"].received


def test_t5_encoder_decoder():
    tf = _tf()
    torch.manual_seed(0)
    doc = audited(tf.T5ForConditionalGeneration(tf.T5Config(
        vocab_size=128, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)))
    assert doc["probe"]["convention"] == "transformers: input_ids + attention_mask + decoder_input_ids"
    rows = {r["param"]: r for r in doc["layers"]}
    assert rows["decoder.block.0.layer.2.DenseReluDense.wi.weight"]["activation"] == "relu"


def test_whisper_speech_features():
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.WhisperConfig(vocab_size=128, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                           decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=16,
                           max_target_positions=16, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                           decoder_start_token_id=1)
    doc = audited(tf.WhisperForConditionalGeneration(cfg))
    assert doc["probe"]["convention"] == "transformers: input_features + decoder_input_ids"
    assert doc["probe"]["input_shapes"][0] == [4, 16, 32]  # mel bins x 2 * max_source_positions


def test_speech2text_filter_bank_frames():
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.Speech2TextConfig(vocab_size=128, d_model=32, encoder_layers=1, decoder_layers=1,
                               encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                               decoder_ffn_dim=64, max_source_positions=64, max_target_positions=64,
                               input_feat_per_channel=16, conv_channels=32, pad_token_id=0, bos_token_id=1,
                               eos_token_id=2, decoder_start_token_id=1)
    doc = audited(tf.Speech2TextForConditionalGeneration(cfg))
    assert doc["probe"]["convention"] == "transformers: input_features + decoder_input_ids"
    assert doc["probe"]["input_shapes"][0] == [4, 64, 16]  # (batch, frames, features), not Whisper's layout


def test_wav2vec2_raw_audio():
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.Wav2Vec2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                            intermediate_size=64, conv_dim=(16, 16), conv_stride=(5, 2),
                            conv_kernel=(10, 3), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=4)
    doc = audited(tf.Wav2Vec2Model(cfg))
    assert doc["probe"]["convention"] == "transformers: input_values"
    samples = doc["probe"]["input_shapes"][0][1]
    assert ((samples - 10) // 5 + 1 - 3) // 2 + 1 == 16  # 16 frames after the feature extractor


def test_ast_spectrogram_frames():
    """AST reads (batch, frames, mel bins) under input_values: no waveform conv stem."""
    tf = _tf()
    torch.manual_seed(0)
    cfg = tf.ASTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64,
                       num_mel_bins=32, max_length=64, patch_size=16, frequency_stride=16, time_stride=16,
                       num_labels=10)
    doc = audited(tf.ASTForAudioClassification(cfg))
    assert doc["probe"]["convention"] == "transformers: input_values"
    assert doc["probe"]["input_shapes"] == [[4, 64, 32]]


@pytest.mark.parametrize("kind", ["patchtst", "informer"])
def test_forecasters_get_their_history(kind):
    """past_values of context_length (+ the largest lag) steps, with the time features and mask
    a TimeSeriesTransformer-style forward requires."""
    tf = _tf()
    torch.manual_seed(0)
    if kind == "patchtst":
        model = tf.PatchTSTForPrediction(tf.PatchTSTConfig(
            num_input_channels=3, context_length=32, patch_length=8, patch_stride=8, prediction_length=8,
            d_model=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=64))
        shapes = [[4, 32, 3], [4, 32, 3]]
    else:
        model = tf.InformerForPrediction(tf.InformerConfig(
            prediction_length=8, context_length=16, lags_sequence=[1, 2, 3], num_time_features=2, d_model=16,
            encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
            encoder_ffn_dim=32, decoder_ffn_dim=32))
        shapes = [[4, 19], [4, 19, 2], [4, 19]]
    doc = audited(model.eval())
    assert doc["probe"]["convention"].startswith("transformers: past_values")
    assert doc["probe"]["input_shapes"] == shapes


def test_vit_pixels_from_config():
    tf = _tf()
    torch.manual_seed(0)
    doc = audited(tf.ViTModel(tf.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                           num_attention_heads=4, intermediate_size=64, num_channels=3)))
    assert doc["probe"]["convention"] == "transformers: pixel_values"
    assert doc["probe"]["input_shapes"] == [[4, 3, 32, 32]]


def test_clip_text_and_vision():
    tf = _tf()
    torch.manual_seed(0)
    tower = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    cfg = tf.CLIPConfig(text_config=dict(vocab_size=128, max_position_embeddings=16, **tower),
                        vision_config=dict(image_size=32, patch_size=8, **tower), projection_dim=16)
    doc = audited(tf.CLIPModel(cfg))
    assert doc["probe"]["convention"] == "transformers: pixel_values + input_ids + attention_mask"


def test_timm_input_size_from_pretrained_cfg():
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=10, depth=1,
                              img_size=32, patch_size=8)
    doc = audited(model)
    assert doc["probe"]["convention"] == "timm pretrained_cfg input_size (3, 32, 32)"


def test_torchvision_resnet18_224():
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    doc = audited(tv.models.resnet18(weights=None, num_classes=10), batch=2)
    assert doc["probe"]["convention"] == "torchvision classification: images 3x224x224"
    assert doc["probe"]["input_shapes"] == [[2, 3, 224, 224]]


def test_torchvision_inception_and_googlenet_sizes():
    tv = pytest.importorskip("torchvision")
    for build, side in ((tv.models.inception_v3, 299), (tv.models.googlenet, 224)):
        model = build(weights=None, aux_logits=False, init_weights=False)
        graph, _ = load_target(model)
        inputs = probe_inputs(graph, ProbeOptions(batch_size=64), None)
        assert inputs.convention == f"torchvision classification: images 3x{side}x{side}"
        assert list(inputs.args[0].shape) == [8, 3, side, side]  # big images: batch 8
        assert "batch 8 instead of --batch-size 64" in inputs.source


def test_torchvision_googlenet_is_captured_on_its_conventional_inputs():
    tv = pytest.importorskip("torchvision")
    from initaudit.probe import capture_graph

    torch.manual_seed(0)
    graph, _ = load_target(tv.models.googlenet(weights=None, aux_logits=False, init_weights=True))
    capture_graph(graph, ProbeOptions())
    assert graph.capture == "trace"
    cats = [n for n in graph.nodes if n.kind == "cat"]
    assert len(cats) == 9 and all(len(n.inputs) == 4 for n in cats)  # nine inception blocks, 4 branches


def test_diffusers_unet_and_vae():
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=3, layers_per_block=1,
                                 block_out_channels=(16, 32), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8)
    assert audited(unet)["probe"]["convention"] == "diffusers UNet2DModel: sample + timestep"
    vae = diffusers.AutoencoderKL(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(16, 32),
                                  latent_channels=4, norm_num_groups=8, sample_size=16)
    assert audited(vae)["probe"]["convention"] == "diffusers AutoencoderKL: sample"


def test_diffusers_conditional_unet_gets_encoder_states():
    diffusers = pytest.importorskip("diffusers")
    unet = diffusers.UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=24, norm_num_groups=8, attention_head_dim=8)
    graph, _ = load_target(unet)
    inputs = probe_inputs(graph, ProbeOptions(batch_size=2), None)
    assert inputs.convention == "diffusers UNet2DConditionModel: sample + timestep + encoder_hidden_states"
    assert list(inputs.kwargs["encoder_hidden_states"].shape) == [2, 16, 24]
    assert inputs.kwargs["timestep"].dtype == torch.int64


def test_rnn_language_model_first_layer_inference_still_applies():
    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.rnn, self.head = nn.Embedding(50, 16), nn.LSTM(16, 16, batch_first=True), nn.Linear(16, 50)

        def forward(self, ids):
            return self.head(self.rnn(self.emb(ids))[0])

    report = initaudit.audit(LM(), probe_batch_size=4)
    assert report.capture == "trace" and report.probe.ran and report.probe.convention is None
    assert report.probe.input_shapes == [[4, 16]]


def test_no_library_is_imported_to_detect_it(monkeypatch):
    import sys

    from initaudit.probe import conventions

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "transformers", None)
    assert conventions.from_convention(nn.Linear(4, 4), 2, torch.Generator()) is None


def test_torchvision_detection_and_segmentation_conventions():
    tv = pytest.importorskip("torchvision")
    det = tv.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None,
                                                                    num_classes=3)
    inputs = probe_inputs(load_target(det)[0], ProbeOptions(batch_size=64), None)
    assert inputs.convention == "torchvision detection: a list of 2 images 3x224x224"
    images = inputs.args[0]
    assert isinstance(images, list) and [list(t.shape) for t in images] == [[3, 224, 224]] * 2
    seg = tv.models.segmentation.lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=3)
    inputs = probe_inputs(load_target(seg)[0], ProbeOptions(batch_size=4), None)
    assert inputs.convention == "torchvision segmentation: images 3x224x224"
    assert list(inputs.args[0].shape) == [4, 3, 224, 224]


def test_torchvision_s3d_gets_the_clip_its_fixed_pooling_needs():
    """S3D ends in a fixed 2 x 7 x 7 average pool (its weights' meta: min_temporal_size 14,
    224 x 224): the video ResNets' 8 x 112 x 112 clip fails there; 16 x 224 x 224 runs."""
    tv = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    s3d = tv.models.get_model("s3d", weights=None, num_classes=4).eval()
    with pytest.raises(RuntimeError, match="smaller than kernel size"), torch.no_grad():
        s3d(torch.randn(1, 3, 8, 112, 112))
    inputs = probe_inputs(load_target(s3d)[0], ProbeOptions(batch_size=64), None)
    assert inputs.convention == "torchvision video: clips 3x16x224x224"
    with torch.no_grad():
        assert s3d(*inputs.args).shape == (2, 4)
