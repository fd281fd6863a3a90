"""The format-neutral model description every analysis, rule and reporter works on.

Loaders (one per format) build a :class:`ModelGraph`: the weight tensors with their roles and
true fans (:class:`Param`), and, where the architecture is known, a small dataflow graph of
:class:`Node` objects from which :func:`annotate` derives what follows each weight (activation,
normalisation, residual add, graph output). Nothing here knows about files or rules.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any

from initaudit.slices import split_functions

if TYPE_CHECKING:  # torch loads only when a model does: `initaudit --version` stays fast
    import torch


class OpKind(str, Enum):
    """What a weight tensor does in its op; decides how fans and rows are read."""

    LINEAR = "linear"
    CONV = "conv"
    CONV_TRANSPOSE = "conv-transpose"
    EMBEDDING = "embedding"
    RECURRENT_INPUT = "recurrent-input"
    RECURRENT_HIDDEN = "recurrent-hidden"
    ATTENTION = "attention"  # fused input projection of an attention block (Q, K, V stacked)
    NORM = "norm"
    OTHER = "other"


class ParamRole(str, Enum):
    WEIGHT = "weight"
    BIAS = "bias"
    NORM_SCALE = "norm-scale"
    NORM_SHIFT = "norm-shift"
    RUNNING_MEAN = "running-mean"
    RUNNING_VAR = "running-var"
    OTHER = "other"


@dataclass(frozen=True)
class Activation:
    """An elementwise activation; ``param`` is e.g. the negative slope of leaky_relu."""

    name: str
    param: float | None = None

    def __str__(self) -> str:
        return self.name if self.param is None else f"{self.name}({self.param:g})"


@dataclass
class Param:
    """One stored tensor and what the model does with it."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    layer: str  # module or graph-node name that owns the tensor
    op: str  # op type as the format spells it: "Linear", "Conv2d", "Gemm", "LSTM"
    kind: OpKind
    role: ParamRole
    fan_in: int | None = None  # true fans from the op's semantics
    fan_out: int | None = None
    # Fans torch.nn.init's shape-only rule would compute for this tensor; differ from the true fans
    # for tensors stored (in, out): ConvTranspose, ONNX MatMul, Hugging Face Conv1D.
    init_fan_in: int | None = None
    init_fan_out: int | None = None
    gates: tuple[str, ...] = ()  # per-gate row blocks (LSTM i,f,g,o; GRU r,z,n); empty = one block
    units_dim: int = 0  # dimension that indexes output units (1 when stored (in, out))
    # A grouped convolution's groups (see group_fan_out); the reported fan_out follows torch's
    # rule (DESIGN §5), which init functions also read.
    groups: int = 1
    activation: Activation | None = None
    activation_source: str | None = None  # "fx", "module-order", "onnx", "name"
    # The op that follows when it is one nobody models (a custom ONNX domain's op, an unknown
    # function): the activation is then unknown, not "none".
    follows_unknown: str | None = None
    # What the slices of its output feed when they feed different functions (an activation on
    # some rows only: Mamba-2's in_proj, initaudit.slices): the activation is then unknown.
    split_functions: tuple[str, ...] = ()
    normalized_after: bool = False
    residual_end: bool = False
    is_output: bool = False
    # Its output reaches nothing but output layers (through activations, dropout, pooling and
    # shape ops; no normalisation, no other layer): a shrink there only scales the initial
    # logits, as a small head does (:func:`annotate`).
    feeds_head: bool = False
    # The value a gate of a trunk takes when this layer outputs 0 (``x * exp(tanh(f(x)))``: 1.0),
    # when every path from the layer ends in such a gate, a residual sum or an output
    # (:func:`gate_starts`); None otherwise.
    gate_start: float | None = None
    # The factor the layer's own forward multiplies this weight by (NTK parametrisation,
    # equalised learning rate), measured from the recorded forward pass: the signal sees
    # runtime_scale * the stored spread (initaudit.runtime_scale). 1.0 when stored as applied.
    runtime_scale: float = 1.0
    # The per-output-row map the layer's forward applies to this weight, w'_c = a_c w_c + b_c
    # (weight standardisation: NFNet's ScaledStdConv2d, BiT's StdConv2d), measured from the
    # weight it passes to its conv/linear in the recorded forward pass (a
    # initaudit.runtime_scale.RowMap); None when stored as applied or one factor says it.
    runtime_rows: Any = None
    # The part of runtime_scale applied after the layer, a constant between it and its activation
    # (SIREN's sin(w0 * x), initaudit.runtime_scale.fold_preactivation_scales): the probe measures
    # the layer's own output, before it, and scales its measurement by it to compare.
    output_scale: float = 1.0
    # What sets the applied spread whatever the stored values are ("spectral normalisation":
    # W / sigma_max(W)); None where the initialisation does.
    scale_set_by: str | None = None
    aliases: list[str] = field(default_factory=list)  # tied names for the same tensor
    notes: list[str] = field(default_factory=list)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def group_fan_out(self) -> float | None:
        """The outputs one input reaches, the fan_out a scheme's spread (Xavier) balances: an
        input channel of a grouped convolution feeds only its group's out / groups channels."""
        return self.fan_out / self.groups if self.fan_out else self.fan_out

    @property
    def is_weight(self) -> bool:
        return self.role is ParamRole.WEIGHT


