"""The one recogniser of activations and patterns, shared by every loader that sees primitive ops.

A loader that sees a model as primitive ops (the torch forward-pass recorder,
:mod:`initaudit.capture`; the ONNX loader) describes them as :class:`Prim` objects in a
:class:`PrimView`, with op names from one lowercase vocabulary (ONNX spellings: ``mul``,
``add``, ``div``, ``pow``, ``erf``, ``tanh``, ``sigmoid``, ``reducemean``, ``softmax``,
``matmul``, ``concat``, ``maxpool``...). :func:`find_patterns` collapses the written-out forms
into single :class:`Pattern` objects:

- GELU: ``x * 0.5 * (1 + erf(x / sqrt(2)))``; tanh GELU ("NewGELU")
  ``0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))`` (the inner ``x + 0.044715 x^3`` is
  part of the activation, not a residual add); quick GELU ``x * sigmoid(1.702 x)``;
- SiLU ``x * sigmoid(x)``, Mish ``x * tanh(softplus(x))``, hardswish ``x * hardsigmoid(x)``;
  hardsigmoid written out ``relu6(x + 3) / 6`` (relu6 also as ``hardtanh(., 0, 6)`` or ONNX
  ``Clip(., 0, 6)``) and hardswish ``x * relu6(x + 3) / 6``, as MobileNetV3 code writes them;
- LayerNorm ``(x - mean(x)) / sqrt(mean((x - mean(x))^2) + eps) * g + b`` and RMSNorm
  ``x / sqrt(mean(x^2) + eps) * g``; L2 normalisation ``x / ||x||`` (``x.norm(dim=-1,
  keepdim=True)``, ONNX ``ReduceL2``; an ``eps`` added or clamped in, as ``F.normalize``
  exports), CLIP's normalised embeddings;
- attention ``softmax(Q K^T * s + mask) V`` (with dropout, casts or tanh soft-capping in between,
  and the NaN guard ``where(isnan(w), 0, w)`` torch.onnx writes after a boolean-masked SDPA),
  and softmax weights from any other logits averaging V (``softmax(s) V``, ``V softmax(s)``).

:func:`op_kind` gives the :class:`~initaudit.graph.Node` kind of a single op that is not part of a
pattern: gated products ``act(gate(x)) * up(x)`` are ``mul`` nodes of two branches; a sum of two
branches that come from one signal through shape-only ops (rotary embeddings
``q cos + rotate(q) sin``) is not a residual add; ``concat``; pooling; an op nobody knows is
``unknown``, never silently passed through.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from initaudit.graph import Activation

# Elementwise ops a written-out activation or normalisation is made of.
ELEMENTWISE = {"add", "sub", "mul", "div", "pow", "sqrt", "rsqrt", "cast", "softplus", "neg"}
# Shape-only ops: the values pass on unchanged (views, copies, casts, dropout, padding, slicing).
SHAPE_OPS = {
    "reshape", "transpose", "flatten", "identity", "dropout", "cast", "castlike", "squeeze",
    "unsqueeze", "split", "slice", "expand", "pad", "resize", "upsample", "depthtospace",
    "spacetodepth", "quantizelinear", "dequantizelinear", "contiguous", "gather-slice", "roll",
    "flip", "tile", "neg", "clone", "unbind", "select", "movedim", "pixelshuffle", "where",
    "masked_fill", "repeat_interleave", "chunk",
}
MAX_POOL = {"maxpool", "globalmaxpool", "adaptivemaxpool", "lppool", "globallppool"}
AVG_POOL = {"averagepool", "globalaveragepool", "adaptiveaveragepool"}
# op -> activation name for single activation ops (ONNX and torch spellings alike)
ACT_OPS = {
    "relu": "relu", "relu6": "relu6", "sigmoid": "sigmoid", "tanh": "tanh", "selu": "selu",
    "elu": "elu", "celu": "celu", "gelu": "gelu", "fastgelu": "gelu", "biasgelu": "gelu",
    "quickgelu": "gelu", "hardsigmoid": "hardsigmoid", "hardswish": "hardswish",
    "softplus": "softplus", "softsign": "softsign", "mish": "mish", "swish": "silu", "silu": "silu",
    "hardtanh": "hardtanh", "leakyrelu": "leaky_relu", "leaky_relu": "leaky_relu", "prelu": "prelu",
    "logsigmoid": "logsigmoid", "tanhshrink": "tanhshrink", "sin": "sin",  # SIREN's periodic activation
}
_L2_CORES = ("reducel2", "sum", "reducesum", "reducesumsquare")  # ||x||, or the sum of x^2 under it
_CORES = ("erf", "tanh", "sigmoid", "hardsigmoid", "reducemean", "softmax", "relu6", "clip", "hardtanh",
          *_L2_CORES)
_RELU6 = ("relu6", "clip", "hardtanh")  # relu6(x) = min(max(x, 0), 6); the others with bounds (0, 6)
# between ||x|| and x / ||x||: an eps added or clamped in, casts, the broadcast back to x's shape
_NORM_GUARD = {"add", "clip", "clamp", "clamp_min", "max", "maximum", "cast", "expand"}
# ops between Q K^T and the softmax: scaling, masks, casts, and tanh soft-capping
# (cap * tanh(s / cap), Gemma-2): monotone, so the scores stay scores
_SCORE_PATH = {"add", "sub", "mul", "div", "where", "masked_fill", "cast", "dropout", "identity",
               "castlike", "reshape", "transpose", "expand", "contiguous", "tanh"}


@dataclass
class Prim:
    """One primitive op: ``op`` in the shared vocabulary, tensors named by the loader."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    source_op: str = ""  # as the source spells it (aten.mul / Mul / Tensor.__mul__)
    attrs: dict[str, Any] = field(default_factory=dict)


