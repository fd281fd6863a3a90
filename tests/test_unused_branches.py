"""IA209 on parameters that only some inputs reach: a parameter used only in a branch on an
argument of its owner's method (XLNet's ``mask_emb`` under ``if target_mapping is not None``,
its segment encodings in the ``else`` of ``if seg_mat is None``) is not exercised by the
probe's inputs, not unused (info, saying which branch); a module that is never called, or
whose output is thrown away, stays a warning."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import initaudit


def _ia209(report):
    return {f.layer: f for f in report.findings if f.rule == "IA209"}


class WithOptionalInput(nn.Module):
    """A classifier with an optional side input, as people write them."""

    def __init__(self):
        super().__init__()
        self.main = nn.Linear(8, 4)
        self.side = nn.Linear(3, 8)
        self.forgotten = nn.Linear(8, 8)  # registered, never called

    def forward(self, x, extra=None):
        if extra is not None:
            x = x + self.side(extra)
        return self.main(x)


def test_a_branch_on_an_absent_input_is_info_and_a_forgotten_module_stays_a_warning():
    torch.manual_seed(0)
    model = WithOptionalInput()
    report = initaudit.audit(model, inputs=torch.randn(16, 8))
    got = _ia209(report)
    assert got["side"].severity.value == "info"
    assert "extra is not None" in got["side"].message and got["side"].evidence["input_gated"]
    assert got["forgotten"].severity.value == "warning"
    # the measurement: given the input, the branch's parameters do receive gradients
    full = initaudit.audit(model, inputs=(torch.randn(16, 8), torch.randn(16, 3)))
    assert full.probe.grads["side.weight"].received
    assert "side" not in _ia209(full) and _ia209(full)["forgotten"].severity.value == "warning"


class UsedBothWays(nn.Module):
    def __init__(self):
        super().__init__()
        self.main = nn.Linear(8, 4)
        self.extra = nn.Linear(8, 8)

    def forward(self, x, flag=None):
        if flag is not None:
            x = self.extra(x)
        self.extra(x)  # also called unconditionally, output thrown away
        return self.main(x)


def test_a_parameter_also_used_outside_the_branch_is_not_explained_by_it():
    torch.manual_seed(0)
    got = _ia209(initaudit.audit(UsedBothWays(), inputs=torch.randn(16, 8)))
    assert got["extra"].severity.value == "warning"


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("transformers")


def test_xlnet_parameters_of_inputs_the_probe_did_not_give(tf):
    """Given only input_ids (the zoo's and many users' inputs): XLNet's segment encodings and
    its query-stream mask embedding get no gradient, each used only in a branch on an input
    (seg_mat from token_type_ids; target_mapping): info, not 5 warnings. Measured: with
    token_type_ids the segment encodings receive gradients."""
    torch.manual_seed(0)
    model = tf.XLNetLMHeadModel(tf.XLNetConfig(vocab_size=96, d_model=32, n_layer=2, n_head=4, d_inner=64))
    ids = torch.randint(0, 96, (4, 8), generator=torch.Generator().manual_seed(0))
    report = initaudit.audit(model, inputs={"input_ids": ids})
    got = _ia209(report)
    assert set(got) == {"transformer", "transformer.layer.0.rel_attn", "transformer.layer.1.rel_attn"}
    assert all(f.severity.value == "info" for f in got.values())
    assert "target_mapping is not None" in got["transformer"].message
    assert "seg_mat is None" in got["transformer.layer.0.rel_attn"].message
    segments = torch.zeros_like(ids)
    segments[:, 4:] = 1
    model.zero_grad()
    model(input_ids=ids, token_type_ids=segments).logits.sum().backward()
    assert model.transformer.layer[0].rel_attn.seg_embed.grad is not None
    assert model.transformer.mask_emb.grad is None


def test_bigbird_mlm_pooler_is_really_unused(tf):
    """BigBirdForMaskedLM builds its encoder with a pooler whose output the MLM head drops:
    computed in every forward, never trained (measured: no gradient from the MLM loss), so the
    warning is true."""
    torch.manual_seed(0)
    model = tf.BigBirdForMaskedLM(tf.BigBirdConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
        max_position_embeddings=128, block_size=4, num_random_blocks=2, attention_type="original_full"))
    ids = torch.randint(0, 96, (4, 16), generator=torch.Generator().manual_seed(0))
    got = _ia209(initaudit.audit(model, inputs={"input_ids": ids}))
    assert {k: f.severity.value for k, f in got.items()} == {"bert.pooler": "warning"}
    model.zero_grad()
    model(input_ids=ids, labels=ids).loss.backward()
    assert model.bert.pooler.weight.grad is None and model.bert.encoder.layer[0].output.dense.weight.grad is not None
