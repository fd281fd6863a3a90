"""What a branch of the recorded dataflow starts as, and where its gradient stops: the value a
gate takes while the layer in front of it outputs 0 (:func:`gate_starts`), and the ops with a
zero derivative that cut a forward path from the loss (:func:`stopped_at`), and the branches a
norm resets before the skip adds them (:func:`sandwich_ends`)."""

from __future__ import annotations

import math
from collections.abc import Callable

from initaudit.graph import (
    _SHAPE_ONLY,
    _SHAPE_OR_ACT,
    ModelGraph,
    Node,
    _behind_gains,
    _consumers,
    _following,
    _is_gain,
    is_cell_sum,
    merge_trunks,
)

_NO_VALUE = frozenset({"add", "sub", "rsub"})  # a constant added on the way: the value is unknown
_SCALING = frozenset({"mul", "div"})  # a factor on the way: 0 stays 0, any other value is unknown
_KNOWN_FNS: dict[str, Callable[[float], float]] = {"exp": math.exp}


def _value_after(node: Node, v: float | None) -> float | None:
    """What a signal that is ``v`` everywhere becomes after ``node`` (None: not known)."""
    op = _op(node)
    if v is None:
        return None
    if node.kind == "act":
        from initaudit.schemes import activation_fn  # imports torch

        try:
            import torch

            return float(activation_fn(node.activation)(torch.tensor([v], dtype=torch.float64))[0])
        except (KeyError, TypeError):
            return None
    if node.kind == "unknown":
        return _KNOWN_FNS[op](v) if len(node.inputs) == 1 else None
    if _is_gain(node) or op in _SCALING:
        return 0.0 if v == 0 else None
    return None if op in _NO_VALUE else v


def gate_starts(nodes: list[Node], users: dict[str, list[Node]]) -> dict[str, float]:
    """Weights of layers that end a branch gating a trunk, ``x * g(f(x))`` (a flow's coupling
    ``x * exp(tanh(s(x)))``, a squeeze-excite gate), mapped to the gate's value when the layer
    outputs 0: every path from the layer passes only elementwise ops and ends in a product
    with the trunk that carries the signal past it (:func:`merge_trunks`), a residual sum or the
    output, and at least one ends in such a product. A zero layer there starts the block as
    the fixed scaling x * g(0), when g(0) != 0, and each of its units gets its own gradient."""
    trunks = merge_trunks(nodes)
    out: dict[str, float] = {}
    for node in nodes:
        if node.kind != "layer" or not node.param:
            continue
        gates: list[float] = []
        stack, seen, ok = [(node.name, 0.0)], set(), True
        while stack and ok:
            name, v = stack.pop()
            for user in users.get(name, []):
                if user.kind == "output" or (user.kind == "add" and not is_cell_sum(user)):
                    continue
                if user.kind == "mul" and len(set(user.inputs)) > 1:
                    trunk = trunks.get(user.name)
                    ok = trunk is not None and trunk != name and v is not None and v != 0
                    gates.append(v or 0.0)
                elif user.kind in ("act", "transparent") or _is_gain(user) or (
                        user.kind == "unknown" and _op(user) in _KNOWN_FNS):
                    if (user.name, v) not in seen:
                        seen.add((user.name, v))
                        stack.append((user.name, _value_after(user, v)))
                else:
                    ok = False
                if not ok:
                    break
        if ok and gates:
            out[node.param] = gates[0]
    return out


# Ops whose derivative is zero wherever it exists (or that leave autograd): a path that ends in
# one passes no gradient back, by design (a quantised latent, a stop-gradient).
_STOPS = frozenset({"round", "floor", "ceil", "trunc", "sign", "argmax", "argmin", "detach"})


def _op(node: Node) -> str:
    return (node.op or "").rpartition(".")[2].lower()


def stopped_at(graph: ModelGraph, params: list[str]) -> list[str]:
    """The zero-derivative ops where every forward path from the nodes applying ``params`` ends
    (an autoencoder's latent rounded to bytes before its decoder), or [] when one reaches the
    output or ends elsewhere (a result computed and dropped is unused, not stopped)."""
    users = _consumers(graph.nodes)
    stack = [n.name for n in graph.nodes if n.kind in ("layer", "embedding") and {n.param, n.bias} & set(params)]
    seen, stops = set(stack), []
    while stack:
        name = stack.pop()
        outs = users.get(name, [])
        node = next(n for n in graph.nodes if n.name == name) if not outs else None
        if node is not None:
            if _op(node) not in _STOPS:
                return []
            stops.append(_op(node))
        for user in outs:
            if user.kind == "output":
                return []
            if user.name not in seen:
                seen.add(user.name)
                stack.append(user.name)
    return sorted(set(stops))


