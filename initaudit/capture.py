"""The dataflow of what a module really computes, recorded from one forward pass.

:func:`capture_dataflow` runs the model once on the probe's inputs under a
``torch.overrides.TorchFunctionMode`` recorder, with forward pre/post hooks on every module:

- leaf modules (layers with their own weights, normalisations, activation, pooling, dropout
  and shape modules, ``nn.MultiheadAttention``, recurrent layers, Hugging Face ``Conv1D``,
  custom norms) become single nodes and what runs inside them is not recorded;
- the functional ops between them (``F.silu``, ``ACT2FN`` callables, ``matmul``, SDPA,
  softmax, ``cat``, ``mul``, ``add``, pooling, ``roll``, rotary embeddings) are recorded as
  primitive ops, each tensor tracked back to the recorded value it came from (a weak tensor
  map), and parameters used directly (``F.linear(x, self.w)``, LayerScale ``x * gamma``) are
  matched by identity;
- :mod:`initaudit.patterns` then collapses written-out activations, norms and attention, and
  gives every other op its node kind.

Python control flow, ``**kwargs`` forwards and attention implementations are followed because
they simply run. The forward runs as the probe's does (eval mode, batch-statistics norms in
train mode, no grad) and everything is put back afterwards: modes, parameters, buffers, RNG.
Float model inputs carry the signal; integer inputs are token ids, which only embeddings turn
into signal (attention masks stay constants).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch
import torch.nn as nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from initaudit.normgain import mark_norm_offsets
from initaudit.graph import Activation, ModelGraph, Node, Param, annotate, constant_sub, is_cell_sum, merge_trunks
from initaudit.patterns import ACT_OPS, Pattern, Prim, PrimView, find_patterns, op_kind
from initaudit.runtime_scale import AppliedWeights, applied_factors, fold_preactivation_scales

# torch function / method name (in-place and reflected forms folded) -> shared op vocabulary
_OPS = {
    "add": "add", "sub": "sub", "subtract": "sub", "mul": "mul", "multiply": "mul", "div": "div",
    "true_divide": "div", "truediv": "div", "divide": "div", "pow": "pow", "neg": "neg",
    "negative": "neg", "sqrt": "sqrt", "rsqrt": "rsqrt", "reciprocal": "reciprocal", "erf": "erf",
    "tanh": "tanh", "sigmoid": "sigmoid", "softplus": "softplus", "sin": "sin", "mean": "reducemean",
    "softmax": "softmax", "matmul": "matmul", "bmm": "matmul", "mm": "matmul", "einsum": "matmul",
    "cat": "concat", "concat": "concat", "concatenate": "concat", "stack": "stack",
    "relu": "relu", "relu6": "relu6", "leaky_relu": "leaky_relu", "elu": "elu", "selu": "selu",
    "celu": "celu", "gelu": "gelu", "silu": "silu", "mish": "mish", "hardswish": "hardswish",
    "hardsigmoid": "hardsigmoid", "hardtanh": "hardtanh", "softsign": "softsign",
    "logsigmoid": "logsigmoid", "prelu": "prelu", "glu": "glu",
    "float": "cast", "half": "cast", "bfloat16": "cast", "double": "cast", "to": "cast",
    "type": "cast", "type_as": "cast",
    "dropout": "dropout", "dropout1d": "dropout", "dropout2d": "dropout", "dropout3d": "dropout",
    "alpha_dropout": "dropout", "feature_alpha_dropout": "dropout",
    "transpose": "transpose", "permute": "transpose", "t": "transpose", "swapaxes": "transpose",
    "swapdims": "transpose", "movedim": "transpose", "moveaxis": "transpose", "T": "transpose",
    "mT": "transpose",
    "view": "reshape", "reshape": "reshape", "flatten": "reshape", "unflatten": "reshape",
    "squeeze": "reshape", "unsqueeze": "reshape", "view_as": "reshape", "reshape_as": "reshape",
    "expand": "expand", "expand_as": "expand", "repeat": "expand", "tile": "expand",
    "repeat_interleave": "expand", "broadcast_to": "expand",
    "contiguous": "contiguous", "clone": "contiguous", "detach": "contiguous", "data": "contiguous",
    "getitem": "slice", "narrow": "slice", "chunk": "slice", "split": "slice", "tensor_split": "slice",
    "split_with_sizes": "slice", "unbind": "slice", "select": "slice", "index_select": "slice",
    "pad": "pad", "roll": "roll", "flip": "flip", "where": "where", "masked_fill": "masked_fill",
    "setitem": "masked_fill", "index_put": "masked_fill", "normalize": "l2norm",
    "norm": "reducel2", "vector_norm": "reducel2", "clamp": "clamp", "clamp_min": "clamp_min",
    "interpolate": "upsample", "upsample": "upsample", "upsample_nearest": "upsample",
    "upsample_bilinear": "upsample", "pixel_shuffle": "pixelshuffle", "pixel_unshuffle": "pixelshuffle",
    "max_pool1d": "maxpool", "max_pool2d": "maxpool", "max_pool3d": "maxpool",
    "max_pool1d_with_indices": "maxpool", "max_pool2d_with_indices": "maxpool",
    "adaptive_max_pool1d": "adaptivemaxpool", "adaptive_max_pool2d": "adaptivemaxpool",
    "avg_pool1d": "averagepool", "avg_pool2d": "averagepool", "avg_pool3d": "averagepool",
    "adaptive_avg_pool1d": "adaptiveaveragepool", "adaptive_avg_pool2d": "adaptiveaveragepool",
    "adaptive_avg_pool3d": "adaptiveaveragepool",
    "linear": "linear", "conv1d": "conv", "conv2d": "conv", "conv3d": "conv",
    "conv_transpose1d": "conv", "conv_transpose2d": "conv", "conv_transpose3d": "conv",
    "embedding": "embedding", "layer_norm": "norm", "group_norm": "norm", "batch_norm": "norm",
    "instance_norm": "norm", "rms_norm": "norm", "scaled_dot_product_attention": "sdpa",
}
_ID_OPS = {"reshape", "transpose", "expand", "contiguous", "slice", "cast"}  # keep token ids ids
_IGNORED = {"size", "dim", "shape", "dtype", "device", "numel", "is_floating_point", "item",
            "tolist", "data_ptr", "stride", "len", "bool", "requires_grad", "is_contiguous"}


def _op_name(func: Any) -> str:
    name = getattr(func, "__name__", "") or type(func).__name__
    if name == "__get__":  # a property: x.T, x.mT, x.data
        name = getattr(getattr(func, "__self__", None), "__name__", name)
    name = name.strip("_")
    if name.startswith(("r", "i")) and name[1:] in ("add", "sub", "mul", "truediv", "div", "matmul", "pow"):
        name = ("r" if name[0] == "r" else "") + name[1:]  # iadd -> add; radd keeps its r
    if name.endswith("_") and not name.startswith("_"):
        name = name[:-1]
    return name


def _tensors(obj: Any, depth: int = 0):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif depth < 3 and isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v, depth + 1)
    elif depth < 3 and isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v, depth + 1)


def _values(obj: Any, depth: int = 0):
    """Tensors and number literals in argument order."""
    if isinstance(obj, (torch.Tensor, float, int)) and not isinstance(obj, bool):
        yield obj
    elif depth < 2 and isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _values(v, depth + 1)


class _Recorder(TorchFunctionMode):
    """Records the functional ops on signal tensors and the leaf modules around them."""

    def __init__(self, module: nn.Module, param_names: dict[int, str], is_leaf):
        super().__init__()
        self.param_names = param_names
        self.is_leaf = is_leaf
        self.tid: WeakTensorKeyDictionary = WeakTensorKeyDictionary()  # tensor -> tensor id
        self.kind: dict[str, str] = {}  # tensor id -> "signal" | "ids" | "const"
        self.scalars: dict[str, float | None] = {}
        self.prims: list[Prim] = []
        self.suspend = 0
        self.leaf_depth = 0  # > 0 inside a leaf module: its internals are not recorded
        self.stack: list[tuple[str, bool, list[str]]] = []
        self.calls: Counter[str] = Counter()
        self.names: Counter[str] = Counter()
        self.applied = AppliedWeights()  # the weight a custom leaf module really applies
        self.handles = []
        for name, m in module.named_modules():
            self.handles.append(m.register_forward_pre_hook(self._enter(name), with_kwargs=True))
            self.handles.append(m.register_forward_hook(self._leave(name), with_kwargs=True))

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    # -- tensor ids --------------------------------------------------------------------
    def new_id(self, t: torch.Tensor | None, kind: str) -> str:
        tid = f"t{len(self.kind)}"
        self.kind[tid] = kind
        if t is not None:
            self.tid[t] = tid
        return tid

    def operand(self, v: Any) -> str:
        if isinstance(v, torch.Tensor):
            tid = self.tid.get(v)
            if tid is not None:
                return tid
            pname = self.param_names.get(id(v))
            tid = f"p:{pname}" if pname else self.new_id(None, "const")
            self.kind[tid] = "const"
            self.scalars[tid] = float(v.detach().reshape(-1)[0]) if v.numel() == 1 and \
                v.device.type != "meta" else None
            return tid
        tid = self.new_id(None, "const")
        self.scalars[tid] = float(v)
        return tid

    def unique(self, name: str) -> str:
        k = self.names[name]
        self.names[name] += 1
        return f"{name}#{k}" if k else name

    def scope(self) -> str:
        return next((s for s, leaf, _ in reversed(self.stack) if not leaf and s), "")

    # -- functional ops ----------------------------------------------------------------
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if not self.suspend and not self.leaf_depth:
            self.suspend += 1
            try:
                self.record(func, args, kwargs, out)
            finally:
                self.suspend -= 1
        elif not self.suspend and self.applied.following:  # inside a custom leaf: its weight's path
            self.applied.op(_op_name(func), list(_tensors((args, kwargs))),
                            kwargs.get("weight", args[1] if len(args) > 1 else None), list(_tensors(out)))
        return out

    def record(self, func: Any, args: tuple, kwargs: dict, out: Any) -> None:
        raw = _op_name(func)
        if raw in _IGNORED:
            return
        values = [*_values(args), *_values(list(kwargs.values()))]
        known = [self.tid.get(v) for v in values if isinstance(v, torch.Tensor)]
        kinds = {self.kind.get(t) for t in known if t}
        if not kinds and _OPS.get(raw) in _ID_OPS and values and isinstance(values[0], torch.Tensor):
            pname = self.param_names.get(id(values[0]))
            if pname:  # a view of a parameter (w.t(), w[expert]) is that parameter to the ops after it
                for t in _tensors(out):
                    self.tid[t] = f"p:{pname}"
            return
        if "signal" not in kinds and not ("ids" in kinds and (raw == "embedding" or _OPS.get(raw) in _ID_OPS)):
            return
        reflected = raw in ("rsub", "rdiv", "rtruediv", "rpow", "rmatmul")
        op = _OPS.get(raw[1:] if reflected else raw, raw)
        if reflected:
            op = "unknown" if op in ("div", "pow") else op
        inputs = [self.operand(v) for v in values]
        outs = [t for t in _tensors(out)] if out is not None else list(_tensors(args[:1]))
        kind = "signal" if "signal" in kinds or raw == "embedding" else "ids"
        outputs = [self.new_id(t, kind) for t in outs if t.is_floating_point() or kind == "ids"]
        if not outputs:
            return
        attrs: dict[str, Any] = {"reflected": True} if reflected else {}
        if op in ("maxpool", "averagepool", "adaptivemaxpool", "adaptiveaveragepool", "reducemean"):
            src = next((v for v in values if isinstance(v, torch.Tensor)), None)
            if src is not None and outs and outs[0].numel():
                attrs["window"] = max(1, src.numel() // outs[0].numel())
        elif op == "sdpa" and len(values) >= 2 and isinstance(values[1], torch.Tensor):
            attrs["tokens"] = int(values[1].shape[-2])
            scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
            # QK^T's scale relative to the default 1/sqrt(d)
            attrs["logit_scale"] = float(scale) * values[0].shape[-1] ** 0.5 if scale else 1.0
        elif op == "matmul" and values and isinstance(values[0], torch.Tensor) and values[0].dim():
            attrs["contract"] = int(values[0].shape[-1])  # d, when this is attention's Q K^T
        elif op == "softmax" and outs and outs[0].dim():
            dim = kwargs.get("dim", args[1] if len(args) > 1 else -1)
            if isinstance(dim, int):
                attrs["tokens"] = int(outs[0].shape[dim])
        elif op == "reducel2" and kwargs.get("p", kwargs.get("ord", args[1] if len(args) > 1 else 2)) \
                not in (2, 2.0, "fro", None):
            op = "unknown"  # an L1 or max norm is no L2 normalisation
        elif op == "leaky_relu":
            slope = kwargs.get("negative_slope", args[1] if len(args) > 1 else 0.01)
            attrs["slope"] = float(slope) if isinstance(slope, (int, float)) else None
        name = self.unique(f"{self.scope()}.{raw}" if self.scope() else raw)
        self.prims.append(Prim(name, op, inputs, outputs, source_op=raw, attrs=attrs))

    # -- modules -----------------------------------------------------------------------
    def _enter(self, name: str):
        def hook(m, args, kwargs):
            self.suspend += 1
            try:
                if self.leaf_depth:
                    self.stack.append((name, False, []))  # inside a leaf: not recorded
                    return
                k = self.calls[name]
                self.calls[name] += 1
                site = f"{name}#{k}" if k else name
                if self.is_leaf(m):
                    ins = [self.tid[t] for t in _tensors((args, kwargs)) if t in self.tid]
                    self.stack.append((site, True, ins))
                    self.leaf_depth += 1
                    self.applied.enter(m)
                else:
                    self.stack.append((name, False, []))
            finally:
                self.suspend -= 1
        return hook

    def _leave(self, name: str):
        def hook(m, args, kwargs, out):
            self.suspend += 1
            try:
                while self.stack:
                    site, leaf, ins = self.stack.pop()
                    if site.split("#")[0] == name:
                        break
                else:
                    return
                if not leaf:
                    return
                self.leaf_depth -= 1
                floats = [t for t in _tensors(out) if t.is_floating_point()]
                outputs = [self.new_id(t, "signal") for t in floats]
                attrs = {"module": m, "path": name}
                if isinstance(m, nn.Hardtanh) and (m.min_val, m.max_val) == (0.0, 6.0):
                    attrs["act"] = "relu6"  # nn.ReLU6 inside a written-out hardswish / hardsigmoid
                elif isinstance(m, (nn.modules.dropout._DropoutNd, nn.Identity)):
                    # an nn.Dropout between softmax(Q K^T) and V passes the weights on, as F.dropout does
                    attrs["act"] = "dropout" if isinstance(m, nn.modules.dropout._DropoutNd) else "identity"
                # NTK / equalised lr: weight * s in its forward; weight standardisation: per row
                attrs.update(applied_factors(m, args, out, self.applied.leave()))
                first = next(_tensors((args, kwargs)), None)
                if first is not None and floats and floats[0].numel():
                    attrs["window"] = max(1, first.numel() // floats[0].numel())
                self.prims.append(Prim(site, "module", ins, outputs, source_op=type(m).__name__,
                                       attrs=attrs))
            finally:
                self.suspend -= 1
        return hook


def record_forward(module: nn.Module, inputs: Any, param_names: dict[int, str], is_leaf
                   ) -> tuple[_Recorder, dict[str, str], Any]:
    """Run ``module`` on ``inputs`` (a ProbeInputs) under the recorder; returns the recorder,
    the model inputs' tensor ids by name and the output."""
    rec = _Recorder(module, param_names, is_leaf)
    named: dict[str, str] = {}
    try:
        for i, v in enumerate(inputs.args):
            for j, t in enumerate(_tensors(v)):
                label = "input" if i == 0 and j == 0 else f"input.{i}" + (f".{j}" if j else "")
                named[label] = rec.new_id(t, "signal" if t.is_floating_point() else "ids")
        for k, v in inputs.kwargs.items():
            for j, t in enumerate(_tensors(v)):
                named[k if not j else f"{k}.{j}"] = rec.new_id(t, "signal" if t.is_floating_point() else "ids")
        with rec:
            out = module(*inputs.args, **inputs.kwargs)
    finally:
        rec.remove()
    return rec, named, out


