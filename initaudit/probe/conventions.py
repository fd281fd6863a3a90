"""Probe inputs from the model ecosystem's own conventions, so a Hugging Face, timm,
torchvision or diffusers model (or an ``nn.Transformer*``) is probed with no ``--inputs``.

| model | inputs |
|---|---|
| transformers ``PreTrainedModel``, text | ``input_ids`` uniform on [0, vocab_size) (no ``vocab_size``: the first embedding table's rows), (batch, 16) + ``attention_mask`` of ones (+ ``token_type_ids``, a sentence pair: 0 then 1, where the forward takes them) (+ ``global_attention_mask`` on the first token, Longformer/LED); the sequence is ``segment_means_seq_len`` long where the config declares one (Nystromformer's landmarks are means over segments of exactly that sequence), else at most ``max_position_embeddings`` |
| encoder-decoder (``config.is_encoder_decoder``) | + ``decoder_input_ids`` (batch, 16) |
| vision (``main_input_name == "pixel_values"``) | N(0, 1) (batch, num_channels, image_size, image_size), from ``vision_config`` or a composite's ``encoder`` config where the model's own has none |
| speech, ``input_features`` (Whisper) | N(0, 1) (batch, num_mel_bins, 2 * max_source_positions) |
| speech, ``input_features`` with ``input_feat_per_channel`` (Speech2Text) | N(0, 1) (batch, 64 frames, input_feat_per_channel * input_channels) |
| speech, ``input_values`` (Wav2Vec2, HuBERT) | N(0, 1) (batch, samples) with samples giving 16 frames after the conv feature extractor |
| audio spectrogram, ``input_values`` with ``num_mel_bins`` and no conv feature extractor (AST) | N(0, 1) (batch, max_length frames, num_mel_bins) |
| time series, ``past_values`` (PatchTST, PatchTSMixer, TimeSeriesTransformer, Informer) | N(0, 1) (batch, context_length + max(lags_sequence), num_input_channels or input_size) (+ ``past_time_features`` N(0, 1) (batch, steps, num_time_features) + ``past_observed_mask`` of ones, where the forward takes them) |
| audio codec, ``input_values`` with ``audio_channels`` (EnCodec) | N(0, 1) (batch, audio_channels, 16 * prod(upsampling_ratios)) |
| Perceiver text (``main_input_name == "inputs"``, a ``vocab_size``) | token ids under ``inputs`` + ``attention_mask`` |
| text + vision (CLIP-style, ``text_config`` and ``vision_config``; or one config with ``image_size`` whose forward takes ``pixel_values``, ViLT) | ``input_ids`` and ``pixel_values`` from each sub-config |
| timm (``pretrained_cfg`` / ``default_cfg``) | N(0, 1) (batch, *input_size), the patch embedding's ``img_size`` where the model was built for another |
| torchvision classifiers | N(0, 1) (batch, 3, 224, 224); Inception v3 299 x 299 |
| torchvision video / optical flow | clips N(0, 1) (batch <= 4, 3, 8 frames, 112, 112) for the video ResNets, (batch <= 2, 3, 16 frames, 224, 224) for S3D, MViT and Swin3D; two frames (batch <= 2, 3, 128, 128) |
| diffusers 1-D UNets (first conv ``Conv1d``) | ``sample`` (batch, in_channels, sample_size) |
| torchvision segmentation | N(0, 1) (batch, 3, 224, 224); detection: a list of ``batch`` 3 x 224 x 224 images |
| diffusers ``UNet2DModel`` / ``UNet2DConditionModel`` | ``sample`` (batch, in_channels, sample_size, sample_size) + integer ``timestep`` (+ ``encoder_hidden_states`` (batch, 16, cross_attention_dim)) (+ ``class_labels`` below ``num_class_embeds``) |
| diffusers 2-D transformers (DiT: ``hidden_states``) | ``hidden_states`` as ``sample`` above + ``timestep`` (+ ``class_labels`` below ``num_embeds_ada_norm``) |
| diffusers ControlNet (``controlnet_cond``) | + the conditioning image (batch, conditioning_channels, sample_size * 2^(stages - 1), ...) uniform on [0, 1) |
| diffusers ``added_cond_kwargs`` | ``addition_embed_type`` "text_time" (SDXL): ``text_embeds`` + six ``time_ids`` (sizes in pixels); "image" / ``encoder_hid_dim_type`` "image_proj" (Kandinsky 2.2): ``image_embeds`` (batch, encoder_hid_dim) |
| diffusers models that mix frames (UNet3D: temporal convs / transformers) | ``sample`` (batch, in_channels, 4 frames, sample_size, sample_size) + as above |
| diffusers transformers with position ids (Flux: ``img_ids``) | ``hidden_states`` (batch, 64 packed tokens, in_channels) + ``img_ids`` (row, column of an 8 x 8 grid) + ``txt_ids`` + ``timestep`` in [0, 1) (+ ``guidance`` 3.5 where ``guidance_embeds``) |
| diffusers unCLIP prior (``proj_embedding``) | ``hidden_states`` (batch, embedding_dim) + ``proj_embedding`` (batch, embedding_proj_dim) + ``encoder_hidden_states`` (batch, num_embeddings, embedding_dim) + ``timestep`` |
| diffusers ``AutoencoderKL`` and other VAEs | ``sample`` (batch, in_channels, sample_size, sample_size) |
| ``nn.Transformer``, ``nn.TransformerEncoder/Decoder(Layer)`` | N(0, 1) (batch, 16, d_model), sequence first unless ``batch_first`` |

Libraries are detected by ``isinstance`` against classes of libraries already imported (the model
was built with them; nothing is imported here) and by attributes, never by model names. Images
of more than 64 x 64 pixels and speech are run at batch ``min(--batch-size, 8)``; the probe
block says so.
"""

