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
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from initaudit.errors import TargetError
from initaudit.graph import Activation, ModelGraph, Node, OpKind, Param, ParamRole, annotate, torch_shape_fans
from initaudit.loaders.onnx_store import _FLOAT_TYPES, TensorStore, _dtype_name, _one_line, _read_model, _skeleton
from initaudit.loaders.torch_module import detect_family

# ---------------------------------------------------------------------------------------------
# Op tables

_ACT_OPS = {
    "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Selu": "selu", "Elu": "elu",
    "Celu": "celu", "Gelu": "gelu", "FastGelu": "gelu", "BiasGelu": "gelu", "QuickGelu": "gelu",
    "HardSigmoid": "hardsigmoid", "HardSwish": "hardswish", "Softplus": "softplus",
    "Softsign": "softsign", "Mish": "mish", "Swish": "silu",
}
# op -> positions of (scale, shift, running mean, running var) among the inputs
_NORM_OPS = {
    "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2, None, None),
    "InstanceNormalization": (1, 2, None, None), "GroupNormalization": (1, 2, None, None),
    "RMSNormalization": (1, None, None, None), "SimplifiedLayerNormalization": (1, None, None, None),
}
_TRANSPARENT_OPS = {
    "Reshape", "Transpose", "Flatten", "Identity", "Dropout", "Cast", "CastLike", "Squeeze",
    "Unsqueeze", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "LpPool",
    "GlobalLpPool", "Split", "Slice", "Expand", "Pad", "Resize", "Upsample", "DepthToSpace",
    "SpaceToDepth", "ReduceMean", "QuantizeLinear", "DequantizeLinear", "Contiguous",
}
# Transparent ops whose output holds the same values as their input (torch: a view of it).
_VIEW_OPS = {"Reshape", "Flatten", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Transpose"}
# Ops a weight may pass through between its initializer and the op that uses it.
_WEIGHT_CHAIN = {"Transpose", "Cast", "CastLike", "Identity", "Reshape", "Squeeze", "Unsqueeze",
                 "Flatten", "DequantizeLinear", "QuantizeLinear"}
_META_OPS = {"Shape", "Size"}  # outputs describe a tensor, they are not signal
_RANDOM_OPS = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
               "Multinomial", "Bernoulli"}
_RNN_GATES = {"LSTM": ("i", "o", "f", "c"), "GRU": ("z", "r", "h"), "RNN": ()}
_RNN_ACTS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "LeakyRelu": "leaky_relu",
             "Elu": "elu", "Softsign": "softsign", "Softplus": "softplus", "HardSigmoid": "hardsigmoid"}
_ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Pow", "Sqrt", "Cast", "Softplus", "Neg"}
_QUANTISED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "QGemm",
                  "DynamicQuantizeMatMul", "MatMulNBits"}

# ---------------------------------------------------------------------------------------------
# Weight sources: an initializer and the transforms on the way to the op that uses it


@dataclass
class _Source:
    root: str
    steps: list[tuple]  # ("transpose", perm) | ("reshape", shape) | ("squeeze", axes) | ...
    shape: tuple[int, ...]  # effective shape, after the steps

    @property
    def key(self) -> tuple:
        return (self.root, tuple((s[0], repr(s[1:])) for s in self.steps))


def _apply_shape(step: tuple, shape: tuple[int, ...]) -> tuple[int, ...]:
    kind = step[0]
    if kind == "transpose":
        perm = step[1] or tuple(reversed(range(len(shape))))
        return tuple(shape[p] for p in perm)
    if kind == "reshape":
        target, allowzero = list(step[1]), step[2]
        out = [shape[i] if (d == 0 and not allowzero and i < len(shape)) else d
               for i, d in enumerate(target)]
        if -1 in out:
            known = math.prod(d for d in out if d != -1)
            out[out.index(-1)] = math.prod(shape) // known if known else 0
        if math.prod(out) != math.prod(shape):
            raise ValueError("reshape size mismatch")
        return tuple(out)
    if kind == "squeeze":
        axes = {a % len(shape) for a in step[1]} if step[1] else {i for i, d in enumerate(shape) if d == 1}
        return tuple(d for i, d in enumerate(shape) if i not in axes)
    if kind == "unsqueeze":
        out = list(shape)
        rank = len(shape) + len(step[1])
        for a in sorted(a % rank for a in step[1]):
            out.insert(a, 1)
        return tuple(out)
    if kind == "flatten":
        axis = step[1] % len(shape) if shape else 0
        return (math.prod(shape[:axis]), math.prod(shape[axis:]))
    if kind == "index":
        return shape[1:]
    return shape  # cast, dequant, scale


