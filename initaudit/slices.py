"""A layer whose output is cut into slices that feed different functions (Mamba-2's fused
``in_proj``: z to a gated norm, x/B/C to a convolution, dt to ``softplus``): no one activation
follows all its rows, so none is the layer's."""

from __future__ import annotations

from collections.abc import Callable

# Ops that cut a tensor into parts (torch and ONNX spellings).
_SLICING = frozenset({"split", "chunk", "unbind", "tensor_split", "split_with_sizes", "narrow", "getitem",
                      "slice", "select"})


def _function(node) -> str:
    return node.activation.name if node.kind == "act" and node.activation else node.kind


def split_functions(start: str, users: dict, following: Callable[[str], list]) -> tuple[str, ...]:
    """What the slices of ``start``'s output feed first (an activation's name or a node kind),
    where shape-only ops lead it to slicing ops (``split``/``chunk``, ONNX ``Split``/``Slice``)
    whose slices feed different functions, one of them an activation; () otherwise.
    ``following(name)``: the first non-shape-only consumers of ``name``."""
    cuts, stack, seen = [], [start], {start}
    while stack:
        for user in users.get(stack.pop(), []):
            if user.kind != "transparent" or user.name in seen:
                continue
            seen.add(user.name)
            if user.op_word in _SLICING:
                cuts.append(user)
            else:
                stack.append(user.name)
    if not cuts:
        return ()
    starts = [u for cut in cuts for u in users.get(cut.name, [])] if len(cuts) == 1 else cuts
    functions = set()
    for s in starts:
        functions.update(_function(n) for n in ([s] if s.kind != "transparent" else following(s.name)))
    acts = functions - {"layer", "norm", "add", "mul", "cat", "attention", "unknown", "output",
                        "embedding", "pool-max", "pool-avg", "other", "transparent"}
    return tuple(sorted(functions)) if len(functions) > 1 and acts else ()
