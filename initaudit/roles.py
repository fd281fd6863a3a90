"""Tensors a loader placed as weights that are not weights of a layer, told apart by what they
are (format-neutral, after loading): buffers, fixed sinusoidal tables (recognised from their
values), weight-norm magnitudes and directions, and broadcast additive parameters
(class/distillation tokens, learned position tables).

Rules judge ``Param.is_weight`` tensors as a layer's weights (init scale, mean shift,
constant values); these are not: a buffer is never trained, a weight-norm magnitude is one
positive scale per unit (w = g * v / |v|), and a token or position table is *added* to the
signal, so zeros there are a neutral start that receives its own gradient, not a dead layer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from initaudit.graph import ModelGraph, OpKind, Param, ParamRole, off_dataflow

# torch.nn.utils.parametrizations.weight_norm stores g as original0 and v as original1;
# the older torch.nn.utils.weight_norm as weight_g / weight_v.
_WN_MAGNITUDE = re.compile(r"(\.parametrizations\.[^.]+\.original0|_g)$")
_WN_DIRECTION = re.compile(r"(\.parametrizations\.[^.]+\.original1|_v)$")


def _partner(name: str, graph: ModelGraph) -> str | None:
    if name.endswith("original0"):
        return name[: -len("0")] + "1"
    if name.endswith("_g"):
        return name[: -len("_g")] + "_v"
    return None


def is_broadcast_additive(p: Param) -> bool:
    """A parameter of no known layer type shaped (1, ..., D) with >= 3 dims: a class or
    distillation token (1, 1, D), a position table (1, N, D). No layer stores a weight with
    one output unit and a third dimension of that size by accident."""
    return p.kind is OpKind.OTHER and len(p.shape) >= 3 and p.shape[0] == 1


def is_channel_vector(p: Param) -> bool:
    """A parameter of no known layer type with two or more dims of which at most one is longer
    than 1: (H, 1, 1) attention temperatures and logit scales, (1, D) mask tokens, (1, 1, 1, C)
    GRN gains. One value per channel or head, multiplied or added elementwise: no unit mixes
    inputs through it, so equal values make no copies of units (1-D ones are norm or gain
    vectors already). Also such a vector registered on a convolution or linear module beside
    its ``weight`` (NF-ResNet's ScaledStdConv2d gain)."""
    if len(p.shape) < 2 or sum(d > 1 for d in p.shape) > 1:
        return False
    # a layer's own extra vector (ScaledStdConv2d's (C, 1, 1, 1) gain beside its weight) too
    return p.kind is OpKind.OTHER or (p.kind in (OpKind.CONV, OpKind.LINEAR)
                                      and p.name.rsplit(".", 1)[-1] not in ("weight", "bias"))


def _stack_candidate(p: Param) -> bool:
    """A 3-D weight of no known layer type (a live module's own parameter), or one a bare
    checkpoint read as a convolution only from its shape although its name is not a conv
    module's ``weight`` (``gate_up_proj``, ``down_proj``, ``w1``)."""
    if not p.is_weight or len(p.shape) != 3 or p.shape[0] < 2:
        return False
    return p.kind is OpKind.OTHER or (p.kind is OpKind.CONV and p.op == "conv"
                                      and "weight" not in p.name.rsplit(".", 1)[-1])


def _chain_layout(a: tuple[int, ...], b: tuple[int, ...]) -> str | None:
    """How two per-expert matrices a, b (the stored (d1, d2) of each) chain as x -> A -> B
    back to the width x came in: "out-in" where each stores (out, in) (F.linear; Mixtral,
    Qwen-MoE, OLMoE), "in-out" where each stores (in, out) (x @ W; GPT-OSS). A's output may
    feed B whole or halved (a gated unit: gate and up stacked in one tensor)."""
    def chains(width_in, mid_out, mid_in, width_out):
        return width_in == width_out and mid_in in (mid_out, mid_out / 2)
    if chains(a[1], a[0], b[1], b[0]):
        return "out-in"
    if chains(a[0], a[1], b[0], b[1]):
        return "in-out"
    return None


def read_expert_stacks(graph: ModelGraph) -> None:
    """Give mixture-of-experts weights stored as one 3-D parameter (E, d1, d2) per projection
    the fans of a stack of E linear maps: fan_in = in, fan_out = out of one expert (torch's
    shape rule reads them as a Conv1d, fan_in = d1 * d2). The layout comes from the pair of
    stacks of one expert MLP (in one module): they must chain from the model width back to
    it, which tells (E, out, in) from (E, in, out) wherever the widths differ or a gate is
    stacked with its up projection; (E, out, in), F.linear's, where both read alike. A lone
    3-D parameter is left as it is (it may be anything)."""
    owners: dict[str, list[Param]] = {}
    for p in graph.params.values():
        if _stack_candidate(p):
            owners.setdefault(p.layer, []).append(p)
    for stacks in owners.values():
        for p in stacks:
            layouts = set()
            for q in stacks:
                if q is p or q.shape[0] != p.shape[0]:
                    continue
                first, second = _chain_layout(p.shape[1:], q.shape[1:]), _chain_layout(q.shape[1:], p.shape[1:])
                layouts |= {x for x in (first, second) if x}
            if not layouts:
                continue
            layout = "in-out" if layouts == {"in-out"} else "out-in"
            units, inputs = (1, 2) if layout == "out-in" else (2, 1)
            p.kind, p.units_dim = OpKind.LINEAR, units
            p.fan_in, p.fan_out = p.shape[inputs], p.shape[units]
            p.notes = [n for n in p.notes if "fans read from the shape" not in n
                       and "read as a convolution" not in n]
            stored = "E, out, in" if units == 1 else "E, in, out"
            p.notes.append(f"a stack of {p.shape[0]} expert matrices stored ({stored}), read from how it chains "
                           f"with the other stack of its module: fans of one expert, fan_in={p.fan_in}, "
                           f"fan_out={p.fan_out}")

if TYPE_CHECKING:
    import torch

_TABLE_MAX_NUMEL = 1 << 22  # tables read whole for the check (16 MB in fp32); larger ones are judged


def is_sinusoidal_table(t: "torch.Tensor") -> bool:
    """A fixed table of sinusoids of the row index: every column c is sin(p w_c + phi_c) over the
    rows p (Transformer/Marian/Pegasus/Speech2Text position tables, rotary cos/sin caches), so
    x[p-1] + x[p+1] = 2 cos(w_c) x[p] holds in every column, with |x| <= 1. A learned table
    (N(0, 1), N(0, 0.02), trained) satisfies no such recurrence. A few rows may break it (a
    padding row set to zero breaks the three equations around it); at least a fifth of the
    columns must oscillate (span >= 0.5), so a constant or zero table is not one."""
    import torch  # here: commands that touch no model never import torch

    if t.dim() != 2 or t.shape[0] < 16 or t.shape[1] < 4 or t.numel() > _TABLE_MAX_NUMEL \
            or not t.is_floating_point():
        return False
    tol = max(2e-3, 4 * torch.finfo(t.dtype).eps)  # the stored precision's rounding (bf16: 0.03)
    t = t.detach()
    if not torch.isfinite(t).all() or float(t.abs().max()) > 1.0 + 1e-3:  # cheap rejections first
        return False
    span = t.amax(dim=0).float() - t.amin(dim=0).float()
    if float((span >= 0.5).float().mean()) < 0.2:
        return False
    x = t.to(torch.float64)
    mid, ends = x[1:-1], x[:-2] + x[2:]
    # 2 cos(w_c) per column: the median ratio (robust to a zeroed row), then least squares on
    # the rows that fit it; columns too flat for a ratio are lines (w ~ 0: k = 2)
    ratio = torch.where(mid.abs() > 1e-2, ends / mid.where(mid.abs() > 1e-2, torch.ones_like(mid)),
                        torch.full_like(mid, float("nan")))
    k = ratio.nanmedian(dim=0).values.nan_to_num(2.0)
    for _ in range(2):
        inliers = (ends - k * mid).abs() <= tol
        w = inliers.to(torch.float64)
        fit = (w * ends * mid).sum(0) / (w * mid * mid).sum(0).clamp_min(1e-12)
        k = torch.where((w * mid * mid).sum(0) > 1e-6, fit, k)
    return float(((ends - k * mid).abs() <= tol).double().mean()) >= 0.9


def refine_roles(graph: ModelGraph) -> None:
    """Re-role the tensors above (each gets a note saying why); read 3-D expert stacks."""
    read_expert_stacks(graph)
    buffers: set[str] = set()
    if graph.module is not None:
        buffers = {n for n, _ in graph.module.named_buffers()}
    for p in graph.params.values():
        if not p.is_weight:
            continue
        if p.name in buffers:
            p.role = ParamRole.OTHER
            p.notes.append("a buffer (a mask, a fixed position table or other state): never trained, "
                           "not judged as a weight")
        elif p.kind in (OpKind.EMBEDDING, OpKind.OTHER) and len(p.shape) == 2 \
                and 16 <= p.shape[0] and p.numel <= _TABLE_MAX_NUMEL \
                and is_sinusoidal_table(graph.load_tensor(p.name)):
            p.role = ParamRole.OTHER
            p.notes.append("a fixed sinusoidal table (every column a sin/cos of the row index: positions "
                           "times a frequency): computed, not learned; not judged as a weight")
        elif _WN_MAGNITUDE.search(p.name) and _partner(p.name, graph) in graph.params:
            p.role = ParamRole.OTHER
            p.notes.append("weight-norm magnitude g (w = g * v / |v|): one positive scale per unit, "
                           "not judged as a weight")
        elif _WN_DIRECTION.search(p.name) and any(
                _partner(q, graph) == p.name for q in graph.params):
            p.normalized_after = True
            p.notes.append("weight-norm direction v (w = g * v / |v|): its scale is divided away")
        elif is_broadcast_additive(p):
            p.role = ParamRole.OTHER
            p.kind = OpKind.OTHER
            p.notes.append("broadcast additive parameter (a class token or position table, shape "
                           f"{list(p.shape)}): added to the signal, so zeros are a neutral start")
        elif is_channel_vector(p):
            p.role = ParamRole.OTHER
            p.notes.append(f"a per-channel vector (shape {list(p.shape)}: a gain, temperature or "
                           "token), not a layer's weight matrix: constant values are a start by design")


def mark_unapplied(graph: ModelGraph) -> None:
    """Re-role the weights of no known layer type that the recorded forward pass applies as no
    layer: the model uses them elementwise or builds them into something else (Mamba's
    ``A = -exp(A_log)``, a per-channel decay or gain), so their rows are not units computing
    features of one input, and identical rows (S4D's A_log = log(1..N) in every channel) or a
    positive mean are their design. Called on a dataflow recorded from a real forward pass."""
    # applied by an op nothing models (grouped_mm, multi_head_attention_forward): weights whose
    # activation is unknown, not parameters used elementwise
    by_unknown = {n for node in graph.nodes for n in node.attrs.get("params", ())}
    for name in off_dataflow(graph) - by_unknown:
        p = graph.params[name]
        if p.kind is OpKind.OTHER:
            p.role = ParamRole.OTHER
            p.notes.append("a parameter the recorded forward pass applies as no layer (used elementwise "
                           "or transformed first): its rows are not units, not judged as a weight")


def renormalised_params(graph: ModelGraph) -> set[str]:
    """Weights whose signal segment (from the input, an embedding or a normalisation node)
    passes a layer the graph marks ``normalized_after`` with no normalisation node after it:
    a BatchNorm the exporter folded into the layer (eval-mode ONNX export). In training the
    batch statistics renormalise the signal there, so depth measured or predicted across it
    on fresh running statistics (var 1, mean 0: identity) says nothing about training."""
    params = graph.params
    normalised = {i for node in graph.nodes if node.kind == "norm" for i in node.inputs}
    flagged: dict[str, bool] = {}
    out: set[str] = set()
    for node in graph.nodes:  # topological order
        if node.kind in ("input", "embedding", "norm"):
            flagged[node.name] = False
            continue
        upstream = any(flagged.get(i, False) for i in node.inputs)
        # a layer a norm node reads is renormalised there in the graph itself: nothing was folded
        own = (node.kind == "layer" and node.param in params and params[node.param].normalized_after
               and node.name not in normalised)
        if node.kind == "layer" and node.param and (upstream or own):
            out.add(node.param)
        flagged[node.name] = upstream or own
    return out
