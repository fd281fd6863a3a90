"""Layers whose input is a learned constant, not the data, at init.

BLIP-2's Q-Former reads its learned query tokens (``query_tokens``, zero-initialised by
transformers), expanded over the batch. Its first layers' units are then copies, constant over
the batch, and their weights get no gradient while those tokens are zero; a zero token table that
itself gets a gradient moves at the first update and unblocks them.

Skip-init (De & Smith 2020; NFNets): a residual branch's last layer is multiplied by a learned
gain at zero (timm's ``ScaledStdConv2d`` gain, a LayerScale or ``skipinit_gain`` product), so
the squeeze-excite layers after it read constant zeros and get no gradient. The gain itself gets
one, dL/dg = sum(err * conv(x)) != 0, so the first update makes the branch's output depend on the
data, and the layers after it learn from then on. Every path from the data to such a layer passes
a zero factor that gets a gradient (:func:`behind_learning_zeros`)."""

from __future__ import annotations

from collections.abc import Callable

from initaudit.graph import ModelGraph, Node, ParamRole


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


# Roles of the tensors a node multiplies its input by (a layer's weight and its module's other
# tensors, such as a ScaledStdConv2d gain; a norm's scale): zero, they make its output constant.
_FACTOR_ROLES = frozenset({ParamRole.WEIGHT, ParamRole.OTHER, ParamRole.NORM_SCALE})


def node_factors(graph: ModelGraph, by_layer: dict[str, list[str]], node: Node) -> list[str]:
    """The parameters ``node`` multiplies its input by: a layer's weight and every other non-bias
    tensor of its module (``by_layer``: module name -> parameter names), a norm's scale, a
    product's gain (``y = g * x``: LayerScale, skip-init's alpha)."""
    if node.kind == "layer" and node.param in graph.params:
        names = by_layer.get(graph.params[node.param].layer, [node.param])
    elif node.kind == "norm":
        names = list(node.norm_params)
    elif node.kind == "mul" and node.param:
        names = [node.param]
    else:
        return []
    return [n for n in names if n in graph.params and graph.params[n].role in _FACTOR_ROLES]


def behind_learning_zeros(graph: ModelGraph, name: str, cut: Callable[[Node], list[str]]) -> list[str]:
    """The zero factors found on every path from the model's inputs to node ``name``: a walk back
    over inputs that stops at a node where ``cut(node)`` names parameters (all-zero factors of
    that node that get a gradient). [] when a path reaches an input without passing one (the node
    reads the data, or a zero that does not move), or when none was found (it reads no data)."""
    by_name = {n.name: n for n in graph.nodes}
    start = by_name.get(name)
    if start is None:
        return []
    stack, seen, found = list(start.inputs), set(start.inputs), []
    while stack:
        node = by_name.get(stack.pop())
        if node is None or node.kind == "input":
            return []
        if zeros := cut(node):
            found += [z for z in zeros if z not in found]
            continue
        for inp in node.inputs:
            if inp not in seen:
                seen.add(inp)
                stack.append(inp)
    return found


def zero_factors_before(graph: ModelGraph, name: str, grads: dict, sites: list, all_zero) -> list[str]:
    """The all-zero factors that get a gradient (a ScaledStdConv2d gain, a zero layer weight, a
    zero-init norm scale or LayerScale gain) on every path from the data to node ``name``
    (:func:`behind_learning_zeros`). A layer is a cut only where the probe saw its output constant
    over the batch (``sites``), a norm only where its measured gain is 0 (not ``x * (1 + w)`` at
    w = 0)."""
    by_layer: dict[str, list[str]] = {}
    for q in graph.params.values():
        by_layer.setdefault(q.layer, []).append(q.name)
    constant = {s.param for s in sites if s.kind == "layer" and s.param and s.units and s.constant_units == s.units}

    def learns(n: str) -> bool:
        g = grads.get(n)
        return g is not None and g.received and g.norm > 0 and all_zero(n)

    def cut(node: Node) -> list[str]:
        if node.kind == "layer" and node.param not in constant:
            return []
        zeros = [z for z in node_factors(graph, by_layer, node) if learns(z)]
        if zeros and node.kind == "norm":
            from initaudit.normgain import measured_gain

            p = graph.params[zeros[0]]
            gain = measured_gain(graph.module, p.layer, p.shape[0]) \
                if graph.module is not None and p.shape else None
            return zeros if gain == 0 else []
        return zeros

    return behind_learning_zeros(graph, name, cut)