class PrimView:
    """Primitive ops in topological order with what a recogniser asks of their tensors.

    ``is_const(t)`` / ``is_signal(t)`` say whether a tensor is a constant (weights, buffers,
    literals) or carries the input signal; ``scalar(t)`` is a constant's value when it has one
    element; ``outputs`` are tensors that leave the graph; ``is_weight(t)`` says whether a
    constant is a stored tensor (default: a constant with more than one element).
    """

    def __init__(self, prims: list[Prim], is_const: Callable[[str], bool],
                 is_signal: Callable[[str], bool], scalar: Callable[[str], float | None],
                 outputs: set[str] = frozenset(), is_weight: Callable[[str], bool] | None = None):
        self.prims = prims
        self.is_const, self.is_signal, self.scalar = is_const, is_signal, scalar
        # a stored tensor (a norm's gamma or beta), not a literal
        self.is_weight = is_weight or (lambda t: is_const(t) and scalar(t) is None)
        self.outputs = set(outputs)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, p in enumerate(prims):
            for o in p.outputs:
                if o:
                    self.producer[o] = i
            for t in p.inputs:
                if t:
                    self.consumers.setdefault(t, []).append(i)

    def op(self, t: str) -> Prim | None:
        i = self.producer.get(t)
        return self.prims[i] if i is not None else None

    def sole_consumer(self, t: str) -> int | None:
        users = self.consumers.get(t, [])
        if len(set(users)) != 1 or t in self.outputs:
            return None
        return users[0]


@dataclass
class Pattern:
    kind: str  # "act" | "norm" | "attention"
    name: str  # name of the prim the pattern is named after
    root: str  # input tensor (the first one for attention)
    output: str  # output tensor
    members: set[int]  # prim indices absorbed
    activation: Activation | None = None
    op: str = ""
    scale: str | None = None  # tensor names of gamma / beta for a norm
    shift: str | None = None
    inputs: list[str] = field(default_factory=list)  # attention: q, k, v tensors
    attrs: dict[str, Any] = field(default_factory=dict)  # attention: "tokens" averaged over


def find_patterns(view: PrimView) -> dict[int, Pattern]:
    """Every pattern of the module docstring, keyed by each member prim's index."""
    found: dict[int, Pattern] = {}
    for i, p in enumerate(view.prims):
        if i in found or _core(p) not in _CORES:
            continue
        if p.op == "reducemean":
            pat = _norm_pattern(view, i)
        elif p.op in _L2_CORES:
            pat = _l2_norm_pattern(view, i)
        elif _core(p) in _RELU6:
            pat = _hard_pattern(view, i)
        elif p.op == "softmax":
            pat = _attention_pattern(view, i)
        else:
            pat = _act_pattern(view, i)
        if pat is not None and not any(m in found for m in pat.members):
            for m in pat.members:
                found[m] = pat
    return found


