"""A small fx-based builder of the documented graph node kinds (mul, cat, pool-max, pool-avg,
attention) for propagation tests, where the torch loader does not emit them yet: the params come
from the real loader, the nodes from fx with shapes (ShapeProp), and every Linear/Conv output is
measured by a float64 forward pass for comparison."""

from __future__ import annotations

import math
import operator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.fx.passes.shape_prop import ShapeProp

from initaudit.analysis import as_fp32, tensor_stats
from initaudit.graph import Node, annotate
from initaudit.loaders.torch_module import activation_of_module, graph_from_module, is_norm_module
from initaudit.propagation import predict

_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def _shape(n) -> tuple[int, ...] | None:
    meta = n.meta.get("tensor_meta")
    return tuple(meta.shape) if meta is not None and hasattr(meta, "shape") else None


def build_graph(module: nn.Module, example: torch.Tensor):
    graph = graph_from_module(module, "test")
    gm = torch.fx.symbolic_trace(module)
    ShapeProp(gm).propagate(example)
    modules = dict(module.named_modules())
    nodes: list[Node] = []
    for n in gm.graph.nodes:
        ins = [a.name for a in n.all_input_nodes]
        if n.op == "placeholder":
            nodes.append(Node(n.name, "input"))
        elif n.op == "output":
            nodes.append(Node(n.name, "output", ins))
        elif n.op == "call_module":
            m = modules[n.target]
            act = activation_of_module(m)
            if isinstance(m, _LAYERS):
                bias = f"{n.target}.bias" if m.bias is not None else None
                nodes.append(Node(n.name, "layer", ins[:1], param=f"{n.target}.weight", bias=bias))
            elif act is not None:
                nodes.append(Node(n.name, "act", ins[:1], activation=act))
            elif is_norm_module(m):
                own = [f"{n.target}.{k}" for k, _ in m.named_parameters(recurse=False)]
                nodes.append(Node(n.name, "norm", ins[:1], norm_params=tuple(own), op=type(m).__name__))
            elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
                k = m.kernel_size if isinstance(m.kernel_size, int) else math.prod(m.kernel_size)
                window = k * k if isinstance(m.kernel_size, int) else k
                nodes.append(Node(n.name, "pool-max" if isinstance(m, nn.MaxPool2d) else "pool-avg", ins[:1],
                                  attrs={"window": window}))
            elif isinstance(m, nn.AdaptiveAvgPool2d):
                s_in, s_out = _shape(n.args[0]), _shape(n)
                nodes.append(Node(n.name, "pool-avg", ins[:1],
                                  attrs={"window": math.prod(s_in[2:]) // math.prod(s_out[2:])}))
            else:
                nodes.append(Node(n.name, "transparent", ins[:1]))
        elif n.op == "call_function" and n.target in (operator.mul, torch.mul):
            nodes.append(Node(n.name, "mul", ins))
        elif n.op == "call_function" and n.target in (operator.add, torch.add):
            nodes.append(Node(n.name, "add" if len(ins) > 1 else "transparent", ins))
        elif n.op == "call_function" and n.target is torch.cat:
            sizes = [_shape(a)[-1] for a in n.args[0]]
            nodes.append(Node(n.name, "cat", ins, attrs={"sizes": sizes}))
        elif n.op == "call_function" and n.target is F.scaled_dot_product_attention:
            tokens = _shape(n)[-2]
            nodes.append(Node(n.name, "attention", ins[:3],
                              attrs={"tokens": tokens, "causal": bool(n.kwargs.get("is_causal"))}))
        elif n.op == "call_function" and n.target in (F.silu, F.relu, F.gelu, torch.sigmoid, torch.tanh):
            from initaudit.graph import Activation
            name = {F.silu: "silu", F.relu: "relu", F.gelu: "gelu", torch.sigmoid: "sigmoid",
                    torch.tanh: "tanh"}[n.target]
            nodes.append(Node(n.name, "act", ins[:1], activation=Activation(name)))
        else:  # views, transposes, flatten, getitem
            nodes.append(Node(n.name, "transparent", ins[:1]))
    graph.nodes = nodes
    for p in graph.params.values():
        p.activation, p.activation_source = None, None
    annotate(graph, "fx")
    graph.capture = "fx"
    return graph


def predicted(graph, per_unit: bool = True):
    """The static prediction as an audit computes it: with the actual weights at hand (a dense
    chain from the input carried unit by unit) unless ``per_unit`` is False."""
    cache = {}

    def stats(name):
        if name not in cache:
            cache[name] = tensor_stats(as_fp32(graph.load_tensor(name).detach()).reshape(-1).contiguous())
        return cache[name]
    return predict(graph, stats, graph.load_tensor if per_unit else None)


def measured(module: nn.Module, x: torch.Tensor) -> dict[str, list[float]]:
    """std of every Linear/Conv output, per call, in a float64 forward (BatchNorm on batch
    statistics, as the probe runs it)."""
    m = module.double().train()
    out: dict[str, list[float]] = {}
    hooks = [mod.register_forward_hook(lambda mod, a, y, name=name: out.setdefault(f"{name}.weight", []).append(
        float(y.detach().std()))) for name, mod in m.named_modules() if isinstance(mod, _LAYERS)]
    with torch.no_grad():
        m(x.double())
    for h in hooks:
        h.remove()
    module.float()
    return out


def ratios(module: nn.Module, x: torch.Tensor, per_unit: bool = True) -> list[tuple[str, float, float]]:
    """(param, predicted std, measured std) of every weight layer, in forward order."""
    graph = build_graph(module, x)
    meas = measured(module, x)
    seen: dict[str, int] = {}
    rows = []
    for s in predicted(graph, per_unit):
        k = seen.get(s.param, 0)
        seen[s.param] = k + 1
        rows.append((s.param, s.predicted_std, meas[s.param][k]))
    return rows
