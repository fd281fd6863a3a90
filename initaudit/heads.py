"""Prediction heads: the layers between a model's trunk and its output layer.

A layer whose only job is to feed the output layer scales the initial outputs and nothing
else: with zero biases and activations that are linear near 0 or positively homogeneous
(ReLU, GELU, tanh), f(s W x) ~ s f(W x) through the head, so a head drawn small (Hugging Face's
N(0, 0.02) on DETR's and YOLOS's 3-layer box and class MLPs, ELECTRA's discriminator dense)
starts the predictions near 0, as a zero or N(0, 0.01) classifier does. The depth rules take
the head's own shrink out and judge the signal that enters it (``Param.feeds_head``).
"""

from __future__ import annotations

from initaudit.graph import _SHAPE_OR_ACT, PASS_THROUGH, Node, _following


def head_layers(nodes: list[Node], users: dict[str, list[Node]], feeds_layer: dict[str, bool]) -> set[str]:
    """Names of the layer nodes that feed only an output head:

    - a head input: every next layer (past activations, pooling, shape ops) is an output layer;
    - a head chain: layers that each feed only the next layer of the chain down to an output
      layer, the first reading (through shape ops) a normalisation with weight layers before it
      (the trunk's final norm). A plain MLP from the input is no head: the chain must start after
      a trunk, so a deep stack drawn small is still judged."""
    by_name = {n.name: n for n in nodes}
    chain: dict[str, bool] = {}  # reverse topological order: what follows is decided first
    for node in reversed(nodes):
        if node.kind == "layer" and feeds_layer.get(node.name, False):
            after = _following(node.name, users, _SHAPE_OR_ACT)
            chain[node.name] = bool(after) and all(
                n.kind == "layer" and (not feeds_layer[n.name] or chain.get(n.name, False)) for n in after)
    after_trunk: dict[str, bool] = {}  # a weight layer or embedding lies upstream
    heads: set[str] = set()
    for node in nodes:
        ins = [by_name[i] for i in node.inputs if i in by_name]
        after_trunk[node.name] = any(n.kind in ("layer", "embedding") or after_trunk[n.name] for n in ins)
        if not chain.get(node.name):
            continue
        inputs_only = all(not feeds_layer[n.name] for n in _following(node.name, users, _SHAPE_OR_ACT))
        sources = _sources(node, by_name, PASS_THROUGH)
        starts = bool(sources) and all(s.kind == "norm" and after_trunk[s.name] for s in sources)
        continues = bool(sources := _sources(node, by_name, _SHAPE_OR_ACT)) and all(s.name in heads for s in sources)
        if inputs_only or starts or continues:
            heads.add(node.name)
    return heads


def head_predecessor(node: Node, by_name: dict[str, Node], heads: set[str]) -> str | None:
    """The head layer the chain reaches ``node`` from (through activations and shape ops), if any."""
    sources = _sources(node, by_name, _SHAPE_OR_ACT)
    return sources[0].name if len(sources) == 1 and sources[0].name in heads else None


def _sources(node: Node, by_name: dict[str, Node], through: frozenset[str]) -> list[Node]:
    """The first producers reached walking back from ``node`` whose kind is not in ``through``."""
    found, stack, seen = [], list(node.inputs), set(node.inputs)
    while stack:
        src = by_name.get(stack.pop())
        if src is None:
            continue
        if src.kind in through:
            stack.extend(i for i in src.inputs if i not in seen)
            seen.update(src.inputs)
        else:
            found.append(src)
    return found