def logit_only(nodes: list[Node]) -> set[str]:
    """Weights of layers whose every forward path to an output passes the logits of a softmax
    that averages values (an attention node's query or key slot, or ``s`` of ``softmax(s) V``),
    and that reach an output at all. Their error arrives only through the softmax's derivative,
    near zero while the weights are nearly uniform at init: a query projection, and as well
    every layer of a sub-network that only makes queries (GCViT's global-query generator:
    MBConv, squeeze-excite, pooling and a norm in front of the query slot)."""
    users: dict[str, list[tuple[Node, int]]] = {}
    for n in nodes:
        for slot, inp in enumerate(n.inputs):
            users.setdefault(inp, []).append((n, slot))
    reach: dict[str, bool] = {}  # reaches an output at all
    free: dict[str, bool] = {}  # reaches one by a path past no softmax logit slot
    for n in reversed(nodes):  # nodes are in forward (topological) order
        r = f = n.kind == "output"
        for user, slot in users.get(n.name, []):
            logit = user.kind == "attention" and slot < len(user.inputs) - 1
            r = r or reach.get(user.name, False)
            f = f or (not logit and free.get(user.name, False))
        reach[n.name], free[n.name] = r, f
    return {n.param for n in nodes if n.kind == "layer" and n.param and reach[n.name] and not free[n.name]}


def act_residual_ends(graph: ModelGraph) -> dict:
    """Weights of layers whose output reaches a residual add through shape-only ops and one
    activation, nothing learned between (CSPDarkNet's and DarkNet's blocks, conv-BN-act then
    the skip, once an exporter folds the BN): {weight: the activation}. With the weight zero
    (a zero last BN gamma folded in) the branch outputs act(b), a constant the skip path adds,
    so the block starts as the identity plus a shift, and each unit's gradient act'(b_i) g_i
    is its own wherever act'(b_i) != 0 (the caller checks that on the bias). Values are
    (the activation, the layer's bias name or None)."""

    users = _consumers(graph.nodes)
    out: dict[str, str] = {}
    for node in graph.nodes:
        if node.kind != "layer" or not node.param:
            continue
        acts = _following(node.name, users, _SHAPE_ONLY)
        if len(acts) != 1 or acts[0].kind != "act" or not acts[0].activation:
            continue
        after = _following(acts[0].name, users, _SHAPE_ONLY)
        if after and all(n.kind == "add" for n in after):
            out[node.param] = (acts[0].activation, node.bias)
    return out


def zero_act_residual_end(graph: ModelGraph, name: str) -> str | None:
    """The activation between weight ``name``'s layer and a residual add
    (:func:`act_residual_ends`), when its derivative at the layer's bias is non-zero on every
    unit: each unit of a zero layer then gets its own gradient (relu at b <= 0 passes none)."""
    act, bias = act_residual_ends(graph).get(name, (None, None))
    if act is None or bias is None:
        return None
    slopes = act_slopes(graph, act, bias)
    return str(getattr(act, "name", act)) if slopes is not None and bool((slopes > 1e-3).all()) else None


def act_slopes(graph: ModelGraph, act, bias: str | None, units: int = 0):
    """|act'(b_j)| for every unit j: the derivative of the activation at the constant a zero
    weight (or zero norm scale) leaves, its bias ``bias`` (zeros of ``units`` when there is
    none). A unit with act'(b_j) = 0 passes no gradient to the weight below:
    dL/dw_j = sum_n dL/da_nj act'(b_j) x_nj = 0. None when the activation is not known."""
    import torch

    from initaudit.schemes import activation_fn

    if bias is not None:
        b = graph.load_tensor(bias).detach().double().flatten()
    elif units > 0:
        b = torch.zeros(units, dtype=torch.float64)
    else:
        return None
    b.requires_grad_(True)
    try:
        activation_fn(act)(b).sum().backward()
    except (KeyError, TypeError, RuntimeError):
        return None
    return b.grad.abs()


def output_reach(nodes: list[Node]) -> dict[str, int]:
    """For each layer's weight, which of the model's returned values its output flows into (a
    bit mask, bit i: the i-th input of the ``output`` node; 0 where the graph has none). Layers
    with different masks take different shares of the probe's loss: L sums an error at every
    output, so the layers in front of a returned hidden state get its error directly and the
    heads behind it do not (YOLOS: the encoder 146-337 x the ratio of its class and box MLPs
    with ``last_hidden_state`` in the loss, 0.2-2.6 x without it)."""
    out = next((n for n in nodes if n.kind == "output"), None)
    if out is None:
        return {}
    bits: dict[str, int] = {}
    for i, name in enumerate(out.inputs):
        bits[name] = bits.get(name, 0) | (1 << i)
    users = _consumers(nodes)
    reach: dict[str, int] = {}
    for n in reversed(nodes):  # nodes are in forward (topological) order
        mask = bits.get(n.name, 0)
        for user in users.get(n.name, []):
            mask |= reach.get(user.name, 0)
        reach[n.name] = mask
    masks: dict[str, int] = {}
    for n in nodes:
        if n.param:
            masks[n.param] = masks.get(n.param, 0) | reach[n.name]
    return masks


def sandwich_ends(graph: ModelGraph) -> set[str]:
    """Weights whose output is normalised and then added to a residual stream, x + norm(f(x))
    (Gemma-2/3's and OLMo-2's post-branch norms): the last layers of a branch whose spread
    the norm resets before the skip path adds it, so a small stack inside shrinks nothing
    that goes on."""
    users = _consumers(graph.nodes)
    out: set[str] = set()
    for node in graph.nodes:
        if node.kind != "layer" or not node.param:
            continue
        after = _following(node.name, users, _SHAPE_OR_ACT)
        if after and all(n.kind == "norm" and any(m.kind == "add" for m in _behind_gains(
                _following(n.name, users, _SHAPE_ONLY), users)) for n in after):
            out.add(node.param)
    return out
