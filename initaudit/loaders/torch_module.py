"""nn.Module -> ModelGraph: parameter roles and true fans from module types, and the dataflow
from torch.fx (so ``F.relu`` in ``forward`` counts), falling back to module registration order
when the model cannot be traced."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterator

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F

from initaudit.distributed import data_ptr
from initaudit.errors import first_line
from initaudit.graph import Activation, ModelGraph, Node, OpKind, Param, ParamRole, annotate, torch_shape_fans
from initaudit.loaders.checkpoint import META_REASON
from initaudit.loaders.parametrized import applied_weights, mark_originals, scale_set_by

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV_T = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_NORM = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
         *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()))
_RNN_GATES = {"LSTM": ("i", "f", "g", "o"), "GRU": ("r", "z", "n"), "RNN": ()}

_ACT_MODULES: dict[type, str] = {
    nn.ReLU: "relu", nn.ReLU6: "relu6", nn.LeakyReLU: "leaky_relu", nn.PReLU: "prelu",
    nn.ELU: "elu", nn.SELU: "selu", nn.CELU: "celu", nn.GELU: "gelu", nn.SiLU: "silu",
    nn.Mish: "mish", nn.Softplus: "softplus", nn.Hardswish: "hardswish", nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid", nn.Hardtanh: "hardtanh", nn.Hardsigmoid: "hardsigmoid",
    nn.Softsign: "softsign", nn.Identity: "identity",
}
_ACT_FUNCTIONS = {
    F.relu: "relu", torch.relu: "relu", F.relu6: "relu6", F.leaky_relu: "leaky_relu",
    F.elu: "elu", F.selu: "selu", torch.selu: "selu", F.celu: "celu", F.gelu: "gelu",
    F.silu: "silu", F.mish: "mish", F.softplus: "softplus", F.hardswish: "hardswish",
    torch.tanh: "tanh", F.tanh: "tanh", torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid",
    F.hardtanh: "hardtanh", F.hardsigmoid: "hardsigmoid", F.softsign: "softsign",
}
_ACT_METHODS = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "relu_": "relu",
                "tanh_": "tanh", "sigmoid_": "sigmoid"}
_SHAPE_FUNCTIONS = {torch.flatten, torch.reshape, torch.transpose, torch.permute, torch.squeeze,
                    torch.unsqueeze, F.dropout, torch.dropout, operator.getitem, F.max_pool1d,
                    F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d, F.avg_pool3d,
                    F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
                    torch.chunk, torch.split, torch.narrow}
_SHAPE_METHODS = {"view", "reshape", "permute", "transpose", "flatten", "contiguous", "squeeze",
                  "unsqueeze", "expand", "chunk", "split", "narrow", "unflatten", "t", "float",
                  "to", "type_as", "clone", "detach", "mean"}
_MAX_POOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AdaptiveMaxPool1d,
                     nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d)
_AVG_POOL_MODULES = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d,
                     nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_SHAPE_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
                  nn.Flatten, nn.Unflatten, *_MAX_POOL_MODULES, *_AVG_POOL_MODULES, nn.Upsample,
                  nn.PixelShuffle, nn.PixelUnshuffle, nn.ZeroPad2d, nn.ConstantPad2d,
                  nn.ReflectionPad2d, nn.ReplicationPad2d, nn.ChannelShuffle)
_ADD = {operator.add, operator.iadd, torch.add}
FX_FAILED = "torch.fx could not trace the model"  # note prefix, dropped when a forward pass is recorded


def activation_of_module(m: nn.Module) -> Activation | None:
    name = _ACT_MODULES.get(type(m))
    if name is None:
        return None
    if isinstance(m, nn.LeakyReLU):
        return Activation(name, float(m.negative_slope))
    if isinstance(m, nn.PReLU):
        return Activation(name, float(m.weight.detach().float().mean()))
    return Activation(name)


def is_hf_conv1d(m: nn.Module) -> bool:
    """Hugging Face GPT-2 ``Conv1D``: a Linear that stores its weight (in, out)."""
    return type(m).__name__ == "Conv1D" and hasattr(m, "nf") and getattr(m, "weight", None) is not None


def _param(name: str, t: torch.Tensor, layer: str, op: str, kind: OpKind, role: ParamRole,
           **kw) -> Param:
    return Param(name=name, shape=tuple(t.shape), dtype=str(t.dtype).replace("torch.", ""),
                 layer=layer, op=op, kind=kind, role=role, **kw)


def _whole(x: float) -> int | float:
    """A fan as an int when it is whole (strided kernels give fractional mean fans)."""
    return int(x) if float(x).is_integer() else x


def weight_param(prefix: str, m: nn.Module, name: str, t: torch.Tensor) -> Param:
    """Param for a weight, with true fans from the module's semantics."""
    op = type(m).__name__
    init_in, init_out = torch_shape_fans(tuple(t.shape))
    common = dict(init_fan_in=init_in, init_fan_out=init_out)
    if isinstance(m, nn.Linear):
        return _param(name, t, prefix, op, OpKind.LINEAR, ParamRole.WEIGHT,
                      fan_in=t.shape[1], fan_out=t.shape[0], **common)
    if isinstance(m, _CONV):
        k = math.prod(t.shape[2:])
        # DESIGN §5: fan_in = (in / groups) * prod(k) (the stored dim 1), fan_out = out * prod(k)
        # kernel taps, of which a strided conv lands prod(k) / prod(stride) per input on average
        # (a 16x16 patch stem with stride 16: each input pixel reaches `out` outputs, not 256 out).
        taps = k / math.prod(m.stride) if math.prod(m.stride) > 1 else k
        return _param(name, t, prefix, op, OpKind.CONV, ParamRole.WEIGHT,
                      fan_in=t.shape[1] * k, fan_out=_whole(t.shape[0] * max(taps, 1)),
                      groups=m.groups, **common)
    if isinstance(m, _CONV_T):
        k = math.prod(t.shape[2:])
        overlap = max(1.0, k / math.prod(m.stride))  # kernel taps per output pixel, on average
        return _param(name, t, prefix, op, OpKind.CONV_TRANSPOSE, ParamRole.WEIGHT,
                      fan_in=_whole(t.shape[0] // m.groups * overlap), fan_out=t.shape[1] * k,
                      units_dim=1, **common)
    if isinstance(m, nn.Embedding | nn.EmbeddingBag):
        return _param(name, t, prefix, op, OpKind.EMBEDDING, ParamRole.WEIGHT,
                      fan_in=t.shape[1], fan_out=t.shape[0], **common)
    if is_hf_conv1d(m):
        return _param(name, t, prefix, op, OpKind.LINEAR, ParamRole.WEIGHT,
                      fan_in=t.shape[0], fan_out=t.shape[1], units_dim=1, **common)
    if isinstance(m, nn.MultiheadAttention) and name.endswith("in_proj_weight"):
        e = t.shape[1]  # (3E, E): q, k, v blocks of (E, E); torch's init reads (E, 3E)
        return _param(name, t, prefix, op, OpKind.ATTENTION, ParamRole.WEIGHT, fan_in=e,
                      fan_out=e, gates=("q", "k", "v"), **common)
    if isinstance(m, nn.MultiheadAttention) and name.endswith("_proj_weight"):  # kdim / vdim
        return _param(name, t, prefix, op, OpKind.LINEAR, ParamRole.WEIGHT,
                      fan_in=t.shape[1], fan_out=t.shape[0], **common)
    if isinstance(m, nn.Bilinear):  # y_o = x1^T W_o x2 sums in1 * in2 products
        return _param(name, t, prefix, op, OpKind.LINEAR, ParamRole.WEIGHT,
                      fan_in=t.shape[1] * t.shape[2], fan_out=t.shape[0], **common)
    if isinstance(m, nn.RNNBase) and ".weight_" in "." + name.rsplit(".", 1)[-1]:
        gates = _RNN_GATES.get(op, ())
        local = name.rsplit(".", 1)[-1]
        hidden = m.hidden_size
        kind = OpKind.RECURRENT_HIDDEN if local.startswith("weight_hh") else OpKind.RECURRENT_INPUT
        fan_in = t.shape[1]
        if local.startswith("weight_hr"):  # LSTM(proj_size): a plain (proj, hidden) projection
            return _param(name, t, prefix, op, OpKind.RECURRENT_INPUT, ParamRole.WEIGHT,
                          fan_in=fan_in, fan_out=t.shape[0], activation=Activation("identity"),
                          activation_source="module", **common)
        act = Activation("relu" if getattr(m, "nonlinearity", "tanh") == "relu" else "tanh")
        return _param(name, t, prefix, op, kind, ParamRole.WEIGHT, fan_in=fan_in, fan_out=hidden,
                      gates=gates, activation=act, activation_source="module", **common)
    kind = OpKind.OTHER
    p = _param(name, t, prefix, op, kind, ParamRole.WEIGHT, fan_in=init_in, fan_out=init_out, **common)
    p.notes.append(f"{op} is not a layer type initaudit knows; fans read from the shape")
    return p


def is_norm_module(m: nn.Module) -> bool:
    """torch's normalisation layers, and custom ones (Llama/T5-style RMSNorm): a class named
    *Norm* whose own parameters are all 1-D (a scale and perhaps a shift)."""
    if isinstance(m, _NORM):
        return True
    own = list(m.parameters(recurse=False))
    return "norm" in type(m).__name__.lower() and bool(own) and all(p.dim() == 1 for p in own) \
        and not list(m.children())


def params_of_module(prefix: str, m: nn.Module, tensors: dict[str, torch.Tensor]) -> Iterator[Param]:
    """Params owned directly by module ``m`` (its own parameters and statistics buffers)."""
    op = type(m).__name__
    for local, t in list(m.named_parameters(recurse=False)) + list(m.named_buffers(recurse=False)):
        name = f"{prefix}.{local}" if prefix else local
        if name not in tensors or not t.is_floating_point():
            continue
        if is_norm_module(m):
            role = {"weight": ParamRole.NORM_SCALE, "scale": ParamRole.NORM_SCALE, "gamma": ParamRole.NORM_SCALE,
                    "g": ParamRole.NORM_SCALE, "bias": ParamRole.NORM_SHIFT, "beta": ParamRole.NORM_SHIFT,
                    "running_mean": ParamRole.RUNNING_MEAN, "running_var": ParamRole.RUNNING_VAR
                    }.get(local, ParamRole.OTHER)
            yield _param(name, t, prefix, op, OpKind.NORM, role)
        elif local.startswith("bias") or local.endswith("_bias") or "bias_" in local:
            kind = OpKind.RECURRENT_INPUT if isinstance(m, nn.RNNBase) else OpKind.OTHER
            gates = _RNN_GATES.get(op, ()) if isinstance(m, nn.RNNBase) else ()
            yield _param(name, t, prefix, op, kind, ParamRole.BIAS, gates=gates)
        elif isinstance(m, nn.PReLU) or t.dim() < 2:
            yield _param(name, t, prefix, op, OpKind.OTHER, ParamRole.OTHER)
        else:
            yield weight_param(prefix, m, name, t)


def unique_tensors(module: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Parameters and buffers, tied tensors once (first name wins), with their aliases."""
    seen: dict[tuple, str] = {}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, list[str]] = {}
    named = list(module.named_parameters(remove_duplicate=False)) + \
        list(module.named_buffers(remove_duplicate=False))
    for name, t in named:
        if t is None:
            continue
        key = (data_ptr(t), tuple(t.shape), tuple(t.stride()), t.dtype) if t.device.type != "meta" \
            else (id(t),)
        if key in seen:
            aliases.setdefault(seen[key], []).append(name)
            continue
        seen[key] = name
        tensors[name] = t
    return tensors, aliases


class _Tracer(torch.fx.Tracer):
    """Keeps every module that owns parameters directly (Conv1D, custom layers) as a leaf."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return super().is_leaf_module(m, qualname) or any(True for _ in m.parameters(recurse=False)) \
            or isinstance(m, nn.MultiheadAttention)


def _module_node(name: str, m: nn.Module, inputs: list[str], owned: dict[str, list[Param]]) -> list[Node]:
    act = activation_of_module(m)
    if act is not None and not isinstance(m, nn.Identity):
        return [Node(name, "act", inputs, activation=act)]
    if isinstance(m, nn.Identity) or isinstance(m, _SHAPE_MODULES):
        return [Node(name, "transparent", inputs)]
    params = owned.get(name, [])
    if is_norm_module(m):
        return [Node(name, "norm", inputs, norm_params=tuple(
            p.name for p in params if p.role in (ParamRole.NORM_SCALE, ParamRole.NORM_SHIFT)))]
    if isinstance(m, nn.MultiheadAttention):
        in_proj = next((p.name for p in params if p.kind is OpKind.ATTENTION), None)
        core = [Node(f"{name}.in_proj", "layer", inputs, param=in_proj,
                     bias=next((p.name for p in params if p.name.endswith("in_proj_bias")), None))] \
            if in_proj else []
        out = owned.get(f"{name}.out_proj", [])
        core.append(Node(f"{name}.attention", "attention", [core[0].name] * 3 if core else inputs))
        w = next((p.name for p in out if p.is_weight), None)
        b = next((p.name for p in out if p.role is ParamRole.BIAS), None)
        core.append(Node(name, "layer" if w else "other", [core[-1].name], param=w, bias=b))
        return core
    weights = [p for p in params if p.is_weight]
    if isinstance(m, nn.RNNBase) or not weights:
        return [Node(name, "other", inputs)]
    bias = next((p.name for p in params if p.role is ParamRole.BIAS), None)
    kind = "embedding" if weights[0].kind is OpKind.EMBEDDING else "layer"
    return [Node(name, kind, inputs, param=weights[0].name, bias=bias)]


def is_capture_leaf(m: nn.Module) -> bool:
    """Modules the forward-pass capture keeps as one node (their internals are not recorded):
    layers, norms, activation, pooling, dropout and shape modules, attention and recurrent
    modules, and any module with weights of its own and no children."""
    if type(m) in _ACT_MODULES or isinstance(m, (*_SHAPE_MODULES, nn.Identity, nn.Linear, *_CONV,
                                                 *_CONV_T, nn.Embedding, nn.EmbeddingBag,
                                                 nn.MultiheadAttention, nn.RNNBase, nn.RNNCellBase)):
        return True
    if is_norm_module(m) or is_hf_conv1d(m):
        return True
    return not any(True for _ in m.children()) and any(p.dim() >= 2 for p in m.parameters(recurse=False))


def trace_module_node(site: str, m: nn.Module, inputs: list[str], owned: dict[str, list[Param]],
                      path: str, window: int | None = None) -> list[Node]:
    """Nodes for one call of a leaf module at call site ``site`` (``path`` or ``path#k``)."""
    if isinstance(m, _MAX_POOL_MODULES + _AVG_POOL_MODULES):
        kind = "pool-max" if isinstance(m, _MAX_POOL_MODULES) else "pool-avg"
        return [Node(site, kind, inputs, op=type(m).__name__,
                     attrs={"window": window} if window else {})]
    made = _module_node(path, m, inputs, owned)
    if site != path:
        suffix = site[len(path):]
        internal = {node.name for node in made}
        for node in made:
            node.name = f"{node.name}{suffix}"
            node.inputs = [f"{i}{suffix}" if i in internal else i for i in node.inputs]
    for node in made:
        node.op = node.op or type(m).__name__
    return made


def _holds_tensor(value: object) -> bool:
    """A tensor, an fx Proxy, or a list/tuple/dict of them: state a run can leave on a module."""
    if isinstance(value, (list, tuple)):
        return any(_holds_tensor(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_tensor(v) for v in value.values())
    return isinstance(value, (torch.Tensor, torch.fx.Proxy))


def _contents(value: object) -> object:
    """A shallow copy of a list or dict attribute a run may fill in place (a per-device cache)."""
    return dict(value) if isinstance(value, dict) else list(value) if isinstance(value, list) else None


def _same(now: dict | list, saved: dict | list) -> bool:
    """Whether a container holds the very objects it held (identity: tensors have no plain ==)."""
    if isinstance(now, dict):
        return now.keys() == saved.keys() and all(now[k] is saved[k] for k in now)
    return len(now) == len(saved) and all(a is b for a, b in zip(now, saved))


class ModuleAttributes:
    """Every module's tensor-valued attributes, to be put back after code of the model ran: a
    forward (or an fx trace) may keep tensors there (a recurrent state, a cache, a Proxy), which
    would change the caller's model and tie it to the run's autograd graph (no deepcopy then).
    Other attributes a run sets are the model's own bookkeeping and stay: a flag that says hooks
    are installed must not be cleared while the hooks stay (transformers' output capture would
    then record every hidden state twice)."""

    def __init__(self, module: nn.Module):
        self.kept = [(m, dict(vars(m))) for m in module.modules()]
        self.contents = {(id(m), k): _contents(v) for m, kept in self.kept for k, v in kept.items()
                         if isinstance(v, (dict, list)) and not isinstance(v, nn.Module)}

    def restore(self) -> None:
        missing = object()
        for m, kept in self.kept:
            now = vars(m)
            for k, v in list(now.items()):
                old = kept.get(k, missing)
                saved = self.contents.get((id(m), k))
                if old is v and saved is not None and _holds_tensor(v) and not _same(v, saved):
                    # filled in place (timm's attention_bias_cache in eval mode): a tensor of the
                    # run's autograd graph would stay in the caller's model (no deepcopy then)
                    v.clear()
                    v.update(saved) if isinstance(v, dict) else v.extend(saved)
                    continue
                if old is v or not (_holds_tensor(v) or _holds_tensor(old)):
                    continue
                if old is missing:
                    del now[k]  # made by the run
                else:
                    now[k] = old


def _fx_nodes(module: nn.Module, owned: dict[str, list[Param]]) -> list[Node]:
    kept = ModuleAttributes(module)
    try:
        graph = _Tracer().trace(module)
    finally:
        kept.restore()
    modules = dict(module.named_modules())
    nodes: list[Node] = []
    rename: dict[str, str] = {}  # fx node name -> our node name (module path for call_module)
    calls: dict[str, int] = {}
    for n in graph.nodes:
        inputs = [rename[a.name] for a in n.all_input_nodes if a.name in rename]
        if n.op == "placeholder":
            made = [Node(n.name, "input")]
        elif n.op == "output":
            made = [Node("output", "output", inputs)]
        elif n.op == "get_attr":
            continue
        elif n.op == "call_module":
            target = str(n.target)
            k = calls.get(target, 0)
            calls[target] = k + 1
            made = _module_node(target, modules[target], inputs, owned)
            if k:  # a module reused: key the call site, not the module
                internal = {node.name for node in made}
                for node in made:
                    node.name = f"{node.name}#{k}"
                    node.inputs = [f"{i}#{k}" if i in internal else i for i in node.inputs]
        elif n.op == "call_function" and n.target in _ACT_FUNCTIONS:
            slope = n.kwargs.get("negative_slope", n.args[1] if len(n.args) > 1 else None) \
                if n.target is F.leaky_relu else None
            made = [Node(n.name, "act", inputs[:1], activation=Activation(
                _ACT_FUNCTIONS[n.target], float(slope) if isinstance(slope, (int, float)) else None))]
        elif n.op == "call_method" and n.target in _ACT_METHODS:
            made = [Node(n.name, "act", inputs[:1], activation=Activation(_ACT_METHODS[n.target]))]
        elif n.op in ("call_function", "call_method") and (
                n.target in _ADD or n.target in ("add", "add_", "__add__")):
            made = [Node(n.name, "add" if len(inputs) > 1 else "transparent", inputs)]
        elif (n.op == "call_function" and n.target in _SHAPE_FUNCTIONS) or \
                (n.op == "call_method" and n.target in _SHAPE_METHODS):
            made = [Node(n.name, "transparent", inputs[:1])]
        else:
            made = [Node(n.name, "other", inputs)]
        nodes.extend(made)
        rename[n.name] = made[-1].name
    return nodes


def _order_nodes(module: nn.Module, owned: dict[str, list[Param]]) -> list[Node]:
    """A chain of leaf modules in registration order: the fallback when tracing fails."""
    nodes = [Node("input", "input")]
    for name, m in module.named_modules():
        if name and (not list(m.children()) or isinstance(m, nn.MultiheadAttention)):
            if any(name.startswith(f"{p}.") for p, mm in module.named_modules()
                   if p and isinstance(mm, nn.MultiheadAttention)):
                continue
            made = _module_node(name, m, [nodes[-1].name], owned)
            nodes.extend(made)
    nodes.append(Node("output", "output", [nodes[-1].name]))
    return nodes


def owned_params(graph: ModelGraph, module: nn.Module) -> dict[str, list[Param]]:
    """The graph's params by the module that owns them directly."""
    owned: dict[str, list[Param]] = {}
    for p in graph.params.values():
        owned.setdefault(p.layer, []).append(p)
    return owned


def graph_from_module(module: nn.Module, target: str, fmt: str = "torch-module") -> ModelGraph:
    """Describe a live module: its parameters and buffers, placed in the traced dataflow."""
    tensors, aliases = unique_tensors(module)
    params: dict[str, Param] = {}
    owned: dict[str, list[Param]] = {}
    for prefix, m in module.named_modules():
        for p in params_of_module(prefix, m, tensors):
            p.aliases = aliases.get(p.name, [])
            params[p.name] = p
            owned.setdefault(prefix, []).append(p)
            if p.name.rpartition(".")[2] == "weight_orig":  # the older spectral_norm hook applies it / sigma
                p.scale_set_by = scale_set_by(m)
    for prefix, m, name, value in applied_weights(module):  # weight_norm, spectral_norm, orthogonal
        tensors[name] = value
        params[name] = p = weight_param(prefix, m, name, value)
        p.notes.append("a parametrised weight, judged as computed from its originals")
        p.scale_set_by = scale_set_by(m)
        owned.setdefault(prefix, []).append(p)
        mark_originals(params, prefix)
    graph = ModelGraph(target=target, format=fmt, params=params,
                       load_tensor=lambda n: tensors[n], module=module)
    meta = [n for n in params if tensors[n].device.type == "meta"]
    for name in meta:
        del params[name]
        graph.skipped.append((name, META_REASON))
    try:
        graph.nodes = _fx_nodes(module, owned)
        source = "fx"
    except Exception as exc:  # tracing fails on data-dependent control flow; fall back
        graph.nodes = _order_nodes(module, owned)
        source = "module-order"
        first = first_line(exc) or type(exc).__name__
        graph.notes.append(f"{FX_FAILED} ({first[:160]}); activations were "
                           "read from module registration order, so functional activations "
                           "(F.relu in forward) are not seen")
    annotate(graph, source)
    graph.capture = source
    graph.family = detect_family(graph)
    return graph


def detect_family(graph: ModelGraph) -> str | None:
    """"transformer" when the model has layer-norm style normalisation (a norm scale with no
    running statistics) and embeddings or attention: GPT-2/BERT/ViT conventions (std 0.02) then
    count as a known scheme. Works from roles alone, so bare checkpoints and ONNX graphs qualify."""
    params = graph.params.values()
    with_running_stats = {p.layer for p in params if p.role is ParamRole.RUNNING_VAR}
    has_ln = any(p.role is ParamRole.NORM_SCALE and p.layer not in with_running_stats for p in params)
    has_attn_or_emb = any(p.kind in (OpKind.ATTENTION, OpKind.EMBEDDING) or "attn" in p.name.lower()
                          or "attention" in p.name.lower() for p in params)
    return "transformer" if has_ln and has_attn_or_emb else None
