"""Low-rank updates in a checkpoint with no architecture: a layer W (out, in) with a pair of
factors beside it, B (out, r) and A (r, in), r < min(out, in), all under one parent module
(LoRA and its kin: ``q_proj.base_layer``, ``q_proj.lora_A``, ``q_proj.lora_B``). The layer
computes y = W x + B A x, so B is the end of a branch added to W's output: B = 0 (LoRA's init)
starts the update at zero and the layer as W, and B still gets dL/dB = g (A x)^T, non-zero
while A is not. An adapter file (peft's ``save_pretrained``: ``adapter_model.safetensors``)
holds the factors without W: there every matrix of the file is one factor of such a pair, and
W is the base model's. Found from shapes and the module tree only, never from the factors'
names."""

from __future__ import annotations

from dataclasses import dataclass

from initaudit.graph import OpKind, Param

_LEVELS = 3  # how far above a factor's module the parent holding W may be (q_proj.lora_B.default)


@dataclass(frozen=True)
class LowRank:
    base: Param | None  # W (out, in); None in an adapter file (W is the base model's)
    down: Param  # A (r, in)
    up: Param  # B (out, r)


def _ancestors(layer: str) -> list[str]:
    parts = layer.split(".")
    return [".".join(parts[:k]) for k in range(len(parts) - 1, max(0, len(parts) - 1 - _LEVELS), -1)]


def _under(p: Param, parent: str, other: Param) -> bool:
    """``p`` lies under ``parent`` and not inside ``other``'s module."""
    return p.layer.startswith(parent + ".") and not (p.layer + ".").startswith(other.layer + ".")


def _pair_for(up: Param, by_parent: dict[str, list[Param]], adapter_file: bool) -> LowRank | None:
    out, r = up.shape
    for parent in _ancestors(up.layer):
        near = [p for p in by_parent.get(parent, ()) if p is not up and _under(p, parent, up)]
        downs = [p for p in near if p.shape[0] == r and p.shape[1] > r]
        bases = [p for p in near if p.shape[0] == out and any(p.shape[1] == a.shape[1] for a in downs)]
        bases = [b for b in bases if not any((b.layer + ".").startswith(a.layer + ".") for a in downs)]
        if len(downs) != 1 or r >= min(out, downs[0].shape[1]):
            continue
        if len(bases) == 1 or (adapter_file and not bases):
            return LowRank(bases[0] if bases else None, downs[0], up)
    return None


def _pairs(mats: list[Param], adapter_file: bool) -> list[LowRank]:
    by_parent: dict[str, list[Param]] = {}
    for p in mats:
        for parent in _ancestors(p.layer):
            by_parent.setdefault(parent, []).append(p)
    found = (_pair_for(p, by_parent, adapter_file) for p in mats if p.shape[1] < p.shape[0])
    return [t for t in found if t is not None]


def low_rank_updates(params: dict[str, Param]) -> list[LowRank]:
    """Every (W, A, B) triple of the file, or every (A, B) pair of an adapter file: one where
    each matrix is a factor of a pair (see the module docstring)."""
    mats = [p for p in params.values() if p.is_weight and p.kind is OpKind.LINEAR and len(p.shape) == 2]
    triples = _pairs(mats, adapter_file=False)
    if triples:
        return triples
    pairs = _pairs(mats, adapter_file=True)
    factors = {id(p) for t in pairs for p in (t.down, t.up)}
    return pairs if pairs and len(factors) == len(mats) else []


def mark_low_rank(params: dict[str, Param]) -> list[LowRank]:
    """Mark each up factor B as the end of a branch added to its base layer (``residual_end``)."""
    triples = low_rank_updates(params)
    for t in triples:
        t.up.residual_end = True
        t.up.is_output = False
        of = t.base.name if t.base is not None else "a base layer not in this adapter file"
        t.up.notes.append(f"read as the up factor B of a low-rank update W + B A of {of} "
                          f"(rank {t.up.shape[1]}, from shapes): its output is added to the layer's")
    return triples
