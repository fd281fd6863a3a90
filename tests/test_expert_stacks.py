"""Mixture-of-experts weights stored as one 3-D parameter per projection (E, d1, d2) get the
fans of a stack of E linear maps (fan_in = in, fan_out = out of one expert), not torch's
Conv1d reading of the shape (fan_in = d1 * d2), in every form: the layout, (E, out, in) as
Mixtral and Qwen-MoE store it or (E, in, out) as GPT-OSS does, is read from how the two stacks
of one expert MLP chain from the model width back to it."""

from __future__ import annotations

import warnings

import pytest
import torch

from zoo.forms import audit_form

H, I, E = 32, 48, 4  # model width, expert width, experts


def _mixtral():
    tf = pytest.importorskip("transformers")
    c = tf.MixtralConfig(vocab_size=96, hidden_size=H, intermediate_size=I, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_local_experts=E,
                         num_experts_per_tok=2, max_position_embeddings=64)
    return tf.MixtralForCausalLM(c)


def _gpt_oss():
    tf = pytest.importorskip("transformers")
    c = tf.GptOssConfig(vocab_size=96, hidden_size=H, intermediate_size=I, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=8, num_local_experts=E,
                        num_experts_per_tok=2, max_position_embeddings=64,
                        layer_types=["sliding_attention", "full_attention"])
    return tf.GptOssForCausalLM(c)


# (model, stored shapes, fans (in, out) of one expert)
CASES = {
    "mixtral": (_mixtral, {"gate_up_proj": (E, 2 * I, H), "down_proj": (E, H, I)},
                {"gate_up_proj": (H, 2 * I), "down_proj": (I, H)}),
    "gpt_oss": (_gpt_oss, {"gate_up_proj": (E, H, 2 * I), "down_proj": (E, I, H)},
                {"gate_up_proj": (H, 2 * I), "down_proj": (I, H)}),
}


def _audit(build, form, tmp_path, scale_expert=None):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build()
        if config_attn := getattr(model.config, "_attn_implementation", None):
            model.config._attn_implementation = "eager" if config_attn != "eager" else config_attn
        if scale_expert:
            with torch.no_grad():
                model.get_parameter(scale_expert).normal_(0, 1)
        ids = torch.randint(0, 96, (4, 8), generator=torch.Generator().manual_seed(0))
        return audit_form(form, model.eval(), {"input_ids": ids}, tmp_path)


@pytest.mark.parametrize("form", ["module", "safetensors-model", "safetensors-bare"])
@pytest.mark.parametrize("name", list(CASES))
def test_expert_stacks_get_the_fans_of_one_expert(name, form, tmp_path):
    build, shapes, fans = CASES[name]
    report = _audit(build, form, tmp_path)
    rows = {r["param"]: r for r in report.to_json()["layers"]}
    for local, shape in shapes.items():
        row = rows[f"model.layers.0.mlp.experts.{local}"]
        assert tuple(row["shape"]) == shape  # the layout is as documented above
        assert (row["fan_in"], row["fan_out"]) == fans[local], (local, row["fan_in"], row["fan_out"])
    assert not [f for f in report.findings if f.severity.value != "info"]


@pytest.mark.parametrize("name", list(CASES))
def test_an_expert_stack_at_unit_normal_is_judged_on_one_experts_fan_in(name, tmp_path):
    build, _, _ = CASES[name]
    target = "model.layers.1.mlp.experts.down_proj"
    report = _audit(build, "module", tmp_path, scale_expert=target)
    hits = [f for f in report.findings if f.rule == "IA104" and f.layer == target]
    assert hits and hits[0].severity.value in ("warning", "error")
    # judged on one expert's fans (a Conv1d reading: fan_in = H * I = 1536, schemes at <= 0.04)
    assert f"fan_in={I}, fan_out={H}" in hits[0].message and hits[0].evidence["expected_std"] > 0.1