@dataclass
class Node:
    """One step of the dataflow used to place weights and to predict signal spread.

    ``kind`` is one of:

    - ``input``, ``output``;
    - ``layer`` (applies ``param``, optional ``bias``), ``embedding``;
    - ``act`` (elementwise ``activation``), ``norm`` (``norm_params``);
    - ``add``: a residual sum of signal branches (not ``x + 0.044715 x^3`` inside a written-out
      GELU); the sum of weight outputs inside one recurrent cell, ``x W_ih + h W_hh``, is an
      ``add`` with ``attrs["residual"] = False`` (:func:`is_cell_sum`);
    - ``mul``: an elementwise product of signal branches (gated units ``act(gate(x)) * up(x)``,
      GLU), or of the signal and a parameter (``param``: LayerScale, ``x * (1 + w)`` norms) or a
      constant (``attrs["scale"]``);
    - ``cat``: concatenation of branches along the feature or channel axis;
    - ``pool-max`` / ``pool-avg``: max or average pooling over ``attrs["window"]`` elements
      (global pooling: the whole spatial extent, when known);
    - ``attention``: ``softmax(Q K^T / sqrt(d)) V`` with inputs ``[q, k, v]``, or softmax
      weights from other logits ``softmax(s) V`` with inputs ``[s, v]``; the output averages v
      (the last input) over ``attrs["tokens"]`` positions when known;
    - ``transparent``: shape-only ops, bias adds, dropout: the signal passes unchanged;
    - ``unknown``: an op nothing recognises; the signal after it is unknown (never silently
      passed through);
    - ``other``: a known op with no effect the analyses model (kept for older loaders).

    ``op`` is the op as the source spells it (``aten.mul.Tensor``, ``MaxPool``) for reports.
    """

    name: str
    kind: str
    inputs: list[str] = field(default_factory=list)
    param: str | None = None
    bias: str | None = None
    activation: Activation | None = None
    norm_params: tuple[str, ...] = ()  # scale/shift params of a norm node
    op: str | None = None
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def op_word(self) -> str:
        """The op's plain lower-case name, whatever the source's spelling: ``einsum`` for
        ``einsum``, ``bmm`` for ``aten.bmm.default``, ``softmax`` for ONNX's ``Softmax``."""
        parts = [w for w in str(self.op or "").lower().split(".") if w and w != "aten"]
        return parts[0] if parts else ""


TensorLoader = Callable[[str], "torch.Tensor"]


def torch_shape_fans(shape: tuple[int, ...]) -> tuple[int | None, int | None]:
    """Fans as torch.nn.init computes them (_calculate_fan_in_and_fan_out), from the shape only:
    fan_in = shape[1] * prod(shape[2:]), fan_out = shape[0] * prod(shape[2:])."""
    if len(shape) < 2:
        return None, None
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


