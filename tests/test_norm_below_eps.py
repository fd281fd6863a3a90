"""IA204 on a normalisation whose input is far below its eps: y = gamma (x - mu) / sqrt(var + eps)
+ beta gives std(y) = rms(gamma) std(x) / sqrt(eps) once var << eps, so the norm cannot restore
the scale. A pre-LN ViT-style stack whose patch embedding and position table are drawn at 1e-10
(BLIP's vision ``initializer_range``) is such a collapse, an error (every norm starved); one
starved norm the next restores is a warning. The same stack at 0.02, a tiny (1e-4) embedding
into a LayerNorm (RWKV's small-init embedding: the norm's output stays ~0.03 of its gain and the
next norm restores it), a norm reading an exactly zero input (DETR's zero decoder queries) and
an empty norm call are not findings."""

from __future__ import annotations

import torch
import torch.nn as nn

import initaudit

D, TOKENS = 32, 16


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.attn = nn.MultiheadAttention(D, 4, batch_first=True)
        self.fc1, self.fc2 = nn.Linear(D, 4 * D), nn.Linear(4 * D, D)

    def forward(self, x):
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))


class PatchEncoder(nn.Module):
    """Pre-LN encoder on 4x4 patches of a 16x16 image: conv patch embedding + a position table."""

    def __init__(self, std: float):
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, D, 4, 4)
        self.pos = nn.Parameter(torch.randn(1, TOKENS, D) * std)
        self.blocks = nn.ModuleList(Block() for _ in range(2))
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 10)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                nn.init.normal_(m.weight, std=std)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.MultiheadAttention):
                nn.init.normal_(m.in_proj_weight, std=std)
                nn.init.normal_(m.out_proj.weight, std=std)
        nn.init.normal_(self.head.weight, std=0.02)

    def features(self, x):
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        for b in self.blocks:
            x = b(x)
        return self.norm(x)

    def forward(self, x):
        return self.head(self.features(x).mean(1))


def _eps_findings(report):
    return [f for f in report.findings if f.rule == "IA204" and "below the norm's eps" in f.message]


X = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(1))


def test_a_stream_drawn_at_1e_10_starves_every_layer_norm():
    model = PatchEncoder(1e-10).eval()
    with torch.no_grad():
        out = model.features(X)
    assert out.std() < 1e-4  # measured: the final LayerNorm passes ~1e-6 of its gain of 1
    (f,) = _eps_findings(initaudit.audit(model, inputs=X))
    assert f.severity.value == "error" and f.evidence["ratio"] < 1e-4
    assert len(f.evidence["norms"]) == 5  # norm1 and norm2 of both blocks, and the final norm


def test_the_same_stack_at_0_02_is_clean():
    model = PatchEncoder(0.02).eval()
    with torch.no_grad():
        assert model.features(X).std() > 0.5
    assert not _eps_findings(initaudit.audit(model, inputs=X))


class SmallEmbedding(nn.Module):
    """RWKV's small-init embedding: N(0, 1e-4) rows into a LayerNorm (eps 1e-5), then a block."""

    def __init__(self, std: float = 1e-4):
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(64, D)
        nn.init.normal_(self.embed.weight, std=std)
        self.ln0 = nn.LayerNorm(D)
        self.ln1 = nn.LayerNorm(D)
        self.fc = nn.Linear(D, D)
        self.head = nn.Linear(D, 64)

    def forward(self, ids):
        x = self.ln0(self.embed(ids))
        x = x + self.fc(self.ln1(x))
        return self.head(x)


def test_a_small_init_embedding_into_a_layer_norm_is_not_a_collapse():
    model = SmallEmbedding().eval()
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model.ln0(model.embed(ids))
        assert 0.01 < first.std() < 0.1  # below the gain, as designed; ln1 restores it
        assert model.ln1(first).std() > 0.9
    assert not _eps_findings(initaudit.audit(model, inputs=ids))


def test_an_embedding_far_below_eps_is_found():
    model = SmallEmbedding(1e-9).eval()
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    (f,) = _eps_findings(initaudit.audit(model, inputs=ids))
    assert f.layer == "ln0" and f.severity.value == "error"


class ZeroQueries(nn.Module):
    """DETR's decoder start: the queries' content is zeros (positions carry them), so the first
    norm reads an exactly constant input and outputs its shift: a design, not a collapse."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(D, D)
        self.norm = nn.LayerNorm(D)
        self.query_pos = nn.Parameter(torch.randn(4, D))
        self.attn = nn.MultiheadAttention(D, 4, batch_first=True)
        self.head = nn.Linear(D, 3)

    def forward(self, x):
        memory = self.inp(x)
        tgt = self.norm(torch.zeros_like(self.query_pos)).expand(x.shape[0], -1, -1)
        q = tgt + self.query_pos
        return self.head(self.attn(q, memory, memory, need_weights=False)[0])


def test_a_norm_reading_exact_zeros_is_not_found():
    model = ZeroQueries().eval()
    x = torch.randn(8, 10, D, generator=torch.Generator().manual_seed(0))
    report = initaudit.audit(model, inputs=x)
    norm = [s for s in report.probe.sites if s.kind == "norm"]
    assert norm and all(s.spread == 0 for s in norm)
    assert not _eps_findings(report)


def test_one_starved_norm_the_next_one_restores_is_a_warning():
    """An embedding at 2e-5 into ln0 (eps 1e-5): ln0 passes 0.006 of its gain, ln1, reading that,
    restores it: a slow start at one norm, not a stream that stays below eps."""
    model = SmallEmbedding(2e-5).eval()
    ids = torch.randint(0, 64, (8, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        first = model.ln0(model.embed(ids))
        assert first.std() < 0.01 and model.ln1(first).std() > 0.8
    (f,) = _eps_findings(initaudit.audit(model, inputs=ids))
    assert f.layer == "ln0" and f.severity.value == "warning"


class EmptySelection(nn.Module):
    """A norm applied to the rows a threshold keeps (a mask head on the detections above a score):
    on random inputs none pass, so the call is empty."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(D, D)
        self.norm = nn.LayerNorm(D)
        self.head = nn.Linear(D, 2)

    def forward(self, x):
        h = self.fc(x)
        kept = self.norm(h[h.sum(-1) > 1e6])
        return self.head(h) + kept.sum()


def test_an_empty_norm_call_is_not_a_collapse():
    x = torch.randn(8, D, generator=torch.Generator().manual_seed(0))
    report = initaudit.audit(EmptySelection().eval(), inputs=x)
    assert any(s.kind == "norm" and s.samples == 0 for s in report.probe.sites)
    assert not _eps_findings(report)
