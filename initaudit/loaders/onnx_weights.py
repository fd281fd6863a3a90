"""ONNX weights: the initializer behind an op's operand and the transforms on the way
(Transpose, Cast, Identity, Reshape, Squeeze, Unsqueeze, Flatten, QuantizeLinear ->
DequantizeLinear), so the tensor analysed is the one the op uses; one Param per use (a tensor
used again the same way is the same Param: tied weights appear once), the tied LM-head copies
exporters store, and the float initializers no op placed.

:class:`WeightsMixin` is mixed into the graph builder (:mod:`initaudit.loaders.onnx_loader`),
whose state (the parsed nodes, the tensor store, the params made so far) it works on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch

from initaudit.errors import TargetError
from initaudit.graph import Node, OpKind, Param, ParamRole
from initaudit.loaders.onnx_store import _FLOAT_TYPES, TensorStore, _dtype_name

# Ops a weight may pass through between its initializer and the op that uses it.
_WEIGHT_CHAIN = {"Transpose", "Cast", "CastLike", "Identity", "Reshape", "Squeeze", "Unsqueeze",
                 "Flatten", "DequantizeLinear", "QuantizeLinear"}


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


def _attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
    for a in node.attribute:
        if a.name == name:
            return onnx.helper.get_attribute_value(a)
    return default


class WeightsMixin:
    """Weight resolution and claiming for the ONNX graph builder."""

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
              operand: str | None = None, **kw) -> tuple[str, bool]:
        """Param for ``src`` (made on first use): (name, made_now). A tensor used again the same
        way is the same Param; used another way, it keeps its first role and the later use is
        noted (tied weights appear once). Except a normalisation's scale or shift stored as the
        same initializer as a tensor of another kind: the exporter merges equal-valued
        initializers (a zero gamma and a zero Linear bias become one tensor, read through an
        Identity named after the original parameter), so the norm gets its own Param named by
        ``operand``, or its role would be lost."""
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
            if self._merged(first, kind, operand, src.root):
                name = operand
                kw.setdefault("notes", []).append(
                    f"stored as the same initializer as {first.name} ({first.kind.value} "
                    f"{first.role.value}): the exporter merged equal-valued tensors")
                first.notes.append(f"the same stored values are {name}, the {role.value} of {node} ({op})")
                return self._make(src, name, node, op, kind, role, steps, key, shape, kw), True
            first.notes.append(f"also used by {node} ({op}) as {kind.value} {role.value}")
            if node not in first.aliases:
                first.aliases.append(node)
            return first.name, False
        return self._make(src, name, node, op, kind, role, steps, key, shape, kw), True

    def _merged(self, first: Param, kind: OpKind, operand: str | None, root: str) -> bool:
        """A norm parameter and a tensor of another kind on one initializer, under a free name
        (the operand's own, not another initializer's)."""
        return (kind is OpKind.NORM) != (first.kind is OpKind.NORM) and bool(operand) \
            and operand not in self.params and (operand == root or operand not in self.store)

    def operand_name(self, t: str, src: _Source) -> str:
        """The name a norm parameter is known by: the operand itself where it is an ``Identity``
        of an initializer of another name (the exporter's merged copy keeps the original
        parameter's name there), else the initializer's."""
        return t if not src.steps and t not in self.store and t not in self.params else src.root

    def _make(self, src: _Source, name: str, node: str, op: str, kind: OpKind, role: ParamRole,
              steps: list[tuple], key: tuple, shape: tuple[int, ...] | None, kw: dict) -> str:
        """Make and register the Param ``name`` read from ``src`` (after ``steps``)."""
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
        return name

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