@dataclass
class ModelGraph:
    """Everything a loader could learn about a model, independent of its file format."""

    target: str
    format: str  # onnx | torch-module | state-dict | safetensors | torchscript | exported-program
    params: dict[str, Param]
    load_tensor: TensorLoader
    nodes: list[Node] = field(default_factory=list)
    # Parts that could not be analysed: (name, reason). Reported, never silently dropped.
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be determined, and why
    stage_evidence: list[str] = field(default_factory=list)  # evidence that weights were trained
    module: torch.nn.Module | None = None  # set when a live module is available (for the probe)
    family: str | None = None  # "transformer" when the model follows GPT-2/BERT/ViT conventions
    # How ``nodes`` were found: "fx", "trace" (recorded from a real forward pass), "onnx",
    # "module-order" (a guessed chain in registration order: depth rules stay at info), or None
    # when there is no architecture.
    capture: str | None = None
    source_path: str | None = None  # file audited (for SARIF locations), if any
    # Every file the loader read (model, shards, external data, factory source): initaudit
    # never writes a report over any of them.
    files_read: set[str] = field(default_factory=set)
    # Why code from the target ran while it was loaded (``--unsafe-pickle`` on a pickle the
    # allow-list refused); None when nothing from the file was executed.
    code_ran: str | None = None
    # How another process reopens tensors of this graph (initaudit.loaders.shards.TensorSource:
    # safetensors files, zip .pt records, distributed checkpoints): what lets initaudit.pool
    # analyse them in worker processes; None when the tensors live in this process only.
    tensor_source: Any = None

    def weights(self) -> Iterator[Param]:
        return (p for p in self.params.values() if p.is_weight)

    @property
    def parameter_count(self) -> int:
        return sum(p.numel for p in self.params.values()
                   if p.role not in (ParamRole.RUNNING_MEAN, ParamRole.RUNNING_VAR))

    @property
    def has_architecture(self) -> bool:
        return bool(self.nodes)


def _consumers(nodes: Iterable[Node]) -> dict[str, list[Node]]:
    users: dict[str, list[Node]] = {}
    for node in nodes:
        for inp in node.inputs:
            users.setdefault(inp, []).append(node)
    return users


def is_cell_sum(node: Node) -> bool:
    """A sum of weight outputs inside one recurrent cell (``x W_ih + h W_hh``), not a residual:
    the variances add, but no branch ends there, and what follows is seen through it."""
    return node.kind == "add" and node.attrs.get("residual") is False


def _following(start: str, users: dict[str, list[Node]], through: frozenset[str]) -> list[Node]:
    """First consumers reached from ``start`` whose kind is not in ``through``."""
    found, stack, seen = [], [start], {start}
    while stack:
        for user in users.get(stack.pop(), []):
            if user.name in seen:
                continue
            seen.add(user.name)
            if user.kind in through or is_cell_sum(user):
                stack.append(user.name)
            else:
                found.append(user)
    return found


def _descends(nodes: dict[str, Node], index: dict[str, int], start: str, ancestor: str) -> bool:
    """Whether ``ancestor`` lies behind ``start`` (a walk back over inputs, never earlier in the
    topological order than ``ancestor``: the walk stays inside the block between them)."""
    low, stack, seen = index[ancestor], [start], {start}
    while stack:
        name = stack.pop()
        if name == ancestor:
            return True
        for i in nodes[name].inputs:
            if i not in seen and index.get(i, -1) >= low:
                seen.add(i)
                stack.append(i)
    return False


def _reached(nodes: list[Node], sources: set[str]) -> set[str]:
    """Names of the nodes computed from any of ``sources`` (nodes are in topological order)."""
    seen = set(sources)
    for node in nodes:
        if any(i in seen for i in node.inputs):
            seen.add(node.name)
    return seen


