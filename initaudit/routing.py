"""Mixture-of-experts dispatch read from the recorded dataflow: containers of identical expert
modules whose outputs are weighted by a router's softmax (or sigmoid, top-k) scores. Which
experts a batch reaches depends on the tokens (top-k routing), so an expert no token was sent
to in one probe batch is input-gated, not unused."""

from __future__ import annotations

from typing import TYPE_CHECKING

from initaudit.graph import ModelGraph

if TYPE_CHECKING:  # commands that touch no model never import torch
    from torch import nn

# Ops that turn router logits into routing weights.
_SCORES = frozenset({"softmax", "sigmoid", "topk", "log_softmax"})
# What routing weights pass through on the way to the product with an expert's output.
_ROUTE_KINDS = frozenset({"transparent", "unknown", "mul", "add"})
_HOPS = 40


def _shapes(mod: nn.Module) -> tuple:
    return tuple(tuple(p.shape) for p in mod.parameters())


def expert_places(root: nn.Module, path: str) -> list[tuple[str, str]]:
    """(container, member) for each module on ``path`` whose parent holds at least two
    children of its type and parameter shapes (``experts.expert_3`` in ``experts``),
    innermost first."""
    parts, places = path.split("."), []
    for i in range(len(parts) - 1, 0, -1):
        parent, child = ".".join(parts[:i - 1]), ".".join(parts[:i])
        try:
            owner, mod = root.get_submodule(parent), root.get_submodule(child)
        except AttributeError:
            continue
        shapes = _shapes(mod)
        if shapes and sum(type(c) is type(mod) and _shapes(c) == shapes for c in owner.children()) >= 2:
            places.append((parent, child))
    return places


def _scored(graph: ModelGraph, start: str, by_name: dict) -> str | None:
    """The layer whose scores (softmax/sigmoid/top-k of its output) reach ``start`` through
    element-wise and indexing ops only, or None."""
    stack, seen, hops = [(start, False)], {start}, 0
    while stack and hops < _HOPS:
        name, scored = stack.pop()
        hops += 1
        node = by_name.get(name)
        if node is None:
            continue
        if node.kind == "layer":
            return node.name if scored else None
        if node.kind not in _ROUTE_KINDS:
            continue
        for inp in node.inputs:
            if inp not in seen:
                seen.add(inp)
                stack.append((inp, scored or node.op_word in _SCORES))
    return None


def _through_moves(name: str, by_name: dict) -> str:
    """The first node at or above ``name`` that is not a shape-only op."""
    node = by_name.get(name)
    while node is not None and node.kind == "transparent" and len(node.inputs) == 1:
        name, node = node.inputs[0], by_name.get(node.inputs[0])
    return name


def routed_containers(graph: ModelGraph, root: nn.Module) -> dict[str, str]:
    """Expert container -> router layer, for the containers of identical modules whose
    recorded outputs are multiplied by a router's scores (``expert(x) * router_probs[top_x]``)."""
    by_name = {n.name: n for n in graph.nodes}
    found: dict[str, str] = {}
    for node in graph.nodes:
        if node.kind != "mul" or len(node.inputs) < 2:
            continue
        for i, inp in enumerate(node.inputs):
            src = by_name.get(_through_moves(inp, by_name))
            if src is None or src.kind != "layer" or not src.param:
                continue
            places = [c for c, _ in expert_places(root, src.param) if c not in found]
            router = next((r for j, other in enumerate(node.inputs) if j != i
                           for r in [_scored(graph, other, by_name)] if r), None) if places else None
            for container in places if router is not None else ():
                if not router.startswith(container + "."):  # the router is outside its experts
                    found[container] = router
    return found
