"""Synthetic probe inputs for plain torch.nn programs whose forward fixes the input size: an MNIST
convnet (a flattened 64x12x12 map into Linear(9216, 128) needs 28x28), the Nature DQN (84x84),
a DCGAN discriminator (64x64 down to 1x1), attention pooling over a bag of vectors (a set of
(n, features), not one vector). The default (32x32, (batch, in)) makes the forward raise; the
probe takes the first common size it accepts and says so, and the trial forwards leave the
model as it was."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import initaudit


class MnistConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
        self.bn = nn.BatchNorm2d(64)
        self.fc1, self.fc2 = nn.Linear(9216, 128), nn.Linear(128, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn(self.conv2(F.relu(self.conv1(x))))), 2)
        return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


class AttentionPool(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed, self.score, self.head = nn.Linear(32, 16), nn.Linear(16, 1), nn.Linear(16, 1)

    def forward(self, bag):  # (batch, instances, 32)
        h = F.relu(self.embed(bag))
        a = torch.softmax(self.score(h), dim=1)
        return self.head((a * h).sum(dim=1))


class Coupling(nn.Module):
    """A RealNVP affine coupling: the forward halves x before its first layer reads one half."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 8))

    def forward(self, x):
        a, b = x.chunk(2, dim=1)
        s, t = self.net(a).chunk(2, dim=1)
        return torch.cat([a, b * torch.exp(torch.tanh(s)) + t], dim=1)


def _dqn():
    return nn.Sequential(nn.Conv2d(4, 32, 8, 4), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                         nn.Conv2d(64, 64, 3, 1), nn.ReLU(), nn.Flatten(), nn.Linear(3136, 64), nn.ReLU(),
                         nn.Linear(64, 6))


def _probe(model):
    return initaudit.audit(model, probe_batch_size=4).to_json()["probe"]


@pytest.mark.parametrize(("build", "shape"), [
    (MnistConvNet, [4, 1, 28, 28]),
    (_dqn, [4, 4, 84, 84]),
    (AttentionPool, [4, 16, 32]),
    (Coupling, [4, 8]),
])
def test_the_probe_runs_on_the_first_common_size_the_forward_accepts(build, shape):
    torch.manual_seed(0)
    model = build()
    default = [4, 512] if isinstance(model, AttentionPool) else [4, 4] if isinstance(model, Coupling) \
        else [4, shape[1], 32, 32]
    with pytest.raises(RuntimeError):  # measured: the default input does not fit
        model(torch.randn(default))
    probe = _probe(model)
    assert probe["ran"], probe.get("skipped_reason")
    assert probe["input_shapes"] == [shape]
    assert "the forward rejects" in probe["inputs_source"] and "--input-shape" in probe["inputs_source"]


def test_the_trial_forwards_leave_the_model_as_it_was():
    torch.manual_seed(0)
    model = MnistConvNet().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initaudit.audit(model, probe_batch_size=4)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats included
    assert int(after["bn.num_batches_tracked"]) == 0


def test_a_model_that_takes_the_default_is_given_the_default():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2))
    probe = _probe(model)
    assert probe["input_shapes"] == [[4, 3, 32, 32]] and "rejects" not in probe["inputs_source"]


class Rejects(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        raise RuntimeError("this model wants a dict of tensors")


def test_a_forward_that_rejects_every_size_reports_its_own_error_on_the_default():
    probe = initaudit.audit(Rejects()).to_json()["probe"]  # default batch: a skipped probe is no error
    assert not probe["ran"]
    assert "this model wants a dict of tensors" in probe["skipped_reason"]
    assert "(64, 3, 32, 32)" in probe["skipped_reason"]


class Translator(nn.Module):
    """The PyTorch translation tutorial's shape: source and target tables around nn.Transformer."""

    def __init__(self, batch_first: bool = True):
        super().__init__()
        self.src_emb, self.tgt_emb = nn.Embedding(50, 32), nn.Embedding(40, 32)
        self.transformer = nn.Transformer(32, 4, 1, 1, 64, 0.0, batch_first=batch_first)
        self.generator = nn.Linear(32, 40)

    def forward(self, src, tgt):
        return self.generator(self.transformer(self.src_emb(src), self.tgt_emb(tgt)))


class Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.tower = nn.Sequential(nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8))

    def forward(self, a, b):
        return (self.tower(a) - self.tower(b)).pow(2).sum(-1)


@pytest.mark.parametrize(("batch_first", "lead"), [(True, [4, 16]), (False, [16, 4])])
def test_a_forward_of_source_and_target_tokens_gets_ids_for_each_table(batch_first, lead):
    torch.manual_seed(0)
    probe = _probe(Translator(batch_first))
    assert probe["ran"], probe["skipped_reason"]
    assert probe["input_shapes"] == [lead, lead]
    assert "src: token ids uniform on [0, 50)" in probe["inputs_source"]
    assert "tgt: token ids uniform on [0, 40)" in probe["inputs_source"]


def test_a_siamese_forward_gets_the_first_layers_input_for_each():
    torch.manual_seed(0)
    probe = _probe(Siamese())
    assert probe["ran"] and probe["input_shapes"] == [[4, 12], [4, 12]]


def test_a_second_input_the_forward_cannot_take_as_such_still_asks_for_inputs():
    class Strict(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(8, 4)

        def forward(self, x, lengths):  # lengths: one int per sample, not a second (batch, 8)
            assert lengths.dim() == 1
            return self.fc(x)[torch.arange(x.shape[0]), lengths.long().clamp(0, 3)]

    torch.manual_seed(0)
    probe = initaudit.audit(Strict()).to_json()["probe"]
    assert not probe["ran"] and "2 required inputs" in probe["skipped_reason"]