def merge_trunks(nodes: list[Node], conditioning: bool = True) -> dict[str, str]:
    """For each ``add`` or ``mul`` of several signal branches, the input every other input
    descends from, when there is one: the skip of a residual block ``x + f(x)``, the signal a
    squeeze-excite or attention gate scales, ``x * sigmoid(g(x))``, or an add's input that is
    that signal pooled or sliced with no weight on the way (SEW's ``pool(x) + pos_conv(x)``).
    The other inputs are side branches of that trunk. Parallel branches (``gate(x) * up(x)``, a
    downsampling conv shortcut beside the block, a recurrent cell's ``x W_ih + h W_hh``) have none.
    With ``conditioning``, an add of the one input computed from the main model input and others
    computed without it (a diffusion UNet's ``h + time_emb_proj(temb)``) has that input as
    trunk: the others are conditioning added to it (for signal propagation; capture leaves it
    out, as a recurrent cell's first step ``x W_ih + h0 W_hh`` is no residual either)."""
    index = {n.name: i for i, n in enumerate(nodes)}
    by_name = {n.name: n for n in nodes}
    main = next((n.name for n in nodes if n.kind == "input" and not n.attrs.get("own_segment")), None)
    # the main input: the first one (sample, input_ids), or in ONNX the one the probe observes
    from_main = _reached(nodes, {main} if main and conditioning else set())
    out: dict[str, str] = {}
    for node in nodes:
        ins = [i for i in dict.fromkeys(node.inputs) if i in index]
        if node.kind not in ("add", "mul") or len(ins) < 2:
            continue
        first = min(ins, key=index.__getitem__)  # only the earliest can lie behind all the others
        if all(_descends(by_name, index, i, first) for i in ins if i != first):
            out[node.name] = first
        elif node.kind == "add":
            out.update({node.name: c for c in ins if (base := _weightless_source(by_name, c)) != c
                        and all(_descends(by_name, index, i, base) for i in ins if i != c)})
            on = [i for i in ins if i in from_main]
            if node.name not in out and len(on) == 1 < len(ins):
                out[node.name] = on[0]
    return out


def _weightless_source(nodes: dict[str, Node], name: str) -> str:
    """The node behind ``name`` across single-input pooling and shape-only ops."""
    while (node := nodes[name]).kind in ("transparent", "pool-avg", "pool-max") and len(node.inputs) == 1 \
            and node.inputs[0] in nodes and not node.param:
        name = node.inputs[0]
    return name


def side_branch_nodes(nodes: list[Node]) -> set[str]:
    """Nodes whose signal reaches the model's output only through a side branch (see
    :func:`merge_trunks`), as attention scores (the query and key inputs of ``attention``) or
    as a sigmoid-like gate on another signal (:func:`gate_values`, where no trunk is visible:
    the RG-LRU's recurrence ``h = a h + x``, GLU's ``sigmoid(W x) * V x``):
    what they compute scales or gates a trunk that carries the signal past them, so a small
    output there (a small residual branch, a gate at sigmoid(0) = 1/2, uniform attention) is a
    start by design, not a collapse of the signal."""
    trunks = merge_trunks(nodes)
    users = _consumers(nodes)
    gates = gate_values(nodes)
    live = {n.name for n in nodes if n.kind == "output"}
    for node in reversed(nodes):  # what reaches an output (an exporter's unused Gather does not)
        if any(u.name in live for u in users.get(node.name, [])):
            live.add(node.name)
    if live:  # dead ends are no paths; a node with no live consumer at all is judged as before
        users = {k: [u for u in v if u.name in live] for k, v in users.items()}

    def side_edge(name: str, user: Node) -> bool:
        if user.kind == "attention":
            return bool(user.inputs) and name != user.inputs[-1]
        if name in gates and user.kind == "mul" and (any(i not in gates for i in user.inputs)
                                                      or _fixed_factor(user)):
            return True  # a gate in (0, 1) scaling another signal or a fixed tensor: 1/2 at the start
        return user.name in trunks and trunks[user.name] != name

    side = _on_every_path(nodes, users, side_edge, lambda user: True)
    return {name for name, s in side.items() if s}


