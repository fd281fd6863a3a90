"""ONNX file -> ModelGraph: initializer roles and true fans from the ops that consume them.

The model is parsed once, without its external data. Each initializer gets its role from its
consumer (Gemm, MatMul, Conv, ConvTranspose, LSTM/GRU/RNN, Gather, the normalisation ops),
reached directly or through Transpose / Cast / Identity / Reshape / Squeeze / Unsqueeze /
DequantizeLinear; the tensor handed to the analysis is the one the op actually uses (transposed,
reshaped, dequantised to fp32). Values are read lazily, one tensor at a time: embedded
initializers from the parsed protobuf, external ones from their file range after checking that
the file lies inside the model's folder (external-data path traversal is a known CVE class).

The dataflow is rebuilt as format-neutral :class:`~initaudit.graph.Node` objects with the same
kinds the torch loader uses; exporter idioms are collapsed first (GELU as x*0.5*(1+erf(x/sqrt2)),
tanh-GELU, SiLU, Mish, LayerNorm and RMSNorm spelled as ReduceMean/Sub/Pow/Sqrt/Div), so
:func:`~initaudit.graph.annotate` derives activations, normalisation, residual ends and outputs
with the shared code.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from initaudit.errors import TargetError
from initaudit.graph import ModelGraph, Node, OpKind, Param, ParamRole, annotate, constant_sub
from initaudit.loaders.onnx_fold import fold
from initaudit.loaders.onnx_ops import _ACT_OPS, _NORM_OPS, OpsMixin
from initaudit.loaders.onnx_store import _FLOAT_TYPES, TensorStore, _one_line, _read_model, _skeleton, check_graph
from initaudit.loaders.onnx_weights import WeightsMixin, _all_tensors, _apply, _attr, _Source
from initaudit.loaders.torch_module import detect_family
from initaudit.patterns import Pattern, Prim, PrimView, find_patterns, op_kind
from initaudit.runtime_scale import fold_preactivation_scales

# ---------------------------------------------------------------------------------------------
# Op tables

_TRANSPARENT_OPS = {
    "Reshape", "Transpose", "Flatten", "Identity", "Dropout", "Cast", "CastLike", "Squeeze",
    "Unsqueeze", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
    "GlobalLpPool", "Split", "Slice", "Expand", "Pad", "Resize", "Upsample", "DepthToSpace",
    "SpaceToDepth", "ReduceMean", "QuantizeLinear", "DequantizeLinear", "Contiguous",
}
# Transparent ops whose output holds the same values as their input (torch: a view of it).
_VIEW_OPS = {"Reshape", "Flatten", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Transpose"}
_META_OPS = {"Shape", "Size"}  # outputs describe a tensor, they are not signal
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli"}
_QUANTISED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm",
                  "DynamicQuantizeMatMul", "MatMulNBits"}


class _Builder(WeightsMixin, OpsMixin):
    """ONNX nodes -> graph Nodes: statuses, patterns (initaudit.patterns), one handler per op."""

    def __init__(self, path: Path, model: onnx.ModelProto, graph: onnx.GraphProto, store: TensorStore,
                 value_shapes: dict[str, tuple]):
        self.path = path
        self.model = model
        self.g = graph
        self.store = store
        self.value_shapes = value_shapes
        self.nodes = list(graph.node)
        self.producer: dict[str, int] = {}
        self.consumers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for o in n.output:
                if o:
                    self.producer[o] = i
            for inp in n.input:
                if inp:
                    self.consumers.setdefault(inp, []).append(i)
        self.graph_outputs = {o.name for o in graph.output}
        self.status: dict[str, str] = {}  # tensor -> "const" | "meta" | "signal"
        self.params: dict[str, Param] = {}
        self.sources: dict[str, _Source] = {}  # param name -> how to build its tensor
        self.claims: dict[tuple, str] = {}  # source key -> param name
        self.root_claims: dict[str, list[str]] = {}  # root -> param names made from it
        self.out_nodes: list[Node] = []
        self.tensor_node: dict[str, str] = {}  # tensor -> our Node name
        self.node_tensor: dict[str, str] = {}  # our Node name -> the ONNX tensor it stands for
        self.names: set[str] = set()
        self.layer_units: dict[str, int] = {}  # layer Node name -> units (for bias detection)
        self.unit_dims: dict[str, int] = {}  # Node name -> dimension of its output's units
        self.folded: set[str] = set()  # weights an exporter folded a BatchNorm into
        self.view_nodes: set[str] = set()  # transparent nodes that only reshape (or pass on)
        self.notes: list[str] = []
        self.skipped: list[tuple[str, str]] = []
        self.unplaced: dict[str, list[str]] = {}  # initializer -> "node (op)" using it
        self.gather_indices: list[tuple[str, int]] = []  # (indices tensor, table rows)
        self.roots: dict[str, str] = {}  # Node -> nearest non-shape-only Node at or behind it

    # -- helpers --------------------------------------------------------------------------
    def unique(self, name: str) -> str:
        base, k = name, 1
        while name in self.names:
            name = f"{base}#{k}"
            k += 1
        self.names.add(name)
        return name

    def node_name(self, i: int) -> str:
        n = self.nodes[i]
        return n.name or f"{n.op_type}_{i}"

    def is_const(self, t: str) -> bool:
        return self.status.get(t) == "const"

    def is_signal(self, t: str) -> bool:
        return self.status.get(t) == "signal"

    def op(self, t: str) -> onnx.NodeProto | None:
        i = self.producer.get(t)
        return self.nodes[i] if i is not None else None

    def channel_scale(self, n: onnx.NodeProto) -> dict:
        """``{"channel_scale": rms}`` for a signal times or over a small constant vector (an
        image normalisation's per-channel 1 / std: torchvision detection's transform inside the
        graph), rms the root mean square of the factor; {} otherwise. The static prediction
        does not apply it (its input is unit-variance where the first layer reads it); the
        measured profile does, so both start from that same place."""
        if len(n.input) != 2 or self.is_signal(n.input[0]) == self.is_signal(n.input[1]):
            return {}
        const = n.input[1] if self.is_signal(n.input[0]) else n.input[0]
        src = self.resolve(const)
        arr = self.store.small(src.root) if src is not None else None
        if arr is None or arr.size < 2 or not np.all(np.isfinite(arr)) or np.any(arr == 0):
            return {}
        factor = 1.0 / arr.astype(np.float64) if n.op_type == "Div" else arr.astype(np.float64)
        return {"channel_scale": float(np.sqrt(np.mean(factor ** 2)))}

    def scalar(self, t: str) -> float | None:
        """Value of a scalar constant (initializer, Constant node, through Cast/Identity), or of
        one computed from known shapes (SDPA's default ``1/sqrt(d)``: initaudit.loaders.onnx_fold)."""
        src = self.resolve(t)
        if src is None:
            if self.status.get(t) != "meta":
                return None
            arr = fold(t, self.op, lambda x: self.store.small(x) if x in self.store else None,
                       lambda x: self.value_shapes.get(x, ()))
        else:
            arr = self.store.small(src.root)
        if arr is None or arr.size != 1:
            return None
        try:
            return float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])
        except (TypeError, ValueError):
            return None

    def channel_gain(self, n: onnx.NodeProto) -> str | None:
        """The initializer of ``signal * g`` when g is a per-channel gain: a stored float tensor
        with one axis of more than one element ((C,), (C, 1, 1)), as a LayerScale gamma is.
        Masks and rotary tables (two or more such axes) and scalars are not gains."""
        sig = [x for x in n.input if self.is_signal(x)]
        const = [x for x in n.input if x and not self.is_signal(x)]
        if len(n.input) != 2 or len(sig) != 1 or len(const) != 1:
            return None
        src = self.resolve(const[0])
        if src is None or src.root not in self.store:
            return None
        shape = self.store.shape(src.root)
        return src.root if len([d for d in shape if d > 1]) == 1 else None

    def sole_consumer(self, t: str) -> int | None:
        users = self.consumers.get(t, [])
        if len(users) != 1 or t in self.graph_outputs:
            return None
        return users[0]

    # -- constants and statuses -----------------------------------------------------------
    def classify(self) -> None:
        for name in self.store.protos:  # large ones are typed inputs in the skeleton graph
            self.status[name] = "const"
        for inp in self.g.input:
            if inp.name not in self.status:
                self.status[inp.name] = "signal"
        for n in self.nodes:
            if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
                t = self._constant_value(n)
                if t is not None and n.output:
                    self.store.add(t, n.output[0])
                    self.store.program.add(n.output[0])
                for o in n.output:
                    self.status[o] = "const"
                continue
            ins = [self.status.get(x, "meta") for x in n.input if x]
            if n.op_type in _META_OPS:
                st = "meta" if "signal" in ins or "meta" in ins else "const"
            elif "signal" in ins or n.op_type in _RANDOM_OPS:
                st = "signal"
            elif "meta" in ins or any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
                                      for a in n.attribute):
                st = "meta"
            else:
                st = "const"
            for o in n.output:
                if o:
                    self.status[o] = st

    @staticmethod
    def _constant_value(n: onnx.NodeProto) -> onnx.TensorProto | None:
        for a in n.attribute:
            if a.name == "value" and a.type == onnx.AttributeProto.TENSOR:
                return a.t
            if a.name in ("value_float", "value_floats", "value_int", "value_ints"):
                v = onnx.helper.get_attribute_value(a)
                arr = np.asarray(v, dtype=np.float32 if "float" in a.name else np.int64)
                return numpy_helper.from_array(arr, n.output[0])
        return None

    def src_nodes(self, tensors: Iterable[str]) -> list[str]:
        out = []
        for t in tensors:
            if t and self.is_signal(t) and t in self.tensor_node and self.tensor_node[t] not in out:
                out.append(self.tensor_node[t])
        return out

    def emit(self, node: Node, outputs: Iterable[str], represents: str | None = None) -> Node:
        self.out_nodes.append(node)
        first = self.roots.get(node.inputs[0], node.inputs[0]) if node.inputs else node.name
        self.roots[node.name] = first if node.kind == "transparent" else node.name
        for o in outputs:
            if o:
                self.tensor_node[o] = node.name
        if represents:
            self.node_tensor[node.name] = represents
        return node

    def build(self) -> list[Node]:
        self.classify()
        patterns = find_patterns(self.prim_view())
        # The probe measures "the input" on the first float input (as the torch probe does); the
        # others (token ids, a diffusion timestep, a second image) start segments of their own
        ins = [inp for inp in self.g.input if self.is_signal(inp.name)]
        observed = next((inp for inp in ins if inp.type.tensor_type.elem_type in _FLOAT_TYPES), None)
        for inp in ins:
            self.emit(Node(self.unique(inp.name), "input", attrs={} if inp is observed else {"own_segment": True}),
                      [inp.name], inp.name)
        done_patterns: set[int] = set()
        for i, n in enumerate(self.nodes):
            pat = patterns.get(i)
            if pat is not None:
                if id(pat) in done_patterns or i != max(pat.members):
                    continue
                done_patterns.add(id(pat))
                self.emit_pattern(pat)
                continue
            if not any(self.is_signal(x) for x in n.input if x):
                continue  # computes a constant or a shape: not part of the signal's dataflow
            self.emit_node(i, n)
        outs = self.src_nodes(o.name for o in self.g.output)
        self.emit(Node(self.unique("output"), "output", outs), [])
        return self.out_nodes

    def _reduced(self, src: str, out: str | None) -> int | None:
        """Elements averaged into one (input size / output size) when both shapes are known."""
        a, b = self.value_shapes.get(src, ()), self.value_shapes.get(out or "", ())
        if not a or not b or not all(isinstance(d, int) and d for d in (*a, *b)):
            return None
        return max(1, math.prod(a) // math.prod(b))

    def prim_view(self) -> PrimView:
        """The ONNX nodes as primitive ops for the shared recogniser (initaudit.patterns)."""
        prims = [Prim(self.node_name(i), n.op_type.lower(), list(n.input), list(n.output), n.op_type)
                 for i, n in enumerate(self.nodes)]
        for p, n in zip(prims, self.nodes):
            if n.op_type == "MatMul" and n.input:
                d = (self.value_shapes.get(n.input[0]) or (None,))[-1]
                if isinstance(d, int) and d > 0:
                    p.attrs["contract"] = d  # d, when this is attention's Q K^T
            shape = self.value_shapes.get(n.output[0], ()) if n.op_type == "Softmax" and n.output else ()
            axis = int(_attr(n, "axis", -1))
            if shape and -len(shape) <= axis < len(shape) and isinstance(shape[axis], int) and shape[axis]:
                p.attrs["tokens"] = shape[axis]
        return PrimView(prims, self.is_const, self.is_signal, self.scalar, self.graph_outputs,
                        is_weight=lambda t: self.resolve(t) is not None)

    def emit_pattern(self, pat: Pattern) -> None:
        name = self.unique(pat.name)
        ins = self.src_nodes([pat.root])
        if pat.kind == "act":
            self.emit(Node(name, "act", ins, activation=pat.activation, op=pat.op), [pat.output], pat.output)
            return
        if pat.kind == "attention":
            qkv = [self.tensor_node[t] for t in pat.inputs if t in self.tensor_node]
            self.emit(Node(name, "attention", qkv, op=pat.op, attrs=dict(pat.attrs)), [pat.output], pat.output)
            return
        self.unit_dims[name] = -1
        norm_params = []
        for t, role in ((pat.scale, ParamRole.NORM_SCALE), (pat.shift, ParamRole.NORM_SHIFT)):
            src = self.resolve(t) if t else None
            if src is not None:
                pname, _ = self.claim(src, self.operand_name(t, src), name, pat.op, OpKind.NORM, role, operand=t)
                if self.params[pname].role is role:
                    norm_params.append(pname)
        self.emit(Node(name, "norm", ins, norm_params=tuple(norm_params), op=pat.op), [pat.output], pat.output)

    def emit_node(self, i: int, n: onnx.NodeProto) -> None:
        op = n.op_type
        name = self.unique(self.node_name(i))
        out = n.output[0] if n.output else None
        sig_in = self.src_nodes(n.input)
        if op in ("Gemm", "MatMul", "FusedMatMul"):
            if self.emit_matmul(i, n, name):
                return
        elif op in ("Conv", "ConvTranspose"):
            if self.emit_conv(i, n, name):
                return
        elif op in ("LSTM", "GRU", "RNN"):
            self.emit_rnn(i, n, name)
            return
        elif op == "Gather":
            if self.emit_gather(i, n, name):
                return
            self.emit(Node(name, "transparent", self.src_nodes(n.input[:1])), n.output, out)
            return
        elif op in _NORM_OPS:
            self.emit_norm(i, n, name)
            return
        elif op in _ACT_OPS or op in ("LeakyRelu", "PRelu", "Clip"):
            act = self.activation(n, name)
            if act is not None:
                self.emit(Node(name, "act", self.src_nodes(n.input[:1]), activation=act), n.output, out)
                return
        elif op in ("Add", "Sum", "Mul", "Concat") and len([x for x in n.input if self.is_signal(x)]) >= 2:
            # residual sums, gated products, concatenation; one signal through shape-only ops
            # on both sides (rotary embeddings) is not a sum of branches
            kind = op_kind(op.lower().replace("sum", "add"), [self.roots.get(x, x) for x in sig_in])
            self.emit(Node(name, kind, sig_in if kind != "transparent" else sig_in[:1], op=op), n.output, out)
            return
        elif op in ("Add", "Sum"):
            sig = [x for x in n.input if self.is_signal(x)]
            if op == "Add" and len(sig) == 1:
                self.attach_bias(n, sig[0])
                self.emit(Node(name, "transparent", self.src_nodes(sig)), n.output, out)
                return
        elif op == "Sub" and len(n.input) == 2 and self.is_signal(n.input[0]) != self.is_signal(n.input[1]) \
                and (c := self.scalar(n.input[1] if self.is_signal(n.input[0]) else n.input[0])) is not None:
            first = self.is_signal(n.input[0])  # x - c, or c - x (a highway's carry gate 1 - T)
            self.emit(Node(name, "mul", self.src_nodes(n.input[:1] if first else n.input[1:]), op=op,
                           attrs=constant_sub(c, first)), n.output, out)
            return
        elif op in ("MaxPool", "AveragePool", "GlobalMaxPool", "GlobalAveragePool", "ReduceMean"):
            kernel = _attr(n, "kernel_shape")
            window = math.prod(kernel) if kernel else self._reduced(n.input[0], out)
            kind = op_kind(op.lower().replace("global", ""), [])
            self.emit(Node(name, kind, self.src_nodes(n.input[:1]), op=op,
                           attrs={"window": window} if window else {}), n.output, out)
            return
        elif op == "Mul" and self.scalar(next((x for x in n.input if not self.is_signal(x)), "")) is not None:
            scale = self.scalar(next(x for x in n.input if not self.is_signal(x)))
            self.emit(Node(name, "mul", self.src_nodes(n.input), op=op, attrs={"scale": scale}), n.output, out)
            return
        elif op == "Mul" and (gain := self.channel_gain(n)) is not None:
            # a per-channel learned gain (LayerScale gamma * f(x)): what the branch ends in is seen
            # through it, and the prediction multiplies by the gain's spread, as in the torch forms
            self.unplaced.setdefault(gain, []).append(f"{name} ({op})")
            self.emit(Node(name, "mul", self.src_nodes(n.input), param=gain, op=op), n.output, out)
            return
        elif op == "Div" and len(n.input) == 2 and self.is_signal(n.input[0]) and self.scalar(n.input[1]):
            scale = 1.0 / self.scalar(n.input[1])  # x / s: attention's 1/sqrt(d), a residual's 1/sqrt(2)
            self.emit(Node(name, "mul", self.src_nodes(n.input[:1]), op=op, attrs={"scale": scale}), n.output, out)
            return
        elif op in _TRANSPARENT_OPS:
            if op in _VIEW_OPS:
                self.view_nodes.add(name)
            self.emit(Node(name, "transparent", self.src_nodes(n.input[:1])), n.output, out)
            return
        elif op in _META_OPS:
            return  # reads the signal's shape, not its values: not part of the dataflow
        elif op in _QUANTISED_OPS:
            self.skipped.append((name, f"quantised op {op} is not analysed (its integer weights are "
                                       "not judged)"))
        # Any other op, by the one recogniser: an op nobody models (a custom domain's, or one
        # initaudit does not know) is "unknown", so what it does to the signal is never guessed.
        custom = n.domain not in ("", "ai.onnx")
        kind = "unknown" if custom else op_kind(op.lower(), [self.roots.get(x, x) for x in sig_in])
        label = f"{n.domain}::{op}" if custom else op
        attrs = self.channel_scale(n) if op in ("Mul", "Div") and kind == "mul" else {}
        self.emit(Node(name, kind, sig_in if kind != "transparent" else sig_in[:1], op=label, attrs=attrs),
                  n.output, out)
        for x in n.input:
            src = self.resolve(x) if x and not self.is_signal(x) else None
            if src is not None and src.root not in self.root_claims:
                self.unplaced.setdefault(src.root, []).append(f"{name} ({op})")

    # -- op handlers ----------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------


@dataclass
class OnnxInfo:
    """What the probe needs from the loader, kept on the graph as ``graph.onnx``."""

    model: onnx.ModelProto  # the parsed file (without external data); tensors are read from it
    base_dir: str  # the model's folder (external data, already checked to lie inside it)
    node_tensor: dict[str, str] = field(default_factory=dict)  # our Node name -> ONNX tensor
    value_shapes: dict[str, tuple] = field(default_factory=dict)  # tensor -> inferred shape
    embedding_inputs: dict[str, int] = field(default_factory=dict)  # graph input -> table rows
    unit_dims: dict[str, int] = field(default_factory=dict)  # Node name -> units dim of its output
    view_nodes: set[str] = field(default_factory=set)  # transparent nodes that only reshape
    has_external: bool = False


def _value_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    shapes: dict[str, tuple] = {}
    for vi in [*model.graph.input, *model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        if not tt.HasField("shape"):
            continue
        shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                                for d in tt.shape.dim)
    return shapes


def _inferred_shapes(sk: onnx.ModelProto, notes: list[str]) -> dict[str, tuple]:
    """ONNX shape inference with data propagation: a Reshape or Expand whose target is computed
    from ``Shape`` (what torch.onnx writes for ``x.view(b, -1, d)``, for an interpolated position
    table) gets its static sizes, so attention downstream knows its token count. Without it where
    the propagation fails; the declared shapes where inference fails altogether."""
    err = None
    for prop in (True, False):
        try:
            inferred = onnx.shape_inference.infer_shapes(sk, check_type=False, strict_mode=False, data_prop=prop)
            return _value_shapes(inferred)
        except Exception as exc:
            err = exc
    notes.append(f"ONNX shape inference failed ({_one_line(err)}); the probe uses declared shapes only")
    return _value_shapes(sk)


def load_onnx(path: str | Path) -> ModelGraph:
    """Read an ONNX file (with or without external data) into a ModelGraph."""
    path = Path(path)
    model = _read_model(path)
    base_dir = Path(os.path.abspath(path)).parent
    store = TensorStore(path, base_dir)
    for t in model.graph.initializer:
        store.add(t)  # checks every external reference before anything is read
    for where, t in _all_tensors(model):  # subgraphs, Constant nodes, functions: onnxruntime reads them
        if t.data_location == onnx.TensorProto.EXTERNAL:
            store._check_external(where, t)
    notes: list[str] = []
    for sparse in model.graph.sparse_initializer:
        notes.append(f"sparse initializer {sparse.values.name!r} is not analysed")
    sk = _skeleton(model)
    check_graph(path, sk)  # onnx.checker: cycles, duplicate outputs (exit 2 with its cause)
    if model.functions:
        try:
            sk = onnx.inliner.inline_local_functions(sk)
        except Exception as exc:
            notes.append(f"local functions could not be inlined ({_one_line(exc)}); ops inside "
                         "them are not placed")
    shapes = _inferred_shapes(sk, notes)
    b = _Builder(path, model, sk.graph, store, shapes)
    try:
        nodes = b.build()
    except TargetError:
        raise
    except RecursionError:
        raise TargetError(path, "graph too deeply nested to analyse") from None
    b.tied_copies(nodes)
    b.leftovers()
    for n in sk.graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            inner = sum(len(a.g.initializer) for a in n.attribute if a.type == onnx.AttributeProto.GRAPH)
            if inner:
                b.skipped.append((n.name or n.op_type, f"{inner} initializer(s) inside a {n.op_type} "
                                                      "subgraph are not analysed"))

    sources = b.sources

    def load_tensor(name: str) -> torch.Tensor:
        src = sources[name]
        t = store.tensor(src.root)
        for step in src.steps:
            t = _apply(step, t, store)
        return t

    graph = ModelGraph(target=str(path), format="onnx", params=b.params, load_tensor=load_tensor,
                       nodes=nodes, skipped=b.skipped, notes=notes + b.notes, stage_evidence=[],
                       source_path=str(path),
                       files_read={str(path.resolve()), *(e.path for e in store.external.values())})
    fold_preactivation_scales(graph)  # Sin(w0 * Gemm(x)): w0 is part of the applied weight
    annotate(graph, "onnx")
    graph.capture = "onnx"
    for name in b.folded:
        # In the source model a BatchNorm followed this layer (eval-mode export folded it in):
        # judge the weight as the layer before a normalisation, as the module audit does.
        p = graph.params[name]
        p.normalized_after, p.activation, p.activation_source = True, None, None
        p.notes.append("the exporter folded a BatchNorm into this layer (weights rescaled by "
                       "gamma / sqrt(running_var + eps)); judged as a layer followed by normalisation")
    if b.folded:
        graph.notes.append(f"{len(b.folded)} layer(s) have a BatchNorm folded in by the exporter "
                           "(eval-mode export); their scale is judged as normalised")
    graph.family = detect_family(graph)
    info = OnnxInfo(model=model, base_dir=str(base_dir), node_tensor=dict(b.node_tensor),
                    value_shapes=shapes, unit_dims=dict(b.unit_dims), view_nodes=set(b.view_nodes),
                    has_external=bool(store.external))
    graph_inputs = {i.name for i in sk.graph.input if b.is_signal(i.name)}
    for t, rows in b.gather_indices:
        for _ in range(16):  # back through shape-only ops to the graph input the ids come from
            n = b.op(t)
            if n is None or n.op_type not in _TRANSPARENT_OPS or not n.input:
                break
            t = n.input[0]
        if t in graph_inputs:
            info.embedding_inputs[t] = min(rows, info.embedding_inputs.get(t, rows))
    graph.onnx = info  # type: ignore[attr-defined]  # read by initaudit.probe.onnx_probe
    return graph