def _cone(view: PrimView, t: str, root: str, members: set[int], depth: int = 0) -> bool:
    """True when ``t`` is an elementwise function of ``root`` and constants only; collects the
    prims in between."""
    if t == root or view.is_const(t):
        return True
    i = view.producer.get(t)
    if i is None or depth > 8 or view.prims[i].op not in ELEMENTWISE:
        return False
    if i in members:
        return True
    members.add(i)
    return all(_cone(view, x, root, members, depth + 1) for x in view.prims[i].inputs if x)


def _internal_ok(view: PrimView, members: set[int], output: str) -> bool:
    """Every tensor made inside the pattern is used only inside it (except the output)."""
    for m in members:
        for o in view.prims[m].outputs:
            if not o or o == output:
                continue
            if o in view.outputs or any(u not in members for u in view.consumers.get(o, [])):
                return False
    return True


def _act_pattern(view: PrimView, ci: int) -> Pattern | None:
    core = view.prims[ci]
    if not core.inputs or not view.is_signal(core.inputs[0]):
        return None
    members = {ci}
    cur = core.outputs[0]
    added_one = False
    u = view.sole_consumer(cur)
    if u is not None and view.prims[u].op == "add" and core.op in ("erf", "tanh"):
        other = [x for x in view.prims[u].inputs if x != cur]
        if len(other) == 1 and view.scalar(other[0]) is not None:
            members.add(u)
            cur = view.prims[u].outputs[0]
            added_one = True
    root = None
    for _ in range(4):
        u = view.sole_consumer(cur)
        if u is None or view.prims[u].op not in ("mul", "div"):
            break
        un = view.prims[u]
        other = [x for x in un.inputs if x != cur]
        if len(other) != 1:
            break
        o = other[0]
        if view.is_const(o):
            pass
        elif root is None and un.op == "mul" and view.is_signal(o):
            root, extra = _multiplier_root(view, o, core.inputs[0])
            if root is None:
                break
            members |= extra
        else:
            break
        members.add(u)
        cur = un.outputs[0]
    if root is None:
        return None
    cone: set[int] = set()
    if not _cone(view, core.inputs[0], root, cone):
        return None
    members |= cone
    act = _which_activation(view, core.op, cone, added_one)
    if act is None or not _internal_ok(view, members, cur):
        return None
    return Pattern("act", core.name, root, cur, members, activation=act, op=f"{act.name}(decomposed)")


def _which_activation(view: PrimView, core: str, cone: set[int], added_one: bool) -> Activation | None:
    ops = {view.prims[m].op for m in cone}
    if core == "erf":
        return Activation("gelu") if added_one else None
    if core == "tanh":
        if "softplus" in ops:
            return Activation("mish")
        return Activation("gelu") if added_one and ("pow" in ops or "mul" in ops) else None
    if core == "sigmoid":
        scale = None
        for m in cone:
            if view.prims[m].op == "mul":
                vals = [view.scalar(x) for x in view.prims[m].inputs]
                scale = next((v for v in vals if v is not None), scale)
        return Activation("gelu") if scale is not None and abs(scale - 1.702) < 0.01 else Activation("silu")
    return Activation("hardswish")  # x * hardsigmoid(x)


def _multiplier_root(view: PrimView, o: str, core_in: str) -> tuple[str | None, set[int]]:
    """The x in x * f(x): ``o`` itself, or the input of a x*0.5 / x/2 feeding the product."""
    if _cone(view, core_in, o, set()):
        return o, set()
    pi = view.producer.get(o)
    if pi is not None and view.prims[pi].op in ("mul", "div"):
        pn = view.prims[pi]
        sig = [x for x in pn.inputs if view.is_signal(x)]
        consts = [x for x in pn.inputs if view.is_const(x)]
        if len(sig) == 1 and len(consts) == 1 and view.sole_consumer(o) is not None \
                and _cone(view, core_in, sig[0], set()):
            return sig[0], {pi}
    return None, set()


def _square_of(view: PrimView, t: str) -> str | None:
    p = view.op(t)
    if p is None:
        return None
    if p.op == "pow" and len(p.inputs) > 1 and view.scalar(p.inputs[1]) == 2.0:
        return p.inputs[0]
    if p.op == "mul" and len(p.inputs) == 2 and p.inputs[0] == p.inputs[1]:
        return p.inputs[0]
    return None