def _on_every_path(nodes: list[Node], users: dict[str, list[Node]],
                   ends: Callable[[str, Node], bool], passes: Callable[[Node], bool]) -> dict[str, bool]:
    """Per node, whether every consumer of its output either ends the walk there (``ends(name,
    user)``) or passes it on (``passes(user)``) to a node for which this holds too: one reverse
    pass over the topological order. A node nothing consumes gets False; a consumer listed before
    its input (a reused module recorded out of order) counts as one for which it does not hold."""
    holds: dict[str, bool] = {}
    for node in reversed(nodes):
        outs = users.get(node.name, [])
        holds[node.name] = bool(outs) and all(
            ends(node.name, u) or (passes(u) and holds.get(u.name, False)) for u in outs)
    return holds


# What a signal may pass on its way to a normalisation for its scale to be divided away there:
# layers and shape-only ops, and activations that commute with a positive scale, phi(c x) =
# c phi(x). A tanh, sigmoid or GELU on the way is not one: there the scale sets the regime
# (linear near 0, saturated far out), which the norm after it cannot undo.
_TO_NORM = frozenset({"transparent", "pool-max", "pool-avg", "layer", "cat"})
_HOMOGENEOUS = frozenset({"relu", "leaky_relu", "prelu"})


def _scale_passes(node: Node) -> bool:
    if node.kind == "act":
        return node.activation is not None and node.activation.name in _HOMOGENEOUS
    return node.kind in _TO_NORM


def renormalised_downstream(graph: ModelGraph) -> set[str]:
    """Weights whose output, on every path, reaches a normalisation through only layers,
    activations, pooling, concatenation and shape-only ops -- before any sum, product,
    attention or output, and through no activation but positively homogeneous ones (relu,
    leaky_relu, prelu): whatever scale they give the signal there is divided away by that norm
    (DCGAN's conv -> leaky_relu -> conv -> BatchNorm; SegFormer's projections -> concat -> fuse
    conv -> BatchNorm), so their own mismatch does not carry on through depth. A layer with a
    BatchNorm an exporter folded into it (``normalized_after`` with no norm node) is such a
    norm too."""
    nodes, params = graph.nodes, graph.params
    users = _consumers(nodes)

    def normalises(u: Node) -> bool:
        return u.kind == "norm" or (u.kind == "layer" and u.param in params and params[u.param].normalized_after)

    reaches = _on_every_path(nodes, users, lambda name, u: normalises(u), _scale_passes)
    return {n.param for n in nodes if n.kind == "layer" and n.param and reaches.get(n.name)}


# Kinds that route units on without mixing them: what follows a layer is seen through them
# (a max pool commutes with a monotone activation; a concatenation passes each branch's units on).
PASS_THROUGH = frozenset({"transparent", "pool-max", "pool-avg", "cat"})
_SHAPE_ONLY = PASS_THROUGH
_SHAPE_OR_ACT = PASS_THROUGH | {"act"}


def _is_gain(node: Node) -> bool:
    """A product of one signal with a learned gain or a constant (LayerScale ``gamma * f(x)``,
    a residual scale ``0.1 * f(x)``): what the branch ends in is seen through it."""
    return node.kind == "mul" and len(node.inputs) == 1 and (node.param is not None or "scale" in node.attrs)


def constant_sub(c: float, signal_first: bool) -> dict[str, float]:
    """Attrs of a ``mul`` node for ``x - c`` (scale 1, shift -c) or ``c - x`` (scale -1, shift c),
    c a scalar constant: not a shape-only op, since the mean moves (a highway's carry gate
    ``1 - sigmoid(g)`` is near 1 where the gate is near 0), which a product after it sees."""
    return {"scale": 1.0, "shift": -c} if signal_first else {"scale": -1.0, "shift": c}


_GATES = frozenset({"sigmoid", "hardsigmoid"})


