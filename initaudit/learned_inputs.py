"""Layers whose input is a learned constant, not the data: BLIP-2's Q-Former reads its learned
query tokens (``query_tokens``, zero-initialised by transformers), expanded over the batch. Its
first layers' units are then copies, constant over the batch, and their weights get no gradient
while those tokens are zero; a zero token table that itself gets a gradient moves at the first
update and unblocks them."""

from __future__ import annotations

from initaudit.graph import ModelGraph


def reads_no_data(graph: ModelGraph, name: str) -> bool:
    """Whether no path back from node ``name`` reaches one of the model's inputs: what it reads
    is made from parameters alone (a source node with no recorded inputs)."""
    by_name = {n.name: n for n in graph.nodes}
    stack, seen = [name], {name}
    while stack:
        node = by_name.get(stack.pop())
        if node is None or node.kind == "input":
            return False
        for inp in node.inputs:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return True


def learned_zero_inputs(graph: ModelGraph, grads: dict, all_zero) -> list[str]:
    """All-zero parameters no node of the dataflow applies as a layer's or norm's weight (a
    learned input: query tokens, a memory) that receive a non-zero gradient."""
    placed = {n for node in graph.nodes for n in (node.param, node.bias, *node.norm_params) if n}
    out = []
    for name, g in grads.items():
        if name in placed or name not in graph.params or not (g.received and g.norm > 0):
            continue
        if all_zero(name):
            out.append(name)
    return out