def _norm_pattern(view: PrimView, ri: int) -> Pattern | None:
    r2 = view.prims[ri]
    d = _square_of(view, r2.inputs[0]) if r2.inputs else None
    if d is None or not view.is_signal(d):
        return None
    members = {ri, view.producer[r2.inputs[0]]}
    # LayerNorm: d = x - mean(x); RMSNorm: d = x
    dn = view.op(d)
    root, op = d, "RMSNorm(decomposed)"
    if dn is not None and dn.op == "sub" and len(dn.inputs) == 2:
        mn = view.op(dn.inputs[1])
        if mn is not None and mn.op == "reducemean" and mn.inputs and mn.inputs[0] == dn.inputs[0]:
            root, op = dn.inputs[0], "LayerNorm(decomposed)"
            members |= {view.producer[d], view.producer[dn.inputs[1]]}
    # mean(d^2) -> (+eps) -> sqrt / pow(-0.5) / rsqrt / reciprocal -> d / s  or  d * r
    cur = r2.outputs[0]
    for _ in range(5):
        u = view.sole_consumer(cur)
        if u is None:
            return None
        un = view.prims[u]
        if un.op in ("add", "sqrt", "rsqrt", "reciprocal", "pow", "cast") and (
                un.op in ("sqrt", "rsqrt", "reciprocal", "cast") or any(view.is_const(x) for x in un.inputs)):
            members.add(u)
            cur = un.outputs[0]
            continue
        if un.op == "div" and len(un.inputs) == 2 and un.inputs[1] == cur and view.scalar(un.inputs[0]) is not None:
            members.add(u)  # 1 / sqrt(...): torch.rsqrt as the exporter writes it (Sqrt, then Div)
            cur = un.outputs[0]
            continue
        if un.op in ("div", "mul") and d in un.inputs and cur in un.inputs:
            members.add(u)
            cur = un.outputs[0]
            break
        return None
    else:
        return None
    scale = shift = None
    for want in ("mul", "add"):
        u = view.sole_consumer(cur)
        if u is not None and view.prims[u].op == "cast":
            members.add(u)
            cur = view.prims[u].outputs[0]
            u = view.sole_consumer(cur)
        if u is None or view.prims[u].op != want:
            continue
        other = [x for x in view.prims[u].inputs if x != cur]
        if len(other) == 1 and view.is_weight(other[0]):
            members.add(u)
            cur = view.prims[u].outputs[0]
            if want == "mul":
                scale = other[0]
            else:
                shift = other[0]
    if not _internal_ok(view, members, cur):
        return None
    name = view.prims[max(m for m in members if view.prims[m].op in ("div", "mul")
                          and d in view.prims[m].inputs)].name
    return Pattern("norm", name, root, cur, members, op=op, scale=scale, shift=shift)


def _core(p: Prim) -> str:
    """The op a recorded module stands for (``nn.ReLU6`` as relu6, ``nn.Dropout`` as dropout), else
    the prim's op."""
    return p.attrs.get("act", p.op) if p.op == "module" else p.op


def _is_relu6(view: PrimView, p: Prim) -> bool:
    bounds = [view.scalar(x) for x in p.inputs[1:] if x]
    op = _core(p)
    return op == "relu6" and not bounds or op in ("clip", "hardtanh") and bounds == [0.0, 6.0]


def _hard_pattern(view: PrimView, ci: int) -> Pattern | None:
    """hardsigmoid ``relu6(x + 3) / 6`` and hardswish ``x * relu6(x + 3) / 6`` (the product by
    x before or after the division), divided by 6 or multiplied by 1/6."""
    core = view.prims[ci]
    if not core.inputs or not _is_relu6(view, core):
        return None
    shift = view.op(core.inputs[0])
    if shift is None or shift.op != "add" or len(shift.inputs) != 2:
        return None
    root = next((x for x in shift.inputs if view.is_signal(x)), None)
    other = next((x for x in shift.inputs if x != root), None)
    if root is None or other is None or view.scalar(other) != 3.0 or view.sole_consumer(core.inputs[0]) is None:
        return None
    members, cur, sixth, by_x = {view.producer[core.inputs[0]], ci}, core.outputs[0], False, False
    for _ in range(2):
        u = view.sole_consumer(cur)
        if u is None or view.prims[u].op not in ("mul", "div"):
            break
        un = view.prims[u]
        rest = [x for x in un.inputs if x != cur]
        value = view.scalar(rest[0]) if len(rest) == 1 else None
        if not sixth and value is not None and abs((value if un.op == "div" else 1 / value if value else 0) - 6) < 1e-4:
            sixth = True
        elif not by_x and un.op == "mul" and rest == [root]:
            by_x = True
        else:
            break
        members.add(u)
        cur = un.outputs[0]
    if not sixth or not _internal_ok(view, members, cur):
        return None
    act = Activation("hardswish" if by_x else "hardsigmoid")
    return Pattern("act", core.name, root, cur, members, activation=act, op=f"{act.name}(decomposed)")