def gate_products(nodes: Iterable[Node]) -> set[str]:
    """Products of a branch and a gate in (0, 1), ``f(x) * sigmoid(g(x))`` (Qwen2-MoE's shared
    expert, GLU): like a LayerScale gain, the gate scales the branch on its way to the sum. The
    gate is seen back through shape-only ops (ECA's ``sigmoid(y).view(...).expand_as(x)``)."""
    nodes = list(nodes)
    by_name = {n.name: n for n in nodes}

    def gate(name: str) -> bool:
        n = by_name.get(name)
        while n is not None and n.kind == "transparent" and len(n.inputs) == 1:
            n = by_name.get(n.inputs[0])
        return n is not None and n.kind == "act" and n.activation is not None and n.activation.name in _GATES

    return {n.name for n in nodes if n.kind == "mul" and len(set(n.inputs)) == 2
            and sum(gate(i) for i in set(n.inputs)) == 1}


def gate_values(nodes: Iterable[Node]) -> set[str]:
    """A sigmoid-like gate g in (0, 1) and what one input computes from it alone, elementwise or
    by shape (``1 - g``, the RG-LRU's recurrence ``a = exp(-8 g softplus(L))`` and its
    ``sqrt(1 - a^2)``, a slice per time step): gate values until a weight layer or a second
    signal. Small logits put the gate at g(0) = 1/2, not at 0: no collapse of what it scales."""
    out: set[str] = set()
    for n in nodes:
        if n.kind == "act" and n.activation and n.activation.name in _GATES:
            out.add(n.name)
        elif n.kind not in ("layer", "embedding", "norm", "attention") and len(set(n.inputs)) == 1 \
                and n.inputs[0] in out and not _fixed_factor(n):
            out.add(n.name)
    return out


def _fixed_factor(node: Node) -> bool:
    """A product of one signal with a constant tensor that is neither learned nor a scalar (an
    initial recurrent state, a mask): what a gate scales there is no signal of its own."""
    return node.kind == "mul" and len(set(node.inputs)) == 1 and node.param is None \
        and not {"scale", "shift"} & set(node.attrs)


def _behind_gains(direct: list[Node], users: dict[str, list[Node]], gated: set[str] = frozenset(),
                  by_name: dict[str, Node] | None = None) -> list[Node]:
    """``direct`` and what it reaches through chains of gains and gates (past shape-only ops):
    NFNet's block ends ``x * sigmoid(se(x)) * 2.0 * alpha + shortcut``, a gate then two gains,
    so the residual sum is three products away from the branch's last layer. A sum found more
    than one product away counts only where the chain is its branch, not its skip
    (:func:`_adds_a_skip`, where ``by_name`` is given)."""
    out, seen = list(direct), {n.name for n in direct}
    frontier = [(n, 0) for n in direct]
    while frontier:
        g, hops = frontier.pop()
        if not (_is_gain(g) or g.name in gated):
            continue
        for n in _following(g.name, users, _SHAPE_ONLY):
            if n.name in seen:
                continue
            seen.add(n.name)
            if n.kind == "add" and hops >= 1 and by_name is not None and not _adds_a_skip(n, seen, by_name):
                continue
            out.append(n)
            frontier.append((n, hops + 1))
    return out


def _table_read(by_name: dict[str, Node], name: str) -> bool:
    """Whether ``name`` is a table read by index (an embedding lookup), past shape-only ops."""
    n = by_name.get(name)
    while n is not None and n.kind in PASS_THROUGH and len(n.inputs) == 1:
        n = by_name.get(n.inputs[0])
    return n is not None and n.kind == "embedding"


def _adds_a_skip(add: Node, chain: set[str], by_name: dict[str, Node], budget: int = 4000) -> bool:
    """Whether ``add`` ends the branch ``chain`` belongs to: its other operand is no table read
    by index (a position embedding added to the signal) and does not descend from the chain.
    Where it does, the chain is the sum's skip, the trunk a block reads, not a branch (Speech2Text's stem ``scale * glu(conv(x)) + positions`` is the trunk of the first
    encoder block, ``x + attn(norm(x))``). A search past ``budget`` nodes counts as a branch end."""
    frontier = [i for i in add.inputs if i not in chain]
    if all(_table_read(by_name, i) for i in frontier):
        return False  # a position or type embedding added to the signal: no skip
    seen = set(frontier)
    frontier = deque(frontier)
    while frontier and len(seen) < budget:
        n = by_name.get(frontier.popleft())
        for i in (n.inputs if n is not None else ()):
            if i in chain:
                return False
            if i not in seen:
                seen.add(i)
                frontier.append(i)
    return True