class _Emitter:
    """Prims (with patterns collapsed) -> graph Nodes."""

    def __init__(self, rec: _Recorder, graph: ModelGraph, owned: dict[str, list[Param]], module_node):
        self.rec, self.graph, self.owned, self.module_node = rec, graph, owned, module_node
        self.nodes: list[Node] = []
        self.tensor_node: dict[str, str] = {}
        self.root: dict[str, str] = {}  # node -> nearest non-shape-only node at or behind it
        self.kinds: dict[str, str] = {}

    def in_cell(self, node: Node) -> bool:
        """Every branch is a weight layer's output and one of them is a layer applied again and
        again (a recurrence, x W_ih + h W_hh): a cell's sum, not a residual one."""
        roots = [self.root.get(n, n) for n in node.inputs]
        return bool(roots) and all(self.kinds.get(r) == "layer" for r in roots) and any(
            self.rec.calls.get(r.split("#")[0], 0) > 1 for r in roots)

    def sources(self, tensors: list[str]) -> list[str]:
        out = []
        for t in tensors:
            n = self.tensor_node.get(t)
            if n is not None and n not in out:
                out.append(n)
        return out

    def emit(self, made: list[Node], outputs: list[str]) -> None:
        for node in made:
            if node.kind == "add" and self.in_cell(node):
                node.attrs["residual"] = False
            self.nodes.append(node)
            self.kinds[node.name] = node.kind
            first = self.root.get(node.inputs[0], node.inputs[0]) if node.inputs else node.name
            self.root[node.name] = first if node.kind == "transparent" else node.name
        if made:
            for t in outputs:
                self.tensor_node[t] = made[-1].name

    def param(self, t: str) -> str | None:
        name = t[2:] if t.startswith("p:") else None
        return name if name in self.graph.params else None

    def pattern(self, pat: Pattern) -> None:
        if pat.kind == "act":
            self.emit([Node(pat.name, "act", self.sources([pat.root]), activation=pat.activation,
                            op=pat.op)], [pat.output])
        elif pat.kind == "norm":
            params = tuple(p for p in (self.param(pat.scale or ""), self.param(pat.shift or "")) if p)
            self.emit([Node(pat.name, "norm", self.sources([pat.root]), norm_params=params, op=pat.op)],
                      [pat.output])
        else:
            ins = [self.tensor_node[t] for t in pat.inputs if t in self.tensor_node]
            self.emit([Node(pat.name, "attention", ins, op=pat.op, attrs=dict(pat.attrs))], [pat.output])

    def prim(self, p: Prim) -> None:
        kinds = self.rec.kind
        signal = [t for t in p.inputs if kinds.get(t) in ("signal", "ids")]
        ins = self.sources(signal)
        if p.op == "module":
            m = p.attrs["module"]
            made = self.module_node(p.name, m, ins, self.owned, p.attrs["path"], p.attrs.get("window"))
            self.emit(made, p.outputs)
            return
        params = [self.param(t) for t in p.inputs if t.startswith("p:")]
        params = [x for x in params if x]
        consts = [t for t in p.inputs if kinds.get(t) == "const"]
        node = Node(p.name, "unknown", ins, op=p.source_op, attrs=dict(p.attrs))
        if params:
            node.attrs["params"] = tuple(params)  # applied by an op nothing models (grouped_mm)
        if p.op in ("linear", "conv", "embedding"):
            weight = params[0] if params else None
            node.kind = "embedding" if p.op == "embedding" else "layer"
            node.param, node.bias = weight, params[1] if len(params) > 1 else None
        elif p.op in ("norm", "l2norm"):  # F.layer_norm ... F.normalize (no parameters)
            node.kind, node.norm_params = "norm", tuple(params)
        elif p.op == "sdpa":
            node.kind = "attention"
            node.inputs = [self.tensor_node[t] for t in signal[:3] if t in self.tensor_node]
        elif p.op == "glu":
            gate = Node(f"{p.name}.gate", "act", ins, activation=Activation("sigmoid"), op="glu")
            self.emit([gate, Node(p.name, "mul", [*ins, gate.name], op="glu")], p.outputs)
            return
        elif p.op in ACT_OPS:
            slope = p.attrs.get("slope")
            node.kind, node.activation = "act", Activation(ACT_OPS[p.op], slope if p.op == "leaky_relu" else None)
        elif p.op == "matmul" and len(signal) == 1 and params:
            node.kind, node.param = "layer", params[0]
        else:
            node.kind = op_kind(p.op, [self.root.get(n, n) for n in self.sources(signal)] if len(signal) > 1
                                else ins)
            if node.kind == "mul" and len(ins) == 1:
                scalar = next((self.rec.scalars.get(t) for t in consts if self.rec.scalars.get(t) is not None), None)
                if params and scalar is None:
                    node.param = params[0]
                elif scalar is not None:
                    node.attrs["scale"] = 1.0 / scalar if p.op == "div" and scalar else scalar
                else:  # a fixed tensor (a mask, rotary cos/sin): values unknown, shape kept
                    node.kind = "transparent"
            elif node.kind == "transparent" and p.op == "sub" and len(ins) == 1 and not params:
                scalar = next((self.rec.scalars.get(t) for t in consts if self.rec.scalars.get(t) is not None), None)
                if scalar is not None:  # 1 - gate: the mean moves
                    node.kind, node.attrs = "mul", {**node.attrs, **constant_sub(scalar, not p.attrs.get("reflected"))}
            if node.kind == "transparent" and p.op in ("reshape", "expand"):
                # the data is the first signal argument; another one gives a shape only
                # (reshape_as / expand_as / view_as), as the ONNX loader reads such ops
                node.inputs = self.sources(signal[:1])
        self.emit([node], p.outputs)