def _l2_norm_pattern(view: PrimView, ri: int) -> Pattern | None:
    """``x / ||x||`` over the feature axis: ``||x||`` as ReduceL2 (``x.norm()``) or as
    ``sqrt(sum(x^2))`` / ``pow(sum(x^2), 0.5)`` (CLIP's ``_get_vector_norm``), ``x *
    rsqrt(sum(x^2))``; an eps added or clamped in on the way."""
    r = view.prims[ri]
    if not r.inputs or not view.is_signal(r.inputs[0]):
        return None
    root, members, cur = r.inputs[0], {ri}, r.outputs[0]
    product = False  # x * rsqrt(.) rather than x / sqrt(.)
    if r.op in ("sum", "reducesum"):
        root = _square_of(view, r.inputs[0])
        if root is None or view.sole_consumer(r.inputs[0]) is None:
            return None
        members.add(view.producer[r.inputs[0]])
    for _ in range(3 if r.op != "reducel2" else 0):  # sum(x^2) (+ eps): the square root comes next
        u = view.sole_consumer(cur)
        if u is None:
            return None
        un = view.prims[u]
        members.add(u)
        cur = un.outputs[0]
        if un.op in ("sqrt", "rsqrt") or un.op == "pow" and len(un.inputs) > 1 and view.scalar(un.inputs[1]) == 0.5:
            product = un.op == "rsqrt"
            break
        if un.op not in _NORM_GUARD or any(view.is_signal(x) for x in un.inputs if x and x != un.inputs[0]):
            return None
    else:
        if r.op != "reducel2":
            return None
    for _ in range(4):
        u = view.sole_consumer(cur)
        if u is None:
            return None
        un = view.prims[u]
        operands = un.inputs[:2] == [root, cur] or (product and un.inputs[:2] == [cur, root])
        if un.op == ("mul" if product else "div") and operands:
            members.add(u)
            if not _internal_ok(view, members, un.outputs[0]):
                return None
            return Pattern("norm", un.name, root, un.outputs[0], members, op="L2Norm(decomposed)")
        if un.op == "reciprocal" or un.op == "div" and un.inputs[1:2] == [cur] and view.scalar(un.inputs[0]) == 1.0:
            product = not product  # rsqrt exported as Reciprocal(Sqrt(.)) or 1 / Sqrt(.)
        elif un.op not in _NORM_GUARD or any(view.is_signal(x) for x in un.inputs if x and x != cur):
            return None
        members.add(u)
        cur = un.outputs[0]
    return None


def _attention_pattern(view: PrimView, si: int) -> Pattern | None:
    """softmax(Q K^T * s + mask) V: back from the softmax through scaling, masking and casts to
    a product of two signals, forward through dropout and casts to the product with V.

    Logits that are no such product (a layer's output: ConvBERT's dynamic convolution kernels,
    attention pooling) still make softmax weights that average V: an attention node with inputs
    ``[logits, V]``. V may come first (``V @ softmax(s)``) when the softmax runs over the
    contracted axis (its size is the product's inner dimension)."""
    sm = view.prims[si]
    if not sm.inputs or not view.is_signal(sm.inputs[0]):
        return None
    members = {si}
    path = _scores_path(view, sm.inputs[0], 8)
    members |= set(path or ())
    cur = sm.outputs[0]
    for _ in range(4):
        guard = _nan_guard(view, cur)
        if guard is not None:  # where(isnan(w), 0, w): values pass on unchanged
            members |= set(guard)
            cur = view.prims[guard[-1]].outputs[0]
            continue
        u = view.sole_consumer(cur)
        if u is None:
            return None
        p = view.prims[u]
        if p.op == "matmul" and len(p.inputs) > 1:
            v = _averaged(view, p, cur, sm.attrs.get("tokens"))
            if v is None:
                return None
            members.add(u)
            out = p.outputs[0]
            if not _internal_ok(view, members, out):
                return None
            attrs = {key: val for key, val in sm.attrs.items() if key == "tokens"}
            if path is None:
                return Pattern("attention", sm.name, sm.inputs[0], out, members, op="attention(weights)",
                               inputs=[sm.inputs[0], v], attrs=attrs)
            scores = view.prims[path[-1]]
            q, k = (x for x in scores.inputs[:2])
            if scores.attrs.get("contract"):  # QK^T's scale relative to 1/sqrt(d), as written
                attrs["logit_scale"] = _path_scale(view, path[:-1]) * scores.attrs["contract"] ** 0.5
            return Pattern("attention", sm.name, q, out, members, op="attention(decomposed)",
                           inputs=[q, k, v], attrs=attrs)
        if _core(p) not in ("dropout", "cast", "castlike", "identity"):
            return None
        members.add(u)
        cur = p.outputs[0]
    return None


