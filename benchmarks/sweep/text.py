"""Held-out transformers architectures for the false-alarm sweep (``benchmarks/sweep/run.py``).

None of these is in ``tests/zoo/registry.py``. Each factory builds the model with the task head
people use from a small config (hidden 32-64, 2-4 layers, vocabulary 100-256) with transformers'
own default initialisation; nothing is downloaded.

    python benchmarks/sweep/run.py benchmarks/sweep/text.py --forms module,onnx --out text.jsonl
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

V = 128  # vocabulary
H = 32  # hidden width
DEC = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
           num_attention_heads=4, max_position_embeddings=64)
ENC = dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
           num_attention_heads=4, max_position_embeddings=64)
S2S = dict(vocab_size=V, d_model=H, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
           decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64,
           pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2)
VIT = dict(image_size=32, patch_size=8, hidden_size=H, num_hidden_layers=2, num_attention_heads=4,
           intermediate_size=64)
AUDIO = dict(vocab_size=32, hidden_size=H, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=4)


def hf(config_cls: str, model_cls: str, **kw) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers

        torch.manual_seed(0)
        return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**kw)).eval()
    build.__name__ = model_cls
    return build


MODELS: dict[str, Callable[[], nn.Module]] = {
    # decoder-only
    "stablelm": hf("StableLmConfig", "StableLmForCausalLM", **DEC, num_key_value_heads=2),
    "starcoder2": hf("Starcoder2Config", "Starcoder2ForCausalLM", **DEC, num_key_value_heads=2),
    "olmo": hf("OlmoConfig", "OlmoForCausalLM", **DEC),
    "olmo2": hf("Olmo2Config", "Olmo2ForCausalLM", **DEC),
    "granite": hf("GraniteConfig", "GraniteForCausalLM", **DEC),
    "persimmon": hf("PersimmonConfig", "PersimmonForCausalLM", **DEC),
    "gptj": hf("GPTJConfig", "GPTJForCausalLM", vocab_size=V, n_embd=H, n_layer=2, n_head=4, n_positions=64,
               rotary_dim=4),
    "bloom": hf("BloomConfig", "BloomForCausalLM", vocab_size=V, hidden_size=H, n_layer=2, n_head=4),
    "codegen": hf("CodeGenConfig", "CodeGenForCausalLM", vocab_size=V, n_embd=H, n_layer=2, n_head=4,
                  n_positions=64, n_ctx=64, rotary_dim=4),
    "mpt": hf("MptConfig", "MptForCausalLM", vocab_size=V, d_model=H, n_layers=2, n_heads=4, max_seq_len=64),
    "xglm": hf("XGLMConfig", "XGLMForCausalLM", vocab_size=V, d_model=H, num_layers=2, attention_heads=4,
               ffn_dim=64, max_position_embeddings=64),
    "gpt_neo": hf("GPTNeoConfig", "GPTNeoForCausalLM", vocab_size=V, hidden_size=H, num_layers=2, num_heads=4,
                  attention_types=[[["global", "local"], 1]], max_position_embeddings=64, window_size=8),
    "phi3": hf("Phi3Config", "Phi3ForCausalLM", **DEC, pad_token_id=0),
    # encoders
    "xlm_roberta": hf("XLMRobertaConfig", "XLMRobertaForMaskedLM", **ENC),
    "deberta_v2": hf("DebertaV2Config", "DebertaV2ForMaskedLM", **ENC),
    "mpnet": hf("MPNetConfig", "MPNetForMaskedLM", **ENC),
    "funnel": hf("FunnelConfig", "FunnelForMaskedLM", vocab_size=V, d_model=H, n_head=4, d_head=8, d_inner=64,
                 block_sizes=[1, 1], num_decoder_layers=1),
    "squeezebert": hf("SqueezeBertConfig", "SqueezeBertForMaskedLM", **ENC, embedding_size=H, q_groups=2,
                      k_groups=2, v_groups=2, post_attention_groups=2, intermediate_groups=4, output_groups=4),
    "big_bird": hf("BigBirdConfig", "BigBirdForMaskedLM", **ENC, attention_type="original_full"),
    "roformer": hf("RoFormerConfig", "RoFormerForMaskedLM", **ENC, embedding_size=H),
    "rembert": hf("RemBertConfig", "RemBertForMaskedLM", **ENC, input_embedding_size=16,
                  output_embedding_size=16),
    "megatron_bert": hf("MegatronBertConfig", "MegatronBertForMaskedLM", **ENC),
    "xlnet": hf("XLNetConfig", "XLNetLMHeadModel", vocab_size=V, d_model=H, n_layer=2, n_head=4, d_inner=64),
    "modernbert": hf("ModernBertConfig", "ModernBertForMaskedLM", **ENC, global_attn_every_n_layers=2,
                     local_attention=16, pad_token_id=0, eos_token_id=2, bos_token_id=1, cls_token_id=1,
                     sep_token_id=2),
    # encoder-decoders
    "mbart": hf("MBartConfig", "MBartForConditionalGeneration", **S2S),
    "pegasus": hf("PegasusConfig", "PegasusForConditionalGeneration", **S2S),
    "led": hf("LEDConfig", "LEDForConditionalGeneration", **{k: v for k, v in S2S.items()
                                                            if k != "max_position_embeddings"},
              max_encoder_position_embeddings=64, max_decoder_position_embeddings=64, attention_window=4),
    "mt5": hf("MT5Config", "MT5ForConditionalGeneration", vocab_size=V, d_model=H, d_kv=8, d_ff=64,
              num_layers=2, num_heads=4, decoder_start_token_id=0),
    "blenderbot_small": hf("BlenderbotSmallConfig", "BlenderbotSmallForConditionalGeneration", **S2S),
    "prophetnet": hf("ProphetNetConfig", "ProphetNetForConditionalGeneration", vocab_size=V, hidden_size=H,
                     encoder_ffn_dim=64, decoder_ffn_dim=64, num_encoder_layers=2, num_decoder_layers=2,
                     num_encoder_attention_heads=4, num_decoder_attention_heads=4, max_position_embeddings=64,
                     ngram=2, num_buckets=8, relative_max_distance=16),
    # audio
    "hubert": hf("HubertConfig", "HubertForCTC", **AUDIO),
    "wavlm": hf("WavLMConfig", "WavLMForCTC", **AUDIO, num_buckets=16, max_bucket_distance=32),
    "sew": hf("SEWConfig", "SEWForCTC", **AUDIO, squeeze_factor=2),
    "data2vec_audio": hf("Data2VecAudioConfig", "Data2VecAudioForCTC", **{**AUDIO, "num_conv_pos_embeddings": 4}),
    # vision (transformers, timm-less)
    "dinov2": hf("Dinov2Config", "Dinov2ForImageClassification", **VIT, num_labels=10),
    "beit": hf("BeitConfig", "BeitForImageClassification", **VIT, num_labels=10, use_mean_pooling=True),
    "convnextv2": hf("ConvNextV2Config", "ConvNextV2ForImageClassification", num_stages=2, hidden_sizes=[16, 32],
                     depths=[2, 2], num_labels=10, image_size=32),
    "poolformer": hf("PoolFormerConfig", "PoolFormerForImageClassification", num_encoder_blocks=2,
                     depths=[1, 1], hidden_sizes=[16, 32], patch_sizes=[7, 3], strides=[4, 2], padding=[2, 1],
                     num_labels=10, image_size=32),
    "bit": hf("BitConfig", "BitForImageClassification", embedding_size=32, hidden_sizes=[128, 256],
              depths=[1, 1], num_labels=10, layer_type="bottleneck"),
    "vit_mae": hf("ViTMAEConfig", "ViTMAEForPreTraining", **VIT, decoder_hidden_size=32,
                  decoder_num_hidden_layers=1, decoder_num_attention_heads=4, decoder_intermediate_size=64),
    "siglip": hf("SiglipConfig", "SiglipModel",
                 text_config=dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=16),
                 vision_config=dict(image_size=32, patch_size=8, hidden_size=H, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4)),
    "owlvit": hf("OwlViTConfig", "OwlViTForObjectDetection",
                 text_config=dict(vocab_size=V, hidden_size=H, intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=16),
                 vision_config=dict(image_size=32, patch_size=8, hidden_size=H, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=4), projection_dim=32),
}