from __future__ import annotations

import inspect
import math
import sys
from typing import Any

import torch
import torch.nn as nn

SEQ_LEN = 16
BIG_INPUT_BATCH = 8  # batch for inputs of more than 64x64 pixels, and for speech


class Made:
    """Inputs a convention made, and its name for the report."""

    def __init__(self, convention: str, kwargs: dict[str, Any] | None = None, args: tuple = (),
                 unit_dim: int = -1, batch: int = 0):
        self.convention, self.kwargs, self.args, self.unit_dim = convention, kwargs or {}, args, unit_dim
        self.batch = batch  # samples made (0: as asked)


def _lib_class(module: str, name: str) -> type | None:
    mod = sys.modules.get(module)
    cls = getattr(mod, name, None) if mod is not None else None
    return cls if isinstance(cls, type) else None


def _accepts(module: nn.Module) -> set[str]:
    try:
        params = inspect.signature(module.forward).parameters
    except (TypeError, ValueError):
        return set()
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return set(params) | {"**"}
    return set(params)


def _size(v: Any, default: int) -> tuple[int, int]:
    if isinstance(v, (list, tuple)) and len(v) >= 2:
        return int(v[0]), int(v[1])
    if isinstance(v, int) and v > 0:
        return v, v
    return default, default


def _image_batch(batch: int, h: int, w: int) -> int:
    return min(batch, BIG_INPUT_BATCH) if h * w > 64 * 64 else batch


def from_convention(module: nn.Module, batch: int, gen: torch.Generator) -> Made | None:
    """Inputs by the first convention that applies to ``module``, else None."""
    for convention in (_transformers, _diffusers, _timm, _torchvision, _torch_transformer):
        made = convention(module, batch, gen)
        if made is not None:
            return made
    return None


def _ids(gen: torch.Generator, vocab: int, batch: int, seq: int) -> torch.Tensor:
    return torch.randint(0, max(1, vocab), (batch, seq), generator=gen)