def annotate(graph: ModelGraph, source: str) -> None:
    """Fill each param's activation / normalized_after / residual_end / is_output.

    Shared by every loader that builds ``graph.nodes``; ``source`` says how the nodes were found
    ("fx", "module-order", "onnx") and is reported beside each activation. The walk passes through
    shape-only and bias ops; normalisation is also seen through an activation (Conv-ReLU-BN).
    """
    users = _consumers(graph.nodes)
    gated = gate_products(graph.nodes)
    by_name = {n.name: n for n in graph.nodes}
    # Whether a weight layer lies anywhere downstream (one reverse pass over the topological
    # order): a layer with none after it is an output layer, softmax or loss ops included.
    feeds_layer: dict[str, bool] = {}
    for node in reversed(graph.nodes):
        feeds_layer[node.name] = any(u.kind in ("layer", "embedding") or feeds_layer.get(u.name, False)
                                     for u in users.get(node.name, []))
    from initaudit.heads import head_layers  # builds on this module's walks

    heads = head_layers(graph.nodes, users, feeds_layer)
    head_fed: dict[str, bool] = {}
    for node in graph.nodes:
        targets = [n for n in (node.param, node.bias, *node.norm_params) if n]
        if node.kind not in ("layer", "embedding", "norm") or not targets:
            continue
        direct = _following(node.name, users, _SHAPE_ONLY)
        beyond_act = _following(node.name, users, _SHAPE_OR_ACT)
        split = split_functions(node.name, users, lambda n: _following(n, users, _SHAPE_ONLY))
        acts = [n.activation for n in direct if n.kind == "act" and n.activation] if not split else []
        unknown = [n.op or n.name for n in direct if n.kind == "unknown"]
        for name in targets:
            p = graph.params.get(name)
            if p is None:
                continue
            if acts and p.activation is None:
                p.activation, p.activation_source = acts[0], source
            p.follows_unknown = unknown[0] if unknown and p.activation is None else None
            p.split_functions = split
            p.normalized_after = bool(beyond_act) and all(n.kind == "norm" for n in beyond_act)
            p.residual_end = any(n.kind == "add" for n in _behind_gains(direct, users, gated, by_name))
            p.is_output = node.kind == "layer" and not feeds_layer[node.name] and bool(users.get(node.name))
            # at every call site of a reused weight (a recurrent cell's last step feeds the head,
            # its other steps feed the next step)
            here = node.name in heads
            head_fed[name] = head_fed.get(name, True) and here
    for name, fed in head_fed.items():
        graph.params[name].feeds_head = fed
    from initaudit.branches import gate_starts  # builds on merge_trunks

    for name, value in gate_starts(graph.nodes, users).items():
        graph.params[name].gate_start = value


def off_dataflow(graph: ModelGraph) -> set[str]:
    """Weights no node of the dataflow applies: in a graph recorded from an eval-mode forward
    pass, a training-only branch (an auxiliary classifier) is never reached, so what follows
    those weights is unknown and they are judged as in a checkpoint with no architecture."""
    if not graph.nodes:
        return set()
    placed = {n for node in graph.nodes for n in (node.param, node.bias, *node.norm_params) if n}
    return {p.name for p in graph.weights() if not placed.intersection([p.name, *p.aliases])}


def input_prefix(nodes: list[Node]) -> list[Node]:
    """The nodes before the first layer, embedding or norm (in the graph's topological order):
    what the forward does to its input before any weight reads it (``x / 255``)."""
    prefix = []
    for node in nodes:
        if node.kind in ("layer", "embedding", "norm"):
            break
        prefix.append(node)
    return prefix