def build_nodes(rec: _Recorder, named_inputs: dict[str, str], out: Any, graph: ModelGraph,
                owned: dict[str, list[Param]], module_node) -> list[Node]:
    """Graph nodes from a recorded forward: patterns first, then one node per remaining op."""
    kinds, scalars = rec.kind, rec.scalars
    out_ids = output_ids(rec, out)
    view = PrimView(rec.prims, is_const=lambda t: kinds.get(t) == "const",
                    is_signal=lambda t: kinds.get(t) == "signal", scalar=lambda t: scalars.get(t),
                    outputs=set(out_ids), is_weight=lambda t: t.startswith("p:"))
    patterns = find_patterns(view)
    em = _Emitter(rec, graph, owned, module_node)
    for label, tid in named_inputs.items():
        em.emit([Node(label, "input")], [tid])
    done: set[int] = set()
    for i, p in enumerate(rec.prims):
        pat = patterns.get(i)
        if pat is not None:
            if id(pat) not in done and i == max(pat.members):
                done.add(id(pat))
                em.pattern(pat)
            continue
        em.prim(p)
    em.emit([Node("output", "output", em.sources(out_ids))], [])
    # One branch descending from another is x + f(x), a residual, even where f is a layer
    # applied again and again in depth (ALBERT's one shared layer): a recurrent cell's
    # x_t W_ih + h_{t-1} W_hh sums parallel branches, neither made from the other.
    trunks = merge_trunks(em.nodes, conditioning=False)
    for node in em.nodes:
        if is_cell_sum(node) and node.name in trunks:
            del node.attrs["residual"]
    return em.nodes