def _segments(config: Any, batch: int, seq: int) -> torch.Tensor:
    """``token_type_ids`` of a sentence pair, as these models are trained: segment 0 then
    segment 1 (half each), so parameters that only a segment boundary reaches (XLNet's
    relative segment encodings, which its forward computes only when ``token_type_ids`` is
    given) are exercised; all 0 where ``type_vocab_size`` has one type (RoBERTa)."""
    types = getattr(config, "type_vocab_size", None)
    second = 0 if isinstance(types, int) and types < 2 else 1
    ids = torch.zeros((batch, seq), dtype=torch.long)
    ids[:, seq // 2:] = second
    return ids


def _global_first(batch: int, seq: int) -> torch.Tensor:
    """``global_attention_mask`` as Longformer and LED are used for classification and
    summarisation: global attention on the first token (``<s>``/CLS), local everywhere else, so
    the global query/key/value projections, which only globally attending tokens reach, run."""
    mask = torch.zeros((batch, seq), dtype=torch.long)
    mask[:, 0] = 1
    return mask


def _seq_len(config: Any) -> int:
    exact = getattr(config, "segment_means_seq_len", None)  # Nystromformer reshapes by it
    if isinstance(exact, int) and exact > 0:
        return exact
    limit = getattr(config, "max_position_embeddings", None)
    return min(SEQ_LEN, limit) if isinstance(limit, int) and limit > 0 else SEQ_LEN


def _transformers(module: nn.Module, batch: int, gen: torch.Generator) -> Made | None:
    base = _lib_class("transformers", "PreTrainedModel")
    if base is None or not isinstance(module, base):
        return None
    config = module.config
    accepts = _accepts(module)
    main = getattr(module, "main_input_name", "input_ids")
    kwargs: dict[str, Any] = {}
    names: list[str] = []
    text_cfg, vision_cfg = getattr(config, "text_config", None), getattr(config, "vision_config", None)
    encoder_cfg = getattr(config, "encoder", None)  # a composite encoder-decoder's own encoder config
    if vision_cfg is None and getattr(encoder_cfg, "image_size", None) is not None:
        vision_cfg = encoder_cfg  # VisionEncoderDecoder: the image size is the encoder's
    if vision_cfg is None and main != "pixel_values" and "pixel_values" in accepts \
            and getattr(config, "image_size", None) is not None:
        vision_cfg = config  # one config for text and image (ViLT): both inputs, from it
    if main == "pixel_values" or (vision_cfg is not None and "pixel_values" in accepts):
        vc = config if main == "pixel_values" and getattr(config, "image_size", None) is not None \
            else (vision_cfg or config)
        h, w = _size(getattr(vc, "image_size", None), 224)
        c = int(getattr(vc, "num_channels", 3) or 3)
        batch = _image_batch(batch, h, w)
        kwargs["pixel_values"] = torch.randn((batch, c, h, w), generator=gen)
        names.append("pixel_values")
    if main == "input_features" and getattr(config, "input_feat_per_channel", None):
        # Speech2Text: (batch, frames, features) filter-bank frames, subsampled by its conv stem
        feats = int(config.input_feat_per_channel) * int(getattr(config, "input_channels", 1) or 1)
        batch = min(batch, BIG_INPUT_BATCH)
        kwargs["input_features"] = torch.randn((batch, 4 * SEQ_LEN, feats), generator=gen)
        names.append("input_features")
    elif main == "input_features":
        mels = int(getattr(config, "num_mel_bins", 80))
        frames = 2 * int(getattr(config, "max_source_positions", 1500))
        batch = min(batch, BIG_INPUT_BATCH)
        kwargs["input_features"] = torch.randn((batch, mels, frames), generator=gen)
        names.append("input_features")
    elif main == "input_values" and getattr(config, "num_mel_bins", None) and not getattr(config, "conv_kernel", None):
        # AST: (batch, frames, mel bins) spectrogram patches, no conv feature extractor
        frames = int(getattr(config, "max_length", None) or 4 * SEQ_LEN)
        kwargs["input_values"] = torch.randn((batch, frames, int(config.num_mel_bins)), generator=gen)
        names.append("input_values")
    elif main == "input_values":
        batch = min(batch, BIG_INPUT_BATCH)
        kwargs["input_values"] = torch.randn((batch, *_waveform(config)), generator=gen)
        names.append("input_values")
    elif main == "past_values" and getattr(config, "context_length", None):
        names += _time_series(config, accepts, batch, gen, kwargs)
    if main == "inputs" and isinstance(getattr(config, "vocab_size", None), int):
        main = "input_ids"  # Perceiver's text models: token ids under ``inputs``
        key = "inputs"
    else:
        key = "input_ids"
    if main == "input_ids" or (text_cfg is not None and "input_ids" in accepts):
        tc = text_cfg if text_cfg is not None else config
        vocab = getattr(tc, "vocab_size", None)
        if not isinstance(vocab, int):
            vocab = _first_table_rows(module)
        if vocab is None:
            return None
        seq = _seq_len(tc)
        kwargs[key] = _ids(gen, vocab, batch, seq)
        names.append(key)
        if "attention_mask" in accepts:
            kwargs["attention_mask"] = torch.ones((batch, seq), dtype=torch.long)
            names.append("attention_mask")
        if "global_attention_mask" in accepts:
            kwargs["global_attention_mask"] = _global_first(batch, seq)
            names.append("global_attention_mask")
        if "token_type_ids" in accepts:
            kwargs["token_type_ids"] = _segments(tc, batch, seq)
            names.append("token_type_ids")
    if not kwargs:
        return None
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" in accepts:
        dc = getattr(config, "decoder", None) or config
        vocab = getattr(dc, "vocab_size", None) or getattr(config, "vocab_size", None)
        seq = min(SEQ_LEN, int(getattr(config, "max_target_positions", SEQ_LEN) or SEQ_LEN))
        if isinstance(vocab, int):
            kwargs["decoder_input_ids"] = _ids(gen, vocab, batch, seq)
            names.append("decoder_input_ids")
    if "use_cache" in accepts:
        kwargs["use_cache"] = False  # no key/value cache: one plain forward
    for k in list(kwargs):  # one batch for all (a vision input may have lowered it)
        if isinstance(kwargs[k], torch.Tensor) and kwargs[k].shape[0] != batch:
            kwargs[k] = kwargs[k][:batch]
    return Made("transformers: " + " + ".join(names), kwargs,
                unit_dim=1 if names[0] == "pixel_values" else -1, batch=batch)


def _time_series(config: Any, accepts: set[str], batch: int, gen: torch.Generator,
                 kwargs: dict[str, Any]) -> list[str]:
    """A forecaster's history (PatchTST, PatchTSMixer, TimeSeriesTransformer, Informer):
    ``past_values`` of ``context_length`` steps plus the largest lag it reads, with
    ``num_input_channels`` (or ``input_size``) series; time features and an all-observed mask
    where the forward takes them."""
    steps = int(config.context_length) + max((int(v) for v in getattr(config, "lags_sequence", None) or ()),
                                             default=0)
    series = int(getattr(config, "num_input_channels", None) or getattr(config, "input_size", None) or 1)
    shape = (batch, steps, series) if hasattr(config, "num_input_channels") or series > 1 else (batch, steps)
    kwargs["past_values"] = torch.randn(shape, generator=gen)
    names = ["past_values"]
    features = int(getattr(config, "num_time_features", 0) or 0)
    if "past_time_features" in accepts and features:
        kwargs["past_time_features"] = torch.randn((batch, steps, features), generator=gen)
        names.append("past_time_features")
    if "past_observed_mask" in accepts:
        kwargs["past_observed_mask"] = torch.ones(shape)
        names.append("past_observed_mask")
    return names


def _first_table_rows(module: nn.Module) -> int | None:
    """Rows of the first embedding table, for a text model whose config names no vocabulary
    (CANINE reads Unicode code points into hashed tables): ids below it index every table."""
    table = next((m for m in module.modules() if isinstance(m, nn.Embedding)), None)
    return int(table.num_embeddings) if table is not None else None


def _waveform(config: Any) -> tuple[int, ...]:
    """(samples,) of raw audio for 16 frames, or (channels, samples) for a codec that takes
    channels (EnCodec's ``audio_channels``; its frames are ``prod(upsampling_ratios)`` samples)."""
    channels, ratios = getattr(config, "audio_channels", None), getattr(config, "upsampling_ratios", None)
    if isinstance(channels, int) and channels > 0:
        hop = math.prod(int(r) for r in ratios) if ratios else 320
        return channels, SEQ_LEN * hop
    return (_samples_for_frames(config, SEQ_LEN),)


def _samples_for_frames(config: Any, frames: int) -> int:
    """Raw audio samples that leave ``frames`` frames after the conv feature extractor."""
    kernels = list(getattr(config, "conv_kernel", None) or [])
    strides = list(getattr(config, "conv_stride", None) or [])
    n = frames
    for k, s in reversed(list(zip(kernels, strides))):
        n = (n - 1) * int(s) + int(k)
    return max(n, 1)


def _diffusers(module: nn.Module, batch: int, gen: torch.Generator) -> Made | None:
    base = _lib_class("diffusers", "ModelMixin")
    if base is None or not isinstance(module, base):
        return None
    config = module.config
    c = int(getattr(config, "in_channels", 3) or 3)
    h, w = _size(getattr(config, "sample_size", None), 32)
    batch = _image_batch(batch, h, w)
    accepts = _accepts(module)
    # UNets and VAEs take ``sample``; the 2-D transformers (DiT, PixArt, SD3) ``hidden_states``;
    # adapters (T2I-Adapter) the conditioning image ``x``
    main = next((k for k in ("sample", "hidden_states", "x") if k in accepts), None)
    if main is None:
        return None
    kwargs: dict[str, Any] = _diffusers_main(module, main, accepts, batch, (c, h, w), gen)
    names = list(kwargs)
    if "timestep" in accepts:
        # flow-matching transformers with position ids (Flux) take t in [0, 1]; the rest steps
        kwargs["timestep"] = (torch.rand((batch,), generator=gen) if "img_ids" in kwargs
                              else torch.randint(0, 1000, (batch,), generator=gen))
        names.append("timestep")
    if "guidance" in accepts and getattr(config, "guidance_embeds", False):
        kwargs["guidance"] = torch.full((batch,), 3.5)  # a guidance-distilled model's scale
        names.append("guidance")
    classes = getattr(config, "num_class_embeds", None) or getattr(config, "num_embeds_ada_norm", None)
    if "class_labels" in accepts and isinstance(classes, int) and classes > 0:
        kwargs["class_labels"] = torch.randint(0, classes, (batch,), generator=gen)  # class-conditional
        names.append("class_labels")
    # the text context: UNets' cross_attention_dim, MMDiT's (SD3) joint_attention_dim; a text
    # encoder's own width where the UNet projects it (encoder_hid_dim_type "text_proj")
    cross = getattr(config, "cross_attention_dim", None) or getattr(config, "joint_attention_dim", None)
    if getattr(config, "encoder_hid_dim_type", None) in ("text_proj", "text_image_proj"):
        cross = getattr(config, "encoder_hid_dim", None) or cross
    if "encoder_hidden_states" in accepts and cross and "encoder_hidden_states" not in kwargs:
        dim = int(cross[0] if isinstance(cross, (list, tuple)) else cross)
        kwargs["encoder_hidden_states"] = torch.randn((batch, SEQ_LEN, dim), generator=gen)
        names.append("encoder_hidden_states")
    extra = _conditions(config, accepts, batch, (h, w), gen)
    kwargs.update(extra)
    names += list(extra)
    pooled = getattr(config, "pooled_projection_dim", None)
    if "pooled_projections" in accepts and isinstance(pooled, int) and pooled > 0:
        kwargs["pooled_projections"] = torch.randn((batch, pooled), generator=gen)  # a pooled text embedding
        names.append("pooled_projections")
    return Made(f"diffusers {type(module).__name__}: " + " + ".join(names), kwargs, unit_dim=1, batch=batch)


def _temporal(module: nn.Module) -> bool:
    """Whether a diffusers model mixes frames (UNet3D's temporal convs and transformers): its
    ``sample`` is (batch, channels, frames, height, width)."""
    kinds = tuple(c for c in (_lib_class("diffusers.models.resnet", "TemporalConvLayer"),
                              _lib_class("diffusers.models.transformers.transformer_temporal",
                                         "TransformerTemporalModel")) if c is not None)
    return bool(kinds) and any(isinstance(m, kinds) for m in module.modules())


def _diffusers_main(module: nn.Module, main: str, accepts: set[str], batch: int,
                    chw: tuple[int, int, int], gen: torch.Generator) -> dict[str, Any]:
    """The main input in the layout the forward documents: packed patch tokens with their
    (row, column) position ids where it takes ``img_ids`` (Flux); an embedding vector with the
    projected one where it takes ``proj_embedding`` (the unCLIP prior); 4 frames where the model
    mixes frames (UNet3D); else an image (batch, channels, height, width)."""
    c, h, w = chw
    config = module.config
    if "img_ids" in accepts:
        side = 8
        ids = torch.zeros((side * side, 3))
        ids[:, 1], ids[:, 2] = torch.arange(side).repeat_interleave(side), torch.arange(side).repeat(side)
        return {main: torch.randn((batch, side * side, c), generator=gen), "img_ids": ids,
                "txt_ids": torch.zeros((SEQ_LEN, 3))}
    if "proj_embedding" in accepts:
        dim = int(config.embedding_dim)
        proj = int(getattr(config, "embedding_proj_dim", None) or dim)
        made = {main: torch.randn((batch, dim), generator=gen),
                "proj_embedding": torch.randn((batch, proj), generator=gen)}
        if "encoder_hidden_states" in accepts:  # the text tokens its position table counts
            made["encoder_hidden_states"] = torch.randn((batch, int(config.num_embeddings), dim), generator=gen)
        return made
    if _temporal(module):
        return {main: torch.randn((batch, c, 4, h, w), generator=gen)}
    first = next((m for m in module.modules() if isinstance(m, nn.modules.conv._ConvNd)), None)
    if isinstance(first, nn.Conv1d):  # a 1-D UNet (trajectories, audio): (batch, channels, length)
        return {main: torch.randn((batch, c, h), generator=gen)}
    return {main: torch.randn((batch, c, h, w), generator=gen)}


def _conditions(config: Any, accepts: set[str], batch: int, hw: tuple[int, int],
                gen: torch.Generator) -> dict[str, Any]:
    """Conditioning the config says the forward needs: ControlNet's conditioning image (at the
    latent size times the conditioning embedding's 2^(stages - 1) downsampling) and the
    ``added_cond_kwargs`` of ``addition_embed_type`` / ``encoder_hid_dim_type`` (SDXL's pooled
    text embedding and six size ids, Kandinsky's image embedding)."""
    h, w = hw
    out: dict[str, Any] = {}
    stages = getattr(config, "conditioning_embedding_out_channels", None)
    if "controlnet_cond" in accepts and isinstance(stages, (list, tuple)) and stages:
        f = 2 ** (len(stages) - 1)
        c = int(getattr(config, "conditioning_channels", 3) or 3)
        out["controlnet_cond"] = torch.rand((batch, c, h * f, w * f), generator=gen)
    if "added_cond_kwargs" not in accepts:
        return out
    added: dict[str, torch.Tensor] = {}
    kind, hid = getattr(config, "addition_embed_type", None), getattr(config, "encoder_hid_dim_type", None)
    if kind == "text_time":
        times = int(config.addition_time_embed_dim)
        text = int(config.projection_class_embeddings_input_dim) - 6 * times
        added["text_embeds"] = torch.randn((batch, text), generator=gen)
        size = [8 * h, 8 * w, 0, 0, 8 * h, 8 * w]  # original size, crop corner, target size in pixels
        added["time_ids"] = torch.tensor([size] * batch, dtype=torch.float32)
    if kind in ("image", "image_hint") or hid == "image_proj":
        added["image_embeds"] = torch.randn((batch, int(config.encoder_hid_dim)), generator=gen)
    if kind == "text_image" or hid == "text_image_proj":
        dim = int(config.cross_attention_dim)
        added["image_embeds"] = torch.randn((batch, dim), generator=gen)
        added.setdefault("text_embeds", torch.randn((batch, dim), generator=gen))
    if added:
        out["added_cond_kwargs"] = added
    return out


def _timm(module: nn.Module, batch: int, gen: torch.Generator) -> Made | None:
    cfg = getattr(module, "pretrained_cfg", None) or getattr(module, "default_cfg", None)
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if not (isinstance(size, (list, tuple)) and len(size) == 3 and all(isinstance(d, int) for d in size)):
        return None
    c, h, w = size
    # built for another size: the first embedding that records one (PatchEmbed, TNT's PixelEmbed)
    built = next((m.img_size for m in module.modules() if m is not module and isinstance(
        getattr(m, "img_size", None), (list, tuple))), None)
    if isinstance(built, (list, tuple)) and len(built) == 2 and tuple(built) != (h, w):
        h, w = (int(d) for d in built)
        size = (c, h, w)
    batch = _image_batch(batch, h, w)
    return Made(f"timm pretrained_cfg input_size {tuple(size)}",
                args=(torch.randn((batch, c, h, w), generator=gen),), unit_dim=1, batch=batch)


def _torchvision(module: nn.Module, batch: int, gen: torch.Generator) -> Made | None:
    if not type(module).__module__.startswith("torchvision.models"):
        return None
    inception = _lib_class("torchvision.models", "Inception3")
    rcnn = _lib_class("torchvision.models.detection.generalized_rcnn", "GeneralizedRCNN")
    side = 299 if inception is not None and isinstance(module, inception) else 224
    batch = _image_batch(batch, side, side)
    if rcnn is not None and isinstance(module, rcnn) or ".detection." in type(module).__module__:
        batch = min(batch, 2)
        images = [torch.rand((3, side, side), generator=gen) for _ in range(batch)]
        return Made(f"torchvision detection: a list of {batch} images 3x{side}x{side}", args=(images,),
                    unit_dim=1, batch=batch)
    where = type(module).__module__
    if ".video." in where:  # clips (batch, 3, frames, height, width), as the video recipes train them
        resnet = _lib_class("torchvision.models.video.resnet", "VideoResNet")
        # the ResNet family trains on 112 x 112; S3D, MViT and Swin3D on 224 x 224, where S3D's
        # fixed 2 x 7 x 7 pooling needs 14 frames or more and MViT's position table 16
        frames, side, most = (8, 112, 4) if resnet is not None and isinstance(module, resnet) else (16, 224, 2)
        clip = (min(batch, most), 3, frames, side, side)
        return Made(f"torchvision video: clips 3x{frames}x{side}x{side}", args=(torch.randn(clip, generator=gen),),
                    unit_dim=1, batch=clip[0])
    if ".optical_flow." in where:  # two frames, sides a multiple of 8
        pair = (min(batch, 2), 3, 128, 128)
        return Made("torchvision optical flow: image1 + image2 3x128x128",
                    args=(torch.randn(pair, generator=gen), torch.randn(pair, generator=gen)),
                    unit_dim=1, batch=pair[0])
    kind = "segmentation" if ".segmentation." in where else "classification"
    return Made(f"torchvision {kind}: images 3x{side}x{side}",
                args=(torch.randn((batch, 3, side, side), generator=gen),), unit_dim=1, batch=batch)


def _torch_transformer(module: nn.Module, batch: int, gen: torch.Generator) -> Made | None:
    types = (nn.Transformer, nn.TransformerEncoder, nn.TransformerDecoder, nn.TransformerEncoderLayer,
             nn.TransformerDecoderLayer)
    if not isinstance(module, types):
        return None
    attn = next((m for m in module.modules() if isinstance(m, nn.MultiheadAttention)), None)
    if attn is None:
        return None
    first = attn.batch_first
    shape = (batch, SEQ_LEN, attn.embed_dim) if first else (SEQ_LEN, batch, attn.embed_dim)
    order = "batch first" if first else "sequence first"
    x = torch.randn(shape, generator=gen)
    name = type(module).__name__
    if isinstance(module, (nn.Transformer, nn.TransformerDecoder, nn.TransformerDecoderLayer)):
        memory = torch.randn(shape, generator=gen)
        if isinstance(module, nn.Transformer):
            return Made(f"torch.nn {name}: src + tgt {shape} ({order})", args=(x, memory))
        return Made(f"torch.nn {name}: tgt + memory {shape} ({order})", args=(x, memory))
    return Made(f"torch.nn {name}: src {shape} ({order})", args=(x,))


def elements(made: Made) -> int:
    return sum(math.prod(t.shape) for t in [*made.args, *made.kwargs.values()] if isinstance(t, torch.Tensor))