def _apply(step: tuple, t: torch.Tensor, store: TensorStore) -> torch.Tensor:
    kind = step[0]
    if kind == "transpose":
        perm = step[1] or tuple(reversed(range(t.dim())))
        return t.permute(*perm)
    if kind in ("reshape", "squeeze", "unsqueeze", "flatten"):
        return t.reshape(_apply_shape(step, tuple(t.shape)))
    if kind == "cast":
        return t if t.is_floating_point() else t.to(torch.float32)
    if kind == "index":
        return t[step[1]]
    if kind == "scale":
        return t.to(torch.float32) * step[1]
    if kind == "dequant":
        _, scale_name, zp_name, axis, block = step
        scale = torch.from_numpy(np.asarray(store.array(scale_name), dtype=np.float32))
        x = t.to(torch.float32)
        zp = None
        if zp_name:
            zp = torch.from_numpy(np.asarray(store.array(zp_name)).astype(np.float32))
        if scale.numel() > 1:
            axis = axis % x.dim()
            if block and block > 0:
                scale = scale.repeat_interleave(block, dim=axis).narrow(axis, 0, x.shape[axis])
                zp = zp.repeat_interleave(block, dim=axis).narrow(axis, 0, x.shape[axis]) \
                    if zp is not None and zp.numel() > 1 else zp
            else:
                view = [1] * x.dim()
                view[axis] = -1
                scale = scale.reshape(view)
                zp = zp.reshape(view) if zp is not None and zp.numel() > 1 else zp
        if zp is not None:
            x = x - zp
        return x * scale
    return t


# ---------------------------------------------------------------------------------------------
# Exporter idioms collapsed into one node