def _averaged(view: PrimView, mm: Prim, weights: str, tokens: int | None) -> str | None:
    """The signal a product with softmax ``weights`` averages: ``weights @ V``, or ``V @ weights``
    where the softmax ran over the contracted axis (its size is V's last dimension)."""
    a, b = mm.inputs[:2]
    if a == weights and b and view.is_signal(b):
        return b
    if b == weights and a and view.is_signal(a) and tokens and mm.attrs.get("contract") == tokens:
        return a
    return None


def _nan_guard(view: PrimView, t: str) -> list[int] | None:
    """``where(isnan(t), c, t)``: the guard torch.onnx writes after the softmax of
    scaled_dot_product_attention with a boolean mask (a fully masked row is 0/0). ``t`` passes
    on unchanged wherever it is a number; the indices of (isnan, where), or None."""
    users = list(dict.fromkeys(view.consumers.get(t, [])))
    if len(users) != 2 or t in view.outputs:
        return None
    ops = {view.prims[u].op: u for u in users}
    if set(ops) != {"isnan", "where"}:
        return None
    isnan, where = view.prims[ops["isnan"]], view.prims[ops["where"]]
    if len(where.inputs) != 3 or where.inputs[0] != isnan.outputs[0] or where.inputs[2] != t \
            or view.sole_consumer(isnan.outputs[0]) != ops["where"]:
        return None
    return [ops["isnan"], ops["where"]]


def _path_scale(view: PrimView, path: list[int]) -> float:
    """The product of the constant factors along the scores' path (``* s``, ``/ sqrt(d)``); a
    mask added on the way is no factor."""
    scale = 1.0
    for i in path:
        p = view.prims[i]
        consts = [view.scalar(x) for x in p.inputs[1:] if x and view.is_const(x)] if p.op == "div" else \
            [view.scalar(x) for x in p.inputs if x and view.is_const(x)] if p.op == "mul" else []
        for c in consts:
            if c:
                scale *= 1.0 / c if p.op == "div" else c
    return scale


def _scores_path(view: PrimView, t: str, budget: int) -> list[int] | None:
    """The prims from ``t`` back to the product of two signals Q K^T, through scaling, masking
    and casts. A mask computed from a graph input (an exported ``attention_mask``: Where, Cast,
    Sub, Mul) is a signal too, so at a sum or select of several signals each one is tried: the
    scores are the one that leads back to the product."""
    i = view.producer.get(t)
    if i is None or budget <= 0:
        return None
    p = view.prims[i]
    sig = [x for x in p.inputs if x and view.is_signal(x)]
    if p.op == "matmul" and len(sig) == 2:
        return [i]
    if _core(p) not in _SCORE_PATH or not sig:
        return None
    for x in dict.fromkeys(sig):
        rest = _scores_path(view, x, budget - 1)
        if rest is not None:
            return [i, *rest]
    return None


def op_kind(op: str, signal_roots: list[str]) -> str:
    """Node kind of one op outside any pattern, from its op and the distinct upstream sources
    (``signal_roots``: the nearest non-shape-only node behind each signal input)."""
    distinct = len(dict.fromkeys(signal_roots))
    if op in SHAPE_OPS:
        return "transparent"
    if op in ("add", "sub", "sum"):
        return "add" if distinct >= 2 else "transparent"
    if op == "mul":
        return "mul" if distinct >= 2 else ("unknown" if len(signal_roots) >= 2 else "mul")
    if op == "div":
        return "unknown" if len(signal_roots) >= 2 else "mul"
    if op in ("concat", "stack"):
        return "cat" if distinct >= 2 else "transparent"
    if op in MAX_POOL:
        return "pool-max"
    if op in AVG_POOL or op == "reducemean":
        return "pool-avg"
    if op in ACT_OPS:
        return "act"
    return "unknown"