def _all_tensors(obj: Any, seen: set[int] | None = None, depth: int = 0):
    """Every tensor in a model output (ModelOutput dicts, tuples, nested), for the output node."""
    seen = set() if seen is None else seen
    if depth > 6 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _all_tensors(v, seen, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _all_tensors(v, seen, depth + 1)


def output_ids(rec: _Recorder, out: Any) -> list[str]:
    return [rec.tid[t] for t in _all_tensors(out) if t in rec.tid]


_MODE_NOTE = "eval mode, batch-statistics norms in train mode, no grad; everything restored"


def capture_dataflow(graph: ModelGraph, inputs: Any, owned: dict[str, list[Param]] | None = None) -> str | None:
    """Replace ``graph.nodes`` by the dataflow recorded from one forward pass of
    ``graph.module`` on ``inputs`` (a :class:`~initaudit.probe.inputs.ProbeInputs`), and
    re-annotate the params. Returns None on success, else the one-line reason it could not
    run (the graph is then left as it was)."""
    from initaudit.errors import first_line
    from initaudit.loaders.torch_module import FX_FAILED, is_capture_leaf, owned_params, trace_module_node
    from initaudit.probe.torch_probe import _BATCH_STAT_NORMS, _Snapshot
    from initaudit.roles import mark_unapplied

    module = graph.module
    if module is None:
        return "no live module"
    owned = owned if owned is not None else owned_params(graph, module)
    param_names = {}
    for name, t in [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]:
        key = name if name in graph.params else next(
            (p.name for p in graph.params.values() if name in p.aliases), None)
        if key is not None:
            param_names.setdefault(id(t), key)
    snapshot = _Snapshot(module)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    try:
        module.eval()
        for m in module.modules():
            if isinstance(m, _BATCH_STAT_NORMS):
                m.train()
        torch.backends.mha.set_fastpath_enabled(False)  # fused kernels would hide the layer
        with snapshot.writes, torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.random.default_generator.manual_seed(0)
            rec, named, out = record_forward(module, inputs, param_names, is_capture_leaf)
        nodes = build_nodes(rec, named, out, graph, owned, trace_module_node)
    except Exception as exc:  # the model's own error, or an op the recorder cannot follow
        return first_line(exc)[:200] or type(exc).__name__
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        snapshot.restore()
    if not any(n.kind in ("layer", "embedding") for n in nodes) and any(p.is_weight for p in graph.params.values()):
        return "the recorded forward pass reached no weight layer"
    for p in graph.params.values():
        if p.activation_source not in ("module", "name"):
            p.activation, p.activation_source = None, None
        p.normalized_after = p.residual_end = p.is_output = p.feeds_head = False
    graph.nodes = nodes
    mark_norm_offsets(graph)  # x * (1 + w): the gain the norm module applies, measured
    _keep_runtime_scales(rec, owned)
    fold_preactivation_scales(graph)  # sin(w0 * layer(x)): w0 is part of the applied weight
    graph.notes = [n for n in graph.notes if not n.startswith(FX_FAILED)]
    annotate(graph, "trace")
    graph.capture = "trace"
    mark_unapplied(graph)
    unknown = sorted({n.op or "?" for n in nodes if n.kind == "unknown"})
    if unknown:
        graph.notes.append(f"dataflow recorded from a forward pass; ops it does not model (the signal "
                           f"after them is not predicted): {', '.join(unknown[:8])}"
                           + (f" and {len(unknown) - 8} more" if len(unknown) > 8 else ""))
    return None


def _keep_runtime_scales(rec: _Recorder, owned: dict[str, list[Param]]) -> None:
    """Each weight a custom leaf module multiplies at run time gets the measured factor, or the
    per-output-row map it applies (weight standardisation), from its first call
    (:mod:`initaudit.runtime_scale`)."""
    for p in owned.values():
        for q in p:
            q.runtime_scale = q.output_scale = 1.0
            q.runtime_rows = None
    for prim in rec.prims:
        scale, rows = prim.attrs.get("runtime_scale"), prim.attrs.get("runtime_rows")
        if prim.op != "module" or (scale is None and rows is None):
            continue
        path = prim.attrs["path"]
        own = f"{path}.weight" if path else "weight"  # the factor is measured on module.weight
        for q in owned.get(path, []):
            if not q.is_weight or own not in (q.name, *q.aliases) or q.runtime_scale != 1.0 \
                    or q.runtime_rows is not None:
                continue
            if rows is not None and tuple(rows.a.shape) == tuple(q.shape[:1]):
                q.runtime_rows = rows
            elif scale is not None:
                q.runtime_scale = scale
