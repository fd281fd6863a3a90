"""ONNX op semantics: the role and true fans of each weight from the op that consumes it (Gemm,
MatMul, FusedMatMul, Conv, ConvTranspose, LSTM/GRU/RNN, Gather, the normalisation ops), bias
adds, single activation ops (Relu ... Clip as relu6), and the exporters' hints (the PyTorch
module a node came from, a BatchNorm folded into a Conv).

:class:`OpsMixin` is mixed into the graph builder (:mod:`initaudit.loaders.onnx_loader`).
"""

from __future__ import annotations

import math
from typing import Any

import onnx

from initaudit.errors import TargetError
from initaudit.graph import Activation, Node, OpKind, ParamRole, torch_shape_fans
from initaudit.loaders.onnx_weights import _attr
from initaudit.patterns import ACT_OPS

# ONNX activations without attributes; their names come from the one op -> activation map that
# the torch capture reads too (patterns.ACT_OPS)
_ACT_OPS = {op: ACT_OPS[op.lower()] for op in (
    "Relu", "Sigmoid", "Tanh", "Selu", "Elu", "Celu", "Gelu", "FastGelu", "BiasGelu", "QuickGelu",
    "HardSigmoid", "HardSwish", "Softplus", "Softsign", "Mish", "Swish", "Sin")}
# op -> positions of (scale, shift, running mean, running var) among the inputs
_NORM_OPS = {
    "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2, None, None),
    "InstanceNormalization": (1, 2, None, None), "GroupNormalization": (1, 2, None, None),
    "RMSNormalization": (1, None, None, None), "SimplifiedLayerNormalization": (1, None, None, None),
}
_RNN_GATES = {"LSTM": ("i", "o", "f", "c"), "GRU": ("z", "r", "h"), "RNN": ()}
_RNN_ACTS = {"Relu": "relu", "Tanh": "tanh", "Sigmoid": "sigmoid", "LeakyRelu": "leaky_relu",
             "Elu": "elu", "Softsign": "softsign", "Softplus": "softplus", "HardSigmoid": "hardsigmoid"}


class OpsMixin:
    """Op handlers of the ONNX graph builder: each emits the node for one ONNX op."""

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
        renames both the weight and the bias it creates (onnx::Conv_N), and names the bias so on
        the node even where an equal-valued initializer was merged in (an Identity of another
        layer's zero bias: the folded bias of a fresh BatchNorm is zero)."""
        n = self.nodes[i]
        for prop in n.metadata_props:
            if prop.key in ("pkg.torch.onnx.class_hierarchy", "pkg.torch.onnx.fx_node") and \
                    ("batchnorm" in prop.value.lower() or "batch_norm" in prop.value.lower()):
                return True
        if n.op_type == "MatMul" or bias is None:
            return False
        operand = n.input[2] if len(n.input) > 2 else bias
        generated = "::" in weight and ("::" in bias or "::" in operand)
        return generated and n.name.startswith("/")

    def _hint_note(self, pname: str, i: int) -> None:
        p = self.params[pname]
        h = self.hint(i)
        generated = "::" in pname or pname.startswith(("val_", "_val_")) or pname.isdigit()
        if h and generated:
            p.notes.append(f"exported from PyTorch module '{h}' (initializer named {pname!r} by the exporter)")

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
        if src.root in self.store.program:  # a fixed filter (an anti-alias blur): no weight, as in torch
            self.emit(Node(name, "layer", self.src_nodes(n.input[:1]), op=op), n.output, n.output[0])
            return True
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
                                 units_dim=units_dim, groups=groups if op == "Conv" else 1)
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
        pname, _ = self.claim(src, src.root, node, op, OpKind.OTHER, ParamRole.BIAS, operand=t)
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
            pname, _ = self.claim(src, self.operand_name(n.input[pos], src), name, op, OpKind.NORM, role,
                                  operand=n.input[pos])
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
