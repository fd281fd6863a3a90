"""The ONNX probe's graph surgery: the graph that exposes each probed site as an output,
BatchNorm turned into batch statistics (as in training), and the segments the graph is run in so
that the exposed intermediates fit a memory budget."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _site_bytes(shape: tuple | None, batch_size: int, itemsize: int = 4) -> int | None:
    if not shape:
        return None
    total = 1
    for d in shape:
        total *= d if isinstance(d, int) and d > 0 else batch_size
    return total * itemsize


# ---- running the graph in segments ----------------------------------------------------------


def _node_inputs(node) -> set[str]:
    """Every tensor a node reads, including outer-scope names its subgraphs use."""
    names = {i for i in node.input if i}
    for a in node.attribute:
        subs = [a.g] if a.HasField("g") else list(a.graphs)
        for sub in subs:
            local = {i.name for i in sub.input} | {t.name for t in sub.initializer}
            for n in sub.node:
                local |= {o for o in n.output if o}
            for n in sub.node:
                names |= {x for x in _node_inputs(n) if x not in local}
    return names


def plan_segments(nodes, site_bytes: Mapping[int, int], budget: int, carried: set[str],
                  max_frontier: int = 16) -> list[tuple[int, int]]:
    """Cut the topologically ordered nodes into [start, end) ranges whose exposed outputs
    (``site_bytes``: node index -> bytes) stay within ``budget``, cutting only where at most
    ``max_frontier`` tensors of ``carried`` cross; one range when everything fits."""
    n = len(nodes)
    if sum(site_bytes.values()) <= budget or n < 2:
        return [(0, n)]
    produced_at: dict[str, int] = {}
    last_use: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for t in _node_inputs(node):
            if t in carried:
                last_use[t] = i
                produced_at.setdefault(t, -1)  # a graph input
        for o in node.output:
            if o:
                produced_at[o] = i
    delta = [0] * (n + 2)
    for t, lu in last_use.items():
        if produced_at[t] < lu:
            delta[produced_at[t] + 1] += 1  # crosses every cut produced_at+1 .. last_use
            delta[lu + 1] -= 1
    live, cuts, acc = 0, [], 0
    for p in range(n):
        live += delta[p]
        if p and acc >= budget and live <= max_frontier:
            cuts.append(p)
            acc = 0
        acc += site_bytes.get(p, 0)
    bounds = [0, *cuts, n]
    return list(zip(bounds[:-1], bounds[1:]))


class _Weights:
    """Initializers for the copies onnxruntime runs: small or external ones as they are; large
    embedded ones as external stubs whose data onnxruntime is handed as arrays."""

    LOCATION = "initaudit-in-memory"  # never a file: onnxruntime gets these arrays directly

    def __init__(self, model):
        import onnx
        from onnx import numpy_helper

        self.protos: dict[str, Any] = {}
        self.values: dict[str, Any] = {}
        for t in model.graph.initializer:
            if t.data_location == onnx.TensorProto.EXTERNAL or int(np.prod(t.dims)) <= 1024 \
                    or t.data_type == onnx.TensorProto.STRING:
                self.protos[t.name] = t
                continue
            arr = np.ascontiguousarray(numpy_helper.to_array(t))
            if arr.dtype.kind not in "fiub" or arr.dtype.itemsize not in (1, 2, 4, 8):
                self.protos[t.name] = t  # numpy extension types (bfloat16, float8): embedded
                continue
            stub = onnx.TensorProto()
            stub.name, stub.data_type = t.name, t.data_type
            stub.dims.extend(t.dims)
            stub.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", self.LOCATION), ("offset", "0"), ("length", str(arr.nbytes))):
                e = stub.external_data.add()
                e.key, e.value = key, value
            self.protos[t.name] = stub
            self.values[t.name] = arr  # handed to onnxruntime's process as an array


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _batch_stat_norm(node, rank: int, opset: int) -> list:
    """BatchNormalization with the batch's own statistics, spelled out in primitives:
    (x - mean) / sqrt(var + eps) * scale + B, mean and var over every axis but the channels.
    (onnxruntime's training_mode=1 does not normalise by the batch on CPU.)"""
    from onnx import TensorProto, helper

    x, scale, shift = node.input[0], node.input[1], node.input[2]
    y = node.output[0]
    base = (node.name or y) + "/initaudit_"
    eps = float(next((helper.get_attribute_value(a) for a in node.attribute if a.name == "epsilon"), 1e-5))
    axes = [0, *range(2, rank)]
    t = lambda k: base + k  # noqa: E731
    nodes = []

    def const(name, value, dtype=TensorProto.INT64):
        nodes.append(helper.make_node("Constant", [], [t(name)], name=t(name),
                                      value=helper.make_tensor(t(name) + "_v", dtype, [len(value)], value)))

    def mean(src, out):
        if opset >= 18:
            nodes.append(helper.make_node("ReduceMean", [src, t("axes")], [out], name=out, keepdims=1))
        else:
            nodes.append(helper.make_node("ReduceMean", [src], [out], name=out, axes=axes, keepdims=1))

    if opset >= 18:
        const("axes", axes)
    const("shape", [1, -1, *([1] * (rank - 2))])
    const("eps", [eps], TensorProto.FLOAT)
    mean(x, t("mean"))
    nodes += [helper.make_node("Sub", [x, t("mean")], [t("d")], name=t("d")),
              helper.make_node("Mul", [t("d"), t("d")], [t("sq")], name=t("sq"))]
    mean(t("sq"), t("var"))
    eps_in = t("eps")
    if opset >= 15:
        nodes.append(helper.make_node("CastLike", [t("eps"), x], [t("eps_x")], name=t("eps_x")))
        eps_in = t("eps_x")
    nodes += [helper.make_node("Add", [t("var"), eps_in], [t("ve")], name=t("ve")),
              helper.make_node("Sqrt", [t("ve")], [t("sd")], name=t("sd")),
              helper.make_node("Div", [t("d"), t("sd")], [t("n")], name=t("n")),
              helper.make_node("Reshape", [scale, t("shape")], [t("g")], name=t("g")),
              helper.make_node("Reshape", [shift, t("shape")], [t("b")], name=t("b")),
              helper.make_node("Mul", [t("n"), t("g")], [t("ng")], name=t("ng")),
              helper.make_node("Add", [t("ng"), t("b")], [y], name=t("y"))]
    return nodes


def probe_graph(model, value_shapes: Mapping[str, tuple], notes: list[str]):
    """The graph the probe runs: the model's structure without initializer data (segments take
    their initializers from :class:`_Weights`), with BatchNormalization normalising by the
    probe batch as the torch probe's train-mode BatchNorm does."""
    from initaudit.loaders.onnx_store import empty_model_like

    pm = empty_model_like(model)
    src, g = model.graph, pm.graph
    g.input.extend(src.input)
    g.output.extend(src.output)
    g.value_info.extend(src.value_info)
    g.sparse_initializer.extend(src.sparse_initializer)
    used = {i for n in src.node for i in n.input if i}
    opset = _opset(model)
    rewritten = kept = 0
    for n in src.node:
        shape = value_shapes.get(n.input[0]) if n.input else None
        if n.op_type == "BatchNormalization" and n.domain in ("", "ai.onnx") and shape and len(shape) >= 2 \
                and len(n.input) >= 3 and not any(o in used for o in n.output[1:] if o):
            g.node.extend(_batch_stat_norm(n, len(shape), opset))
            rewritten += 1
            continue
        kept += n.op_type == "BatchNormalization"
        g.node.append(n)
    if rewritten:
        notes.append(f"{rewritten} BatchNormalization node(s) normalise with the probe batch's statistics "
                     "(as the torch probe's train-mode BatchNorm), not the stored running statistics")
    if kept:
        notes.append(f"{kept} BatchNormalization node(s) of unknown input rank use their running statistics")
    return pm


def _segment_model(model, start: int, end: int, inputs: Mapping[str, np.ndarray], outputs: list[str],
                   weights: _Weights) -> tuple[bytes, list[str]]:
    """Nodes [start, end) as a model: the given arrays as typed inputs, ``outputs`` exposed.
    Returns the model bytes and the in-memory initializers it uses."""
    from onnx import helper

    from initaudit.loaders.onnx_store import empty_model_like

    copy = empty_model_like(model)
    src, g = model.graph, copy.graph
    nodes = src.node[start:end]
    g.node.extend(nodes)
    for name, arr in inputs.items():
        g.input.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype),
                                                     list(arr.shape)))
    vi = {v.name: v for v in src.value_info}
    for o in outputs:
        g.output.append(vi[o] if o in vi else helper.make_empty_tensor_value_info(o))
    used: set[str] = set()
    for n in nodes:
        used |= _node_inputs(n)
    in_memory = []
    for name in sorted(used):
        if name in weights.protos and name not in inputs:
            g.initializer.append(weights.protos[name])
            if name in weights.values:
                in_memory.append(name)
    g.sparse_initializer.extend(t for t in src.sparse_initializer if t.values.name in used)
    return copy.SerializeToString(), in_memory
