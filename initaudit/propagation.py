"""Static (mean-field) prediction of signal spread through depth, before any forward pass.

For a layer with weights W (fan_in inputs) after an activation phi, the second moment of the
pre-activation is

    q_l = fan_in * E[W_l^2] * E[phi(h_{l-1})^2] + E[b_l^2],    h_{l-1} ~ N(0, q_{l-1})

where E[phi(h)^2] is computed by Gauss-Hermite quadrature for the actual activation. A
normalisation layer resets q to E[gamma^2] + E[beta^2]; a residual Add sums the branch moments;
shape-only ops pass q through. Inputs are assumed standardised (q_0 = 1); an embedding starts
with its own table's second moment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from initaudit.analysis import TensorStats
from initaudit.graph import ModelGraph, OpKind, ParamRole
from initaudit.schemes import second_moment


@dataclass
class LayerSignal:
    param: str
    layer: str
    predicted_std: float  # std of this layer's pre-activation output
    ratio: float  # predicted_std / std where the segment started (input, embedding or norm)
    depth: int  # weight layers since the segment started
    origin: str  # where the segment started


@dataclass
class _State:
    m2: float
    origin_m2: float
    depth: int
    origin: str


def predict(graph: ModelGraph, stats: Callable[[str], TensorStats]) -> list[LayerSignal]:
    """Predicted pre-activation std of each weight layer, in forward order."""
    state: dict[str, _State] = {}
    profile: list[LayerSignal] = []

    def moment(name: str | None) -> float:
        if not name or name not in graph.params:
            return 0.0
        s = stats(name)
        return s.std**2 + s.mean**2 if math.isfinite(s.std) else math.inf

    for node in graph.nodes:
        ins = [state[i] for i in node.inputs if i in state]
        first = ins[0] if ins else _State(1.0, 1.0, 0, "input")
        if node.kind == "input":
            state[node.name] = _State(1.0, 1.0, 0, "input")
        elif node.param and node.param not in graph.params:  # not analysable (e.g. not in checkpoint)
            state[node.name] = first
        elif node.kind == "embedding" and node.param:
            m2 = moment(node.param)
            state[node.name] = _State(m2, m2, 0, node.name)
        elif node.kind == "layer" and node.param:
            p = graph.params[node.param]
            if p.kind in (OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN) or not p.fan_in:
                state[node.name] = first
                continue
            m2 = p.fan_in * moment(node.param) * first.m2 + moment(node.bias)
            st = _State(m2, first.origin_m2, first.depth + 1, first.origin)
            state[node.name] = st
            ratio = math.sqrt(m2 / st.origin_m2) if st.origin_m2 > 0 and math.isfinite(m2) else (
                math.inf if m2 > 0 else 0.0)
            profile.append(LayerSignal(node.param, p.layer, math.sqrt(m2) if math.isfinite(m2) else math.inf,
                                       ratio, st.depth, st.origin))
        elif node.kind == "act" and node.activation:
            try:
                m2 = second_moment(node.activation, first.m2) if math.isfinite(first.m2) else math.inf
            except KeyError:  # an activation we cannot integrate: pass through
                m2 = first.m2
            state[node.name] = _State(m2, first.origin_m2, first.depth, first.origin)
        elif node.kind == "norm":
            roles = {n: graph.params[n].role for n in node.norm_params if n in graph.params}
            scale = [n for n, r in roles.items() if r is ParamRole.NORM_SCALE]
            shift = [n for n, r in roles.items() if r is ParamRole.NORM_SHIFT]
            m2 = (moment(scale[0]) if scale else 1.0) + (moment(shift[0]) if shift else 0.0)
            state[node.name] = _State(m2, m2, 0, node.name)
        elif node.kind == "add" and ins:
            # The dominant path (usually the skip connection) carries the segment on.
            main = max(ins, key=lambda s: s.m2)
            state[node.name] = _State(sum(s.m2 for s in ins), main.origin_m2, main.depth, main.origin)
        else:
            state[node.name] = first
    return profile
