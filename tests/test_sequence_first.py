"""The probe's batch size on sequence-first models (issue 8): nn.TransformerEncoder and RNNs
built without ``batch_first`` take (seq, batch, ...) inputs, so the batch is read from dim 1,
for synthetic inputs, ``--inputs`` files and ``--batch-size`` alike; batch-first controls keep
dim 0."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch
from click.testing import CliRunner

from initaudit.cli import main

MODELS = textwrap.dedent('''
    import torch.nn as nn

    def encoder(batch_first=False):
        layer = nn.TransformerEncoderLayer(32, 4, 64, dropout=0.0, batch_first=batch_first)
        return nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)

    def encoder_bf():
        return encoder(True)

    class LM(nn.Module):  # embedding -> LSTM -> head: the LSTM's layout decides
        def __init__(self, batch_first=False):
            super().__init__()
            self.emb = nn.Embedding(100, 16)
            self.rnn = nn.LSTM(16, 16, batch_first=batch_first)
            self.head = nn.Linear(16, 100)

        def forward(self, ids):
            return self.head(self.rnn(self.emb(ids))[0])

    def lm():
        return LM()

    def lm_bf():
        return LM(True)

    def gru():
        return nn.GRU(8, 8)

    def gru_bf():
        return nn.GRU(8, 8, batch_first=True)
''')


@pytest.fixture()
def models(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seqmodels.py").write_text(MODELS)
    return tmp_path / "seqmodels.py"


def probe_of(spec: str, *args: str) -> dict:
    res = CliRunner().invoke(main, [spec, "--isolated", "--format", "json", "-q", *args])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)["probe"]


@pytest.mark.parametrize("factory, shape", [
    ("encoder", [16, 5, 32]), ("encoder_bf", [5, 16, 32]),
    ("lm", [16, 5]), ("lm_bf", [5, 16]),
    ("gru", [16, 5, 8]), ("gru_bf", [5, 16, 8]),
])
def test_batch_size_is_honoured_in_the_models_layout(models, factory, shape):
    probe = probe_of(f"{models}:{factory}", "--batch-size", "5")
    assert probe["ran"], probe
    assert probe["input_shapes"] == [shape]
    assert probe["batch_size"] == 5  # dim 0 would say 16 for the sequence-first ones


@pytest.mark.parametrize("factory, batch", [("encoder", 3), ("encoder_bf", 7)])
def test_inputs_file_batch_read_from_the_models_batch_dim(models, factory, batch):
    path = models.parent / "x.pt"
    torch.save(torch.randn(7, 3, 32), path)  # (seq 7, batch 3) sequence-first; (batch 7, seq 3) else
    probe = probe_of(f"{models}:{factory}", "--inputs", str(path))
    assert probe["ran"] and probe["inputs"] == "file" and probe["batch_size"] == batch


def test_a_batch_size_the_inputs_file_does_not_carry_is_refused(models):
    path = models.parent / "x.pt"
    torch.save(torch.randn(7, 3, 32), path)  # batch 3 in a sequence-first model
    res = CliRunner().invoke(main, [f"{models}:encoder", "--isolated", "-q", "--inputs", str(path),
                                    "--batch-size", "7"])  # 7 is the sequence length, not the batch
    assert res.exit_code == 2
    assert "--batch-size 7 could not be used: the probe ran with batch 3" in res.stderr
