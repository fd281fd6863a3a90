"""Attention score projections: the weights whose outputs meet across Q K^T, and the scale of
the logits they set (the attention's own factor on Q K^T read from the graph)."""

from __future__ import annotations

import math

from initaudit.graph import PASS_THROUGH, ModelGraph, Node, _consumers, _following

# Ops between a projection and the attention that take it in: reshapes, head splits, q * d^-1/2
# scaling, rotary embeddings (a sum of one signal's rotations), a key cache's concatenation.
_TO_ATTENTION = PASS_THROUGH | {"mul", "other"}


def score_projections(graph: ModelGraph) -> dict[str, set[str]]:
    """Weights whose output reaches attention only as its query or its key, never as its value
    or anywhere else, mapped to the weights on the other side of Q K^T (a query projection's
    keys, a key projection's queries; itself for a fused Q/K projection).

    In ``softmax(Q K^T / sqrt(d)) V`` the query and key set the softmax's temperature: the
    logits' spread is the product of their spreads; the output averages V, so the signal that
    goes on is V's. A fused Q/K/V projection also feeds V and is not one of these.
    """
    by_name = {n.name: n for n in graph.nodes}
    users = _consumers(graph.nodes)

    def sources(start: str) -> set[str]:
        return set(_projections(by_name, start))

    sides: dict[str, set[str]] = {}
    values: set[str] = set()
    for node in graph.nodes:
        if node.kind != "attention" or len(node.inputs) < 3:
            continue
        q, k = sources(node.inputs[0]), sources(node.inputs[1])
        values |= sources(node.inputs[2])
        for mine, other in ((q, k), (k, q)):
            for name in mine:
                sides.setdefault(name, set()).update(other)
    layer_of = {n.param: n for n in graph.nodes if n.kind == "layer" and n.param}
    out = {}
    for name, other in sides.items():
        if name in values or name not in layer_of:
            continue
        after = _following(layer_of[name].name, users, _TO_ATTENTION)
        if after and all(n.kind == "attention" for n in after):
            out[name] = other  # itself too when one layer makes both Q and K
    return out


def _projections(by_name: dict[str, Node], start: str) -> dict[str, float]:
    """The weights whose output reaches ``start`` through the ops of ``_TO_ATTENTION``, each with
    the product of the constant factors on its way (``q * d^-1/2``)."""
    found: dict[str, float] = {}
    stack, seen = [(start, 1.0)], {start}
    while stack:
        name, scale = stack.pop()
        node = by_name.get(name)
        if node is None:
            continue
        if node.kind == "layer" and node.param:
            found.setdefault(node.param, scale)
        elif node.kind in _TO_ATTENTION and len(dict.fromkeys(node.inputs)) <= 2:
            if node.kind == "mul" and len(node.inputs) == 1 and "scale" in node.attrs:
                scale *= abs(float(node.attrs["scale"]))
            for i in node.inputs:
                if i not in seen:
                    seen.add(i)
                    stack.append((i, scale))
    return found


def attention_logit_scales(graph: ModelGraph) -> dict[str, float]:
    """Per query or key projection, the scale its attention applies to Q K^T relative to the
    usual 1/sqrt(d), read from the graph: the constant factors between Q K^T and the softmax
    (``attrs["logit_scale"]`` of the attention node, SDPA's ``scale``) and on the way from the
    projections (``q * d^-1/2`` before the product). 1 for ``softmax(Q K^T / sqrt(d))``; sqrt(d)
    where nothing scales (T5, which folds the scale into its query's init). Attention nodes
    whose scale is not known are left out (taken as 1/sqrt(d))."""
    by_name = {n.name: n for n in graph.nodes}
    scales: dict[str, list[float]] = {}
    for node in graph.nodes:
        if node.kind != "attention" or len(node.inputs) < 3 or not node.attrs.get("logit_scale"):
            continue
        q, k = _projections(by_name, node.inputs[0]), _projections(by_name, node.inputs[1])
        if not q or not k:
            continue
        side = math.exp(sum(math.log(v) for v in q.values() if v) / len(q)
                        + sum(math.log(v) for v in k.values() if v) / len(k))
        for name in (*q, *k):
            scales.setdefault(name, []).append(float(node.attrs["logit_scale"]) * side)
    return {n: math.exp(sum(math.log(v) for v in vs) / len(vs)) for n, vs in scales.items()}