@dataclass
class _Pattern:
    kind: str  # "act" | "norm"
    name: str  # node name to use
    root: str  # input tensor
    output: str  # output tensor
    members: set[int]  # ONNX node indices absorbed
    activation: Activation | None = None
    op: str = ""
    scale: str | None = None  # tensor names of gamma / beta for a norm
    shift: str | None = None


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class _Builder:
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

    def scalar(self, t: str) -> float | None:
        """Value of a scalar constant (initializer, Constant node, through Cast/Identity)."""
        src = self.resolve(t)
        if src is None:
            return None
        arr = self.store.small(src.root)
        if arr is None or arr.size != 1:
            return None
        try:
            return float(np.asarray(arr, dtype=np.float64).reshape(-1)[0])
        except (TypeError, ValueError):
            return None

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

    def resolve(self, t: str) -> _Source | None:
        """The initializer behind a weight operand, and the transforms on the way."""
        if not t or not self.is_const(t):
            return None
        chain: list[onnx.NodeProto] = []
        cur = t
        while cur not in self.store:
            n = self.op(cur)
            if n is None or n.op_type not in _WEIGHT_CHAIN or not n.input or len(chain) > 8:
                return None
            chain.append(n)
            cur = n.input[0]
        root = cur
        shape = self.store.shape(root)
        steps: list[tuple] = []
        try:
            quantised = False  # a float weight through QuantizeLinear -> DequantizeLinear
            for n in reversed(chain):
                if n.op_type == "QuantizeLinear":
                    quantised = True
                    continue
                if n.op_type == "DequantizeLinear" and quantised:
                    quantised = False
                    continue
                step = self._chain_step(n)
                if step is None:
                    return None
                if step[0] != "identity":
                    shape = _apply_shape(step, shape)
                    steps.append(step)
            if quantised:
                return None  # quantised and consumed as integers (QLinear* ops)
        except (ValueError, IndexError, ZeroDivisionError):
            return None
        return _Source(root, steps, shape)

    def _chain_step(self, n: onnx.NodeProto) -> tuple | None:
        op = n.op_type
        if op in ("Identity",):
            return ("identity",)
        if op in ("Cast", "CastLike"):
            return ("cast",)
        if op == "Transpose":
            perm = _attr(n, "perm")
            return ("transpose", tuple(perm) if perm else None)
        if op == "Reshape":
            shape = self.store.small(n.input[1]) if len(n.input) > 1 and n.input[1] in self.store else None
            if shape is None:
                src = self.resolve(n.input[1]) if len(n.input) > 1 else None
                shape = self.store.small(src.root) if src is not None and not src.steps else None
            if shape is None:
                return None
            return ("reshape", tuple(int(d) for d in np.asarray(shape).reshape(-1)),
                    bool(_attr(n, "allowzero", 0)))
        if op in ("Squeeze", "Unsqueeze"):
            axes = _attr(n, "axes")
            if axes is None and len(n.input) > 1 and n.input[1]:
                src = self.resolve(n.input[1])
                arr = self.store.small(src.root) if src is not None else None
                if arr is None:
                    return None
                axes = [int(a) for a in np.asarray(arr).reshape(-1)]
            if axes is None and op == "Unsqueeze":
                return None
            return (op.lower(), tuple(axes or ()))
        if op == "Flatten":
            return ("flatten", int(_attr(n, "axis", 1)))
        if op == "DequantizeLinear":
            scale = self.resolve(n.input[1]) if len(n.input) > 1 else None
            zp = self.resolve(n.input[2]) if len(n.input) > 2 and n.input[2] else None
            if scale is None or scale.steps or (zp is not None and zp.steps):
                return None
            return ("dequant", scale.root, zp.root if zp else None, int(_attr(n, "axis", 1)),
                    int(_attr(n, "block_size", 0)))
        return None

    # -- params ---------------------------------------------------------------------------
    def claim(self, src: _Source, name: str, node: str, op: str, kind: OpKind, role: ParamRole,
              *, extra_steps: Iterable[tuple] = (), shape: tuple[int, ...] | None = None,
              **kw) -> tuple[str, bool]:
        """Param for ``src`` (made on first use): (name, made_now). A tensor used again the same
        way is the same Param; used another way, it keeps its first role and the later use is
        noted (tied weights appear once)."""
        steps = [*src.steps, *extra_steps]
        key = (src.root, tuple((s[0], repr(s[1:])) for s in steps), kind, role)
        if key in self.claims:
            existing = self.params[self.claims[key]]
            if node != existing.layer:
                existing.notes.append(f"also used by {node} ({op})")
            return self.claims[key], False
        if self.root_claims.get(src.root) and not any(
                n.startswith(f"{src.root}[") for n in self.root_claims[src.root]):
            first = self.params[self.root_claims[src.root][0]]
            first.notes.append(f"also used by {node} ({op}) as {kind.value} {role.value}")
            if node not in first.aliases:
                first.aliases.append(node)
            return first.name, False
        st = self.store.protos[src.root]
        p = Param(name=name, shape=tuple(shape if shape is not None else src.shape),
                  dtype=_dtype_name(st.data_type), layer=node, op=op, kind=kind, role=role, **kw)
        if steps:
            what = ", ".join(dict.fromkeys(s[0] for s in steps))
            p.notes.append(f"stored as {src.root} {list(self.store.shape(src.root))}; "
                           f"analysed after {what}")
        self.params[name] = p
        self.sources[name] = _Source(src.root, steps, p.shape)
        for step in steps:  # quantisation scales and zero points belong to this weight
            if step[0] == "dequant":
                for aux in step[1:3]:
                    if aux:
                        self.root_claims.setdefault(aux, [])
        self.claims[key] = name
        self.root_claims.setdefault(src.root, []).append(name)
        return name, True

    def hint(self, i: int) -> str | None:
        """The PyTorch module an exporter recorded for a node (classic: the node name's scope;
        dynamo: the name_scopes metadata)."""
        n = self.nodes[i]
        for prop in n.metadata_props:
            if prop.key == "pkg.torch.onnx.name_scopes":
                try:
                    scopes = [s.strip().strip("'\"") for s in prop.value.strip("[]").split(",")]
                except Exception:
                    return None
                scopes = [s for s in scopes if s]
                return scopes[-2] if len(scopes) >= 2 else None
        if n.name.startswith("/") and n.name.count("/") >= 2:
            parts = n.name.strip("/").split("/")
            return parts[-2] if len(parts) >= 2 else None
        return None

    def folded_norm(self, i: int, weight: str, bias: str | None) -> bool:
        """True when the exporter folded a BatchNorm into this layer: the dynamo exporter keeps
        the weight's name but records the BatchNorm as the node's origin; the classic one
        renames both the weight and the bias it creates (onnx::Conv_N)."""
        n = self.nodes[i]
        for prop in n.metadata_props:
            if prop.key in ("pkg.torch.onnx.class_hierarchy", "pkg.torch.onnx.fx_node") and \
                    ("batchnorm" in prop.value.lower() or "batch_norm" in prop.value.lower()):
                return True
        if n.op_type == "MatMul" or bias is None:
            return False
        generated = "::" in weight and "::" in bias
        return generated and n.name.startswith("/")

    def _hint_note(self, pname: str, i: int) -> None:
        p = self.params[pname]
        h = self.hint(i)
        generated = "::" in pname or pname.startswith(("val_", "_val_")) or pname.isdigit()
        if h and generated:
            p.notes.append(f"exported from PyTorch module '{h}' (initializer named {pname!r} by the exporter)")

    # -- patterns -------------------------------------------------------------------------
    def find_patterns(self) -> dict[int, _Pattern]:
        found: dict[int, _Pattern] = {}
        for i, n in enumerate(self.nodes):
            if i in found or n.op_type not in ("Erf", "Tanh", "Sigmoid", "HardSigmoid", "ReduceMean"):
                continue
            pat = self._norm_pattern(i) if n.op_type == "ReduceMean" else self._act_pattern(i)
            if pat is not None and not any(m in found for m in pat.members):
                for m in pat.members:
                    found[m] = pat
        return found

    def _cone(self, t: str, root: str, members: set[int], depth: int = 0) -> bool:
        """True when ``t`` is an elementwise function of ``root`` and constants only; collects
        the nodes in between."""
        if t == root or self.is_const(t):
            return True
        i = self.producer.get(t)
        if i is None or depth > 8 or self.nodes[i].op_type not in _ELEMENTWISE:
            return False
        if i in members:
            return True
        members.add(i)
        return all(self._cone(x, root, members, depth + 1) for x in self.nodes[i].input if x)

    def _internal_ok(self, members: set[int], output: str) -> bool:
        """Every tensor made inside the pattern is used only inside it (except the output)."""
        for m in members:
            for o in self.nodes[m].output:
                if not o or o == output:
                    continue
                if o in self.graph_outputs or any(u not in members for u in self.consumers.get(o, [])):
                    return False
        return True

    def _act_pattern(self, ci: int) -> _Pattern | None:
        core = self.nodes[ci]
        if not core.input or not self.is_signal(core.input[0]):
            return None
        members = {ci}
        cur = core.output[0]
        added_one = False
        u = self.sole_consumer(cur)
        if u is not None and self.nodes[u].op_type == "Add" and core.op_type in ("Erf", "Tanh"):
            other = [x for x in self.nodes[u].input if x != cur]
            if len(other) == 1 and self.scalar(other[0]) is not None:
                members.add(u)
                cur = self.nodes[u].output[0]
                added_one = True
        root = None
        steps = 0
        while steps < 4:
            u = self.sole_consumer(cur)
            if u is None or self.nodes[u].op_type not in ("Mul", "Div"):
                break
            un = self.nodes[u]
            other = [x for x in un.input if x != cur]
            if len(other) != 1:
                break
            o = other[0]
            if self.is_const(o):
                pass
            elif root is None and un.op_type == "Mul" and self.is_signal(o):
                root, extra = self._multiplier_root(o, core.input[0])
                if root is None:
                    break
                members |= extra
            else:
                break
            members.add(u)
            cur = un.output[0]
            steps += 1
        if root is None:
            return None
        cone: set[int] = set()
        if not self._cone(core.input[0], root, cone):
            return None
        members |= cone
        ops = {self.nodes[m].op_type for m in cone}
        if core.op_type == "Erf":
            if not added_one:
                return None
            act = Activation("gelu")
        elif core.op_type == "Tanh":
            if "Softplus" in ops:
                act = Activation("mish")
            elif added_one and ("Pow" in ops or "Mul" in ops):
                act = Activation("gelu")
            else:
                return None
        elif core.op_type == "Sigmoid":
            scale = None
            for m in cone:
                if self.nodes[m].op_type == "Mul":
                    vals = [self.scalar(x) for x in self.nodes[m].input]
                    scale = next((v for v in vals if v is not None), scale)
            act = Activation("gelu") if scale is not None and abs(scale - 1.702) < 0.01 else Activation("silu")
        else:  # HardSigmoid
            act = Activation("hardswish")
        if not self._internal_ok(members, cur):
            return None
        return _Pattern("act", self.node_name(ci), root, cur, members, activation=act,
                        op=f"{act.name}(decomposed)")

    def _multiplier_root(self, o: str, core_in: str) -> tuple[str | None, set[int]]:
        """The x in x * f(x): ``o`` itself, or the input of a x*0.5 / x/2 feeding the product."""
        if self._cone(core_in, o, set()):
            return o, set()
        pi = self.producer.get(o)
        if pi is not None and self.nodes[pi].op_type in ("Mul", "Div"):
            pn = self.nodes[pi]
            sig = [x for x in pn.input if self.is_signal(x)]
            consts = [x for x in pn.input if self.is_const(x)]
            if len(sig) == 1 and len(consts) == 1 and self.sole_consumer(o) is not None \
                    and self._cone(core_in, sig[0], set()):
                return sig[0], {pi}
        return None, set()

    def _square_of(self, t: str) -> str | None:
        n = self.op(t)
        if n is None:
            return None
        if n.op_type == "Pow" and len(n.input) > 1 and self.scalar(n.input[1]) == 2.0:
            return n.input[0]
        if n.op_type == "Mul" and len(n.input) == 2 and n.input[0] == n.input[1]:
            return n.input[0]
        return None

    def _norm_pattern(self, ri: int) -> _Pattern | None:
        r2 = self.nodes[ri]
        d = self._square_of(r2.input[0]) if r2.input else None
        if d is None or not self.is_signal(d):
            return None
        members = {ri, self.producer[r2.input[0]]}
        # LayerNorm: d = x - mean(x); RMSNorm: d = x
        dn = self.op(d)
        root, op = d, "RMSNorm(decomposed)"
        if dn is not None and dn.op_type == "Sub" and len(dn.input) == 2:
            mn = self.op(dn.input[1])
            if mn is not None and mn.op_type == "ReduceMean" and mn.input and mn.input[0] == dn.input[0]:
                root, op = dn.input[0], "LayerNorm(decomposed)"
                members |= {self.producer[d], self.producer[dn.input[1]]}
        # mean(d^2) -> (+eps) -> sqrt / pow(-0.5) / reciprocal -> d / s  or  d * r
        cur = r2.output[0]
        for _ in range(5):
            u = self.sole_consumer(cur)
            if u is None:
                return None
            un = self.nodes[u]
            if un.op_type in ("Add", "Sqrt", "Reciprocal", "Pow", "Cast") and (
                    un.op_type in ("Sqrt", "Reciprocal", "Cast") or any(self.is_const(x) for x in un.input)):
                members.add(u)
                cur = un.output[0]
                continue
            if un.op_type in ("Div", "Mul") and d in un.input and cur in un.input:
                members.add(u)
                cur = un.output[0]
                break
            return None
        else:
            return None
        scale = shift = None
        for want in ("Mul", "Add"):
            u = self.sole_consumer(cur)
            if u is not None and self.nodes[u].op_type == "Cast":
                members.add(u)
                cur = self.nodes[u].output[0]
                u = self.sole_consumer(cur)
            if u is None or self.nodes[u].op_type != want:
                continue
            other = [x for x in self.nodes[u].input if x != cur]
            if len(other) == 1 and self.resolve(other[0]) is not None:
                members.add(u)
                cur = self.nodes[u].output[0]
                if want == "Mul":
                    scale = other[0]
                else:
                    shift = other[0]
        if not self._internal_ok(members, cur):
            return None
        name = self.node_name(max(m for m in members if self.nodes[m].op_type in ("Div", "Mul")
                                  and d in self.nodes[m].input))
        return _Pattern("norm", name, root, cur, members, op=op, scale=scale, shift=shift)

    # -- the dataflow ---------------------------------------------------------------------
    def src_nodes(self, tensors: Iterable[str]) -> list[str]:
        out = []
        for t in tensors:
            if t and self.is_signal(t) and t in self.tensor_node and self.tensor_node[t] not in out:
                out.append(self.tensor_node[t])
        return out

    def emit(self, node: Node, outputs: Iterable[str], represents: str | None = None) -> Node:
        self.out_nodes.append(node)
        for o in outputs:
            if o:
                self.tensor_node[o] = node.name
        if represents:
            self.node_tensor[node.name] = represents
        return node

    def build(self) -> list[Node]:
        self.classify()
        patterns = self.find_patterns()
        for inp in self.g.input:
            if self.is_signal(inp.name):
                self.emit(Node(self.unique(inp.name), "input"), [inp.name], inp.name)
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

    def emit_pattern(self, pat: _Pattern) -> None:
        name = self.unique(pat.name)
        ins = self.src_nodes([pat.root])
        if pat.kind == "act":
            self.emit(Node(name, "act", ins, activation=pat.activation), [pat.output], pat.output)
            return
        self.unit_dims[name] = -1
        norm_params = []
        for t, role in ((pat.scale, ParamRole.NORM_SCALE), (pat.shift, ParamRole.NORM_SHIFT)):
            src = self.resolve(t) if t else None
            if src is not None:
                pname, _ = self.claim(src, src.root, name, pat.op, OpKind.NORM, role)
                if self.params[pname].role is role:
                    norm_params.append(pname)
        self.emit(Node(name, "norm", ins, norm_params=tuple(norm_params)), [pat.output], pat.output)

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
        elif op in ("Add", "Sum"):
            sig = [x for x in n.input if self.is_signal(x)]
            if len(sig) >= 2:
                self.emit(Node(name, "add", sig_in), n.output, out)
                return
            if op == "Add" and len(sig) == 1:
                self.attach_bias(n, sig[0])
                self.emit(Node(name, "transparent", self.src_nodes(sig)), n.output, out)
                return
        elif op in _TRANSPARENT_OPS:
            if op in _VIEW_OPS:
                self.view_nodes.add(name)
            self.emit(Node(name, "transparent", self.src_nodes(n.input[:1])), n.output, out)
            return
        elif op in _QUANTISED_OPS:
            self.skipped.append((name, f"quantised op {op} is not analysed (its integer weights are "
                                       "not judged)"))
        self.emit(Node(name, "other", sig_in), n.output, out)
        for x in n.input:
            src = self.resolve(x) if x and not self.is_signal(x) else None
            if src is not None and src.root not in self.root_claims:
                self.unplaced.setdefault(src.root, []).append(f"{name} ({op})")

    # -- op handlers ----------------------------------------------------------------------
    def emit_matmul(self, i: int, n: onnx.NodeProto, name: str) -> bool:
        op = n.op_type
        a, b = (n.input[0], n.input[1]) if len(n.input) >= 2 else (None, None)
        if a is None:
            return False
        sa, sb = self.resolve(a), self.resolve(b)
        if (sa is None) == (sb is None):
            return False  # no constant operand (attention scores) or both (a folded constant)
        extra: list[tuple] = []
        if op in ("Gemm", "FusedMatMul"):
            alpha = float(_attr(n, "alpha", 1.0))
            if alpha != 1.0:
                extra.append(("scale", alpha))
        if sb is not None:  # x @ W: W is (in, out) unless Gemm transposes it
            src, signal = sb, a
            trans = bool(_attr(n, "transB", 0)) if op in ("Gemm", "FusedMatMul") else False
            if len(src.shape) < 2:
                return False
            out_first = trans  # stored (out, in)
        else:  # W @ x
            src, signal = sa, b
            trans = bool(_attr(n, "transA", 0)) if op in ("Gemm", "FusedMatMul") else False
            if len(src.shape) < 2:
                return False
            out_first = not trans
        shape = src.shape
        rank = len(shape)
        if out_first:
            units_dim, fan_in, fan_out = rank - 2, shape[-1], shape[-2]
        else:
            units_dim, fan_in, fan_out = rank - 1, shape[-2], shape[-1]
        init_in, init_out = torch_shape_fans(shape)
        pname, made = self.claim(src, src.root, name, op, OpKind.LINEAR, ParamRole.WEIGHT,
                                 extra_steps=extra, fan_in=fan_in, fan_out=fan_out,
                                 init_fan_in=init_in, init_fan_out=init_out, units_dim=units_dim)
        if self.params[pname].kind is not OpKind.LINEAR:
            return False  # the tensor already plays another role (a tied embedding): like torch
        if made:
            self._hint_note(pname, i)
            if extra:
                self.params[pname].notes.append(f"Gemm alpha={extra[0][1]:g} applied")
        bias = None
        if op == "Gemm" and len(n.input) > 2 and n.input[2]:
            bias = self.bias_param(n.input[2], name, op, fan_out)
        if made and self.folded_norm(i, pname, bias):
            self.folded.add(pname)
        node = Node(name, "layer", self.src_nodes([signal]), param=pname, bias=bias)
        self.layer_units[name] = fan_out
        self.unit_dims[name] = -1 if sb is not None else (0 if op == "Gemm" else -2)
        self.emit(node, n.output, n.output[0])
        return True

    def emit_conv(self, i: int, n: onnx.NodeProto, name: str) -> bool:
        op = n.op_type
        src = self.resolve(n.input[1]) if len(n.input) > 1 else None
        if src is None or len(src.shape) < 3:
            return False
        shape = src.shape
        groups = int(_attr(n, "group", 1))
        k = math.prod(shape[2:])
        init_in, init_out = torch_shape_fans(shape)
        if op == "Conv":
            kind, units_dim = OpKind.CONV, 0
            fan_in, fan_out = shape[1] * k, shape[0] * k  # DESIGN §5: in/groups via the stored dim
            units = shape[0]
        else:
            strides = _attr(n, "strides") or [1] * (len(shape) - 2)
            overlap = max(1, k // math.prod(strides))  # kernel taps that land on one output pixel
            kind, units_dim = OpKind.CONV_TRANSPOSE, 1
            fan_in, fan_out = (shape[0] // groups) * overlap, shape[1] * k
            units = shape[1] * groups
        pname, made = self.claim(src, src.root, name, op, kind, ParamRole.WEIGHT, fan_in=fan_in,
                                 fan_out=fan_out, init_fan_in=init_in, init_fan_out=init_out,
                                 units_dim=units_dim)
        if self.params[pname].kind is not kind:
            return False
        if made:
            self._hint_note(pname, i)
            if groups > 1:
                self.params[pname].notes.append(f"group={groups}")
        bias = self.bias_param(n.input[2], name, op, units) if len(n.input) > 2 and n.input[2] else None
        if made and self.folded_norm(i, pname, bias):
            self.folded.add(pname)
        self.layer_units[name] = units
        self.unit_dims[name] = 1
        self.emit(Node(name, "layer", self.src_nodes(n.input[:1]), param=pname, bias=bias),
                  n.output, n.output[0])
        return True

    def bias_param(self, t: str, node: str, op: str, units: int) -> str | None:
        src = self.resolve(t)
        if src is None or math.prod(src.shape) not in (units, 1):
            return None
        pname, _ = self.claim(src, src.root, node, op, OpKind.OTHER, ParamRole.BIAS)
        return pname if self.params[pname].role is ParamRole.BIAS else None

    def attach_bias(self, n: onnx.NodeProto, signal: str) -> None:
        """MatMul + Add(bias): the classic way exporters spell a Linear."""
        layer = self.tensor_node.get(signal)
        const = [x for x in n.input if x != signal]
        if layer is None or len(const) != 1 or layer not in self.layer_units:
            return
        node = next((x for x in reversed(self.out_nodes) if x.name == layer), None)
        if node is None or node.bias is not None or node.kind != "layer":
            return
        if self.node_tensor.get(layer) != signal:
            return
        p = self.params.get(node.param or "")
        bias = self.bias_param(const[0], layer, p.op if p else "Add", self.layer_units[layer])
        if bias is not None:
            node.bias = bias
            self.node_tensor[layer] = n.output[0]  # the pre-activation includes the bias

    def emit_rnn(self, i: int, n: onnx.NodeProto, name: str) -> None:
        op = n.op_type
        hidden = int(_attr(n, "hidden_size", 0) or 0)
        direction = _attr(n, "direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else str(direction)
        ndir = 2 if direction == "bidirectional" else 1
        gates = _RNN_GATES[op]
        acts = [a.decode() if isinstance(a, bytes) else str(a) for a in (_attr(n, "activations") or [])]
        # the activation applied to the cell output (RNN: f; LSTM/GRU: g, the candidate)
        act_name = "tanh"
        if acts:
            pick = acts[0] if op == "RNN" else acts[1] if len(acts) > 1 else acts[0]
            act_name = _RNN_ACTS.get(pick, "tanh")
        act = Activation(act_name)
        g = max(1, len(gates))
        for pos, kind, role in ((1, OpKind.RECURRENT_INPUT, ParamRole.WEIGHT),
                                (2, OpKind.RECURRENT_HIDDEN, ParamRole.WEIGHT),
                                (3, OpKind.RECURRENT_INPUT, ParamRole.BIAS)):
            if len(n.input) <= pos or not n.input[pos]:
                continue
            src = self.resolve(n.input[pos])
            if src is None or len(src.shape) < 2 or src.shape[0] != ndir:
                continue
            if not hidden:
                hidden = src.shape[1] // g if role is ParamRole.WEIGHT else src.shape[1] // (2 * g)
            for d in range(ndir):
                pname = src.root if ndir == 1 else f"{src.root}[dir{d}]"
                common: dict[str, Any] = {}
                if role is ParamRole.WEIGHT:
                    fan_in = src.shape[2]
                    common = dict(fan_in=fan_in, fan_out=hidden, gates=gates, init_fan_in=fan_in,
                                  init_fan_out=hidden, activation=act, activation_source="onnx")
                made_name, made = self.claim(src, pname, name, op, kind, role,
                                             extra_steps=[("index", d)], shape=src.shape[1:], **common)
                if made and ndir == 2:
                    self.params[made_name].notes.append(
                        f"direction {d} ({'forward' if d == 0 else 'reverse'}) of {src.root}")
                if made:
                    self._hint_note(made_name, i)
        for pos in (4, 5, 6, 7):
            if len(n.input) > pos and n.input[pos]:
                src = self.resolve(n.input[pos])
                if src is not None and pos == 7:
                    self.claim(src, src.root, name, op, OpKind.OTHER, ParamRole.OTHER)
                elif src is not None:
                    self.root_claims.setdefault(src.root, [])  # initial state / lengths: not a param
        self.unit_dims[name] = -1
        self.emit(Node(name, "other", self.src_nodes(n.input[:1])), n.output, n.output[0])

    def emit_gather(self, i: int, n: onnx.NodeProto, name: str) -> bool:
        src = self.resolve(n.input[0])
        if src is None or len(src.shape) != 2 or int(_attr(n, "axis", 0)) != 0 \
                or len(n.input) < 2 or not self.is_signal(n.input[1]):
            return False
        pname, made = self.claim(src, src.root, name, "Gather", OpKind.EMBEDDING, ParamRole.WEIGHT,
                                 fan_in=src.shape[1], fan_out=src.shape[0],
                                 init_fan_in=src.shape[1], init_fan_out=src.shape[0])
        if self.params[pname].kind is not OpKind.EMBEDDING:
            return False
        if made:
            self._hint_note(pname, i)
        self.gather_indices.append((n.input[1], src.shape[0]))
        self.unit_dims[name] = -1
        self.emit(Node(name, "embedding", self.src_nodes(n.input[1:2]), param=pname), n.output, n.output[0])
        return True

    def emit_norm(self, i: int, n: onnx.NodeProto, name: str) -> None:
        op = n.op_type
        roles = (ParamRole.NORM_SCALE, ParamRole.NORM_SHIFT, ParamRole.RUNNING_MEAN, ParamRole.RUNNING_VAR)
        norm_params = []
        for pos, role in zip(_NORM_OPS[op], roles):
            if pos is None or len(n.input) <= pos or not n.input[pos]:
                continue
            src = self.resolve(n.input[pos])
            if src is None:
                continue
            pname, _ = self.claim(src, src.root, name, op, OpKind.NORM, role)
            if self.params[pname].role is role and role in (ParamRole.NORM_SCALE, ParamRole.NORM_SHIFT):
                norm_params.append(pname)
        if op in ("BatchNormalization", "InstanceNormalization", "GroupNormalization"):
            self.unit_dims[name] = 1
        elif op in ("LayerNormalization", "RMSNormalization", "SimplifiedLayerNormalization"):
            self.unit_dims[name] = -1
        self.emit(Node(name, "norm", self.src_nodes(n.input[:1]), norm_params=tuple(norm_params)),
                  n.output, n.output[0])

    def activation(self, n: onnx.NodeProto, name: str) -> Activation | None:
        op = n.op_type
        if op in _ACT_OPS:
            return Activation(_ACT_OPS[op])
        if op == "LeakyRelu":
            alpha = float(_attr(n, "alpha", 0.01))
            return Activation("leaky_relu", float(f"{alpha:.7g}"))  # attributes are float32
        if op == "PRelu":
            src = self.resolve(n.input[1]) if len(n.input) > 1 else None
            slope = None
            if src is not None:
                self.claim(src, src.root, name, op, OpKind.OTHER, ParamRole.OTHER)
                try:
                    slope = float(self.store.tensor(src.root).float().mean())
                except TargetError:
                    raise
                except Exception:
                    slope = None
            return Activation("prelu", slope)
        if op == "Clip":
            lo = _attr(n, "min")
            hi = _attr(n, "max")
            if len(n.input) > 1 and n.input[1]:
                lo = self.scalar(n.input[1])
            if len(n.input) > 2 and n.input[2]:
                hi = self.scalar(n.input[2])
            if lo == 0 and hi == 6:
                return Activation("relu6")
            if lo == 0 and hi is None:
                return Activation("relu")
            if lo == -1 and hi == 1:
                return Activation("hardtanh")
            return None
        return None

    # -- tied weights stored twice ---------------------------------------------------------
    def tied_copies(self, nodes: list[Node]) -> None:
        """An LM head tied to the embedding is stored twice by the exporters (the table and a
        transposed copy for the MatMul): keep the table, drop the copy (tied weights appear
        once), and treat the head as torch does for a tied Linear."""
        tables = [p for p in self.params.values() if p.kind is OpKind.EMBEDDING and len(p.shape) == 2]
        if not tables:
            return
        gen = np.random.default_rng(0)
        for p in [p for p in self.params.values() if p.kind is OpKind.LINEAR and len(p.shape) == 2]:
            src = self.sources[p.name]
            if src.steps:
                continue
            for emb in tables:
                esrc = self.sources[emb.name]
                if esrc.steps or esrc.root == src.root or sorted(p.shape) != sorted(emb.shape):
                    continue
                try:
                    a, b = self.store.view(src.root), self.store.view(esrc.root)
                    rows = gen.integers(0, emb.shape[0], 64)
                    cols = gen.integers(0, emb.shape[1], 64)
                    be = np.asarray(b[rows, cols])
                    same_t = p.shape == emb.shape[::-1] and np.array_equal(np.asarray(a[cols, rows]), be)
                    same = p.shape == emb.shape and np.array_equal(np.asarray(a[rows, cols]), be)
                except TargetError:
                    raise
                except Exception:
                    continue
                if not (same_t or same) or np.all(be == be.reshape(-1)[0]):
                    continue
                del self.params[p.name], self.sources[p.name]
                emb.aliases.append(p.name)
                emb.notes.append(f"also stored as {p.name} {list(p.shape)}"
                                 f"{' (transposed)' if same_t else ''}, used by {p.layer}: tied "
                                 "weights, analysed once")
                self.notes.append(f"{p.name} is a copy of {emb.name} the exporter stored for the tied "
                                  f"layer {p.layer}; analysed once, as {emb.name}")
                for node in nodes:
                    if node.param == p.name:
                        node.kind, node.param = "other", None
                break

    # -- leftovers ------------------------------------------------------------------------
    def subgraph_uses(self) -> set[str]:
        """Outer-scope names read inside control-flow subgraphs."""
        def walk(graphs) -> set[str]:
            names: set[str] = set()
            for sub in graphs:
                local = {i.name for i in sub.input} | {t.name for t in sub.initializer} | \
                    {o for n in sub.node for o in n.output}
                for n in sub.node:
                    names |= {i for i in n.input if i and i not in local}
                    names |= {x for x in walk(_subgraphs(n)) if x not in local}
            return names

        return walk(g for n in self.nodes for g in _subgraphs(n))

    def leftovers(self) -> None:
        """Float initializers no op placed: kept (NaN is still found) with what uses them."""
        qparams = {n.input[i] for n in self.nodes if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                   for i in (1, 2) if len(n.input) > i}
        for t in self.g.initializer:
            if t.name in self.root_claims or t.data_type not in _FLOAT_TYPES or math.prod(t.dims) < 2 \
                    or t.name in qparams:
                continue
            users = self.unplaced.get(t.name) or sorted({
                self.node_name(u) + f" ({self.nodes[u].op_type})"
                for u in self.consumers.get(t.name, [])})
            if not users and t.name not in self.graph_outputs:
                inner = t.name in self.subgraph_uses()
                self.skipped.append((t.name, "used only inside a control-flow subgraph (If/Loop/Scan), "
                                             "which is not analysed" if inner else "initializer used by no node"))
                continue
            p = Param(name=t.name, shape=tuple(int(d) for d in t.dims), dtype=_dtype_name(t.data_type),
                      layer=users[0].split(" (")[0] if users else t.name,
                      op=users[0].split(" (")[-1].rstrip(")") if users else "?",
                      kind=OpKind.OTHER, role=ParamRole.OTHER)
            used_by = ", ".join(users[:3]) or "the graph output"
            p.notes.append(f"not a weight of an op initaudit knows; used by {used_by}")
            self.params[t.name] = p
            self.sources[t.name] = _Source(t.name, [], p.shape)


def _all_tensors(model: onnx.ModelProto) -> Iterable[tuple[str, onnx.TensorProto]]:
    """Every tensor stored anywhere in the model (graph and subgraph initializers, sparse
    initializers, tensor attributes of nodes in graphs, subgraphs and local functions)."""
    def nodes(ns: Iterable[onnx.NodeProto]):
        for n in ns:
            for a in n.attribute:
                if a.type == onnx.AttributeProto.TENSOR:
                    yield f"{n.name or n.op_type}.{a.name}", a.t
                elif a.type == onnx.AttributeProto.TENSORS:
                    yield from ((f"{n.name or n.op_type}.{a.name}", t) for t in a.tensors)
            for sub in _subgraphs(n):
                yield from graph(sub)

    def graph(g: onnx.GraphProto):
        yield from ((t.name, t) for t in g.initializer)
        for sp in g.sparse_initializer:
            yield sp.values.name, sp.values
            yield sp.values.name + ".indices", sp.indices
        yield from nodes(g.node)

    yield from nodes(model.graph.node)
    for sp in model.graph.sparse_initializer:
        yield sp.values.name, sp.values
        yield sp.values.name + ".indices", sp.indices
    for f in model.functions:
        yield from nodes(f.node)


def _subgraphs(n: onnx.NodeProto) -> list[onnx.GraphProto]:
    out: list[onnx.GraphProto] = []
    for a in n.attribute:
        if a.type == onnx.AttributeProto.GRAPH:
            out.append(a.g)
        elif a.type == onnx.AttributeProto.GRAPHS:
            out.extend(a.graphs)
    return out


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
    if model.functions:
        try:
            sk = onnx.inliner.inline_local_functions(sk)
        except Exception as exc:
            notes.append(f"local functions could not be inlined ({_one_line(exc)}); ops inside "
                         "them are not placed")
    try:
        inferred = onnx.shape_inference.infer_shapes(sk, check_type=False, strict_mode=False)
        shapes = _value_shapes(inferred)
        del inferred
    except Exception as exc:
        shapes = _value_shapes(sk)
        notes.append(f"ONNX shape inference failed ({_one_line(exc)}); the probe uses declared shapes only")
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
