"""Forward probe of an ONNX model with onnxruntime.

The model runs on an in-memory copy whose intermediate tensors are exposed as extra graph
outputs: each weight layer's output (its pre-activation, bias included), each embedding's,
activation's and normalisation's output, and the graph outputs. Every exposed tensor is
summarised with the same :func:`initaudit.probe.stats.site_stats` the torch probe uses, and
dropped at once.

Memory: exposing every intermediate tensor keeps them all alive until the run returns (on a CNN
that triples peak memory). When the exposed tensors would exceed the memory budget together,
the graph is cut where few tensors cross and run part by part, each part once, handing the
crossing tensors on: the forward pass is still computed once, and at most about one budget of
exposed outputs is alive at a time.

Large embedded initializers are handed to onnxruntime as arrays rather than serialised into the
copy (serialising 128 MB of weights took longer than the forward pass); external data stays on
disk and is read by onnxruntime from the model's folder, whose paths the loader checked.

ONNX gets no backward pass here: ``ProbeResult.grads`` stays ``None``.

Synthetic inputs follow the graph's input types and shapes (:mod:`initaudit.probe.onnx_inputs`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from initaudit.graph import PASS_THROUGH, Activation, ModelGraph, Node
from initaudit.probe.onnx_inputs import GraphInputs, synthetic_inputs
from initaudit.probe.onnx_requests import CannotSynthesise, check_batch_size, check_given
from initaudit.probe.onnx_segments import (_node_inputs, _segment_model, _site_bytes, _Weights, plan_segments,
                                          probe_graph)
from initaudit.probe.ort_process import IsolatedRuntime, RuntimeCrash, memory_limit
from initaudit.probe.profile import input_rescale, rescaled_spread
from initaudit.probe.result import ProbeResult, SiteStats

_DEFAULT_BUDGET = 128 << 20


# ---- inputs and options ---------------------------------------------------------------------


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _available_memory() -> int | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def default_memory_budget() -> int:
    """Bytes of exposed intermediate outputs alive at once: 128 MB (less when memory is
    short). Running the graph in more parts costs little: each part runs once, and only a
    session start (milliseconds) is added per part."""
    avail = _available_memory()
    return int(min(_DEFAULT_BUDGET, max(16 << 20, avail // 8))) if avail else _DEFAULT_BUDGET


def session_options(threads: int | None = None, external_dir: str | None = None):
    """onnxruntime SessionOptions for the probe: a thread per core (at most 16) and no spinning
    worker threads (they slowed a following torch forward 2.4x in the same process). The probe
    itself builds them in its worker process (:func:`initaudit.probe.ort_worker.session_options`)."""
    import onnxruntime as ort

    from initaudit.probe.ort_worker import session_options as build

    return build(ort, threads or min(_cpu_count(), 16), external_dir)


# ---- sites ----------------------------------------------------------------------------------


def _consumers(nodes: list[Node]) -> dict[str, list[Node]]:
    users: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            users.setdefault(i, []).append(n)
    return users


def _act_after(node: Node, users: dict[str, list[Node]]) -> Activation | None:
    """The activation right after ``node`` (through shape-only ops), if any."""
    stack, seen = [node.name], {node.name}
    while stack:
        for u in users.get(stack.pop(), []):
            if u.name in seen:
                continue
            seen.add(u.name)
            if u.kind == "act":
                return u.activation
            if u.kind in PASS_THROUGH:
                stack.append(u.name)
    return None


def _unit_dims(nodes: list[Node], own: Mapping[str, int]) -> dict[str, int]:
    """Units dimension of each node's output: set by layers and norms, inherited otherwise."""
    dims: dict[str, int] = {}
    for n in nodes:
        if n.name in own and n.kind in ("layer", "embedding", "norm"):
            dims[n.name] = own[n.name]
        else:
            dims[n.name] = next((dims[i] for i in n.inputs if i in dims), own.get(n.name, -1))
    return dims


class _Site:
    """One tensor to summarise, with the arguments the torch probe would pass for it."""

    __slots__ = ("node", "tensor", "kind", "param", "activation", "pre", "identical", "bias",
                 "unit_dim")

    def __init__(self, node: Node, tensor: str, kind: str, *, param: str | None = None,
                 activation: Activation | None = None, pre: bool = True, identical: bool = False,
                 bias: str | None = None, unit_dim: int = -1):
        self.node, self.tensor, self.kind, self.param = node, tensor, kind, param
        self.activation, self.pre, self.identical, self.bias = activation, pre, identical, bias
        self.unit_dim = unit_dim


def _sites(graph: ModelGraph, info, notes: list[str]) -> list[_Site]:
    """Every tensor to summarise, in forward order, with the torch probe's conventions: a
    layer site per weight layer (pre-activation, bias included; identical units searched), a
    norm site per normalisation, an act site per activation unless its input is the recorded
    pre-activation of a layer/norm site with that activation, an output site per graph output."""
    model = info.model
    produced = {o for n in model.graph.node for o in n.output if o}
    graph_inputs = {i.name for i in model.graph.input}
    users = _consumers(graph.nodes)
    unit_dims = _unit_dims(graph.nodes, info.unit_dims)
    by_name = {n.name: n for n in graph.nodes}
    sites: list[_Site] = []
    recorded: dict[str, _Site] = {}  # tensor -> layer/norm site
    missing = 0
    for node in graph.nodes:
        if node.kind not in ("layer", "embedding", "act", "norm") or \
                (node.kind in ("layer", "embedding") and not node.param):
            continue
        tensor = info.node_tensor.get(node.name)
        if not tensor or tensor in graph_inputs or tensor in recorded:
            continue
        if tensor not in produced:
            missing += 1  # inside an inlined local function: not a tensor of the file's graph
            continue
        ud = unit_dims.get(node.name, -1)
        if node.kind == "act":
            src = node.inputs[0] if node.inputs else None
            while src in info.view_nodes and by_name[src].inputs:  # torch: a view, same storage
                src = by_name[src].inputs[0]
            pre = recorded.get(info.node_tensor.get(src, "")) if src else None
            if pre is not None and pre.activation == node.activation:
                continue  # read on the layer's pre-activation already
            sites.append(_Site(node, tensor, "act", activation=node.activation, pre=False, unit_dim=ud))
            continue
        if node.kind == "norm":
            scale = next((graph.params[n] for n in node.norm_params
                          if n in graph.params and graph.params[n].role.value == "norm-scale"), None)
            shift = next((n for n in node.norm_params
                          if n in graph.params and graph.params[n].role.value == "norm-shift"), None)
            act = scale.activation if scale is not None else _act_after(node, users)
            site = _Site(node, tensor, "norm", param=scale.name if scale is not None else None,
                         activation=act, bias=shift, unit_dim=ud)
        else:
            p = graph.params.get(node.param or "")
            act = p.activation if p is not None else None
            if act is None:  # e.g. a BatchNorm folded into the layer: the act follows directly
                act = _act_after(node, users)
            # copied units are a symmetry of trained weights: a buffer or a fixed table (re-roled by
            # initaudit.roles) is not judged for them, as the torch probe does not hook it
            site = _Site(node, tensor, "layer", param=node.param, activation=act,
                         identical=p is None or p.is_weight,
                         bias=node.bias, unit_dim=ud)
        recorded[tensor] = site
        sites.append(site)
    if missing:
        notes.append(f"{missing} site(s) inside local functions could not be exposed")
    out_node = next((n for n in graph.nodes if n.kind == "output"), None)
    for o in model.graph.output:
        if o.name in produced:
            sites.append(_Site(Node(o.name, "output", out_node.inputs if out_node else []), o.name,
                               "output", pre=False))
    return sites


def _run_segments(model, segments: list[tuple[int, int]], feeds: Mapping[str, np.ndarray],
                  site_tensors: list[str], weights: _Weights, info, threads: int | None,
                  on_site: Callable[[str, np.ndarray], None], runtime) -> None:
    """Run the segments in order, handing on the tensors that cross each cut; ``on_site`` gets
    every exposed site output (which is dropped afterwards unless a later segment reads it).
    onnxruntime runs in ``runtime``'s isolated process (:mod:`initaudit.probe.ort_process`)."""
    nodes = model.graph.node
    site_set = set(site_tensors)
    needs = []  # tensors each segment reads from before it
    for start, end in segments:
        made: set[str] = set()
        want: set[str] = set()
        for n in nodes[start:end]:
            want |= {t for t in _node_inputs(n) if t not in made and t not in weights.protos}
            made |= {o for o in n.output if o}
        needs.append(want)
    held: dict[str, np.ndarray] = dict(feeds)
    for k, (start, end) in enumerate(segments):
        later = set().union(*needs[k + 1:]) if k + 1 < len(segments) else set()
        fetch = [o for n in nodes[start:end] for o in n.output if o and (o in site_set or o in later)]
        if not fetch:
            continue
        inputs = {t: held[t] for t in needs[k] if t in held}
        blob, in_memory = _segment_model(model, start, end, inputs, fetch, weights)
        outs = runtime.run(blob, fetch, inputs, {n: weights.values[n] for n in in_memory},
                           threads or min(_cpu_count(), 16),
                           info.base_dir if info.has_external else None)
        del blob
        for i, name in enumerate(fetch):
            arr, outs[i] = outs[i], None
            if arr is None:  # a non-numeric output (strings): nothing to summarise
                continue
            if name in later:  # a copy: ORT's arrays keep the whole part's arena alive
                held[name] = np.array(arr, copy=True)
            if name in site_set:
                on_site(name, arr)
            del arr
        del outs
        for t in list(held):  # drop what no later segment reads
            if t not in later:
                del held[t]
        _release_memory()


_LIBC: Any = None


def _release_memory() -> None:
    """Hand freed heap memory back to the OS between parts (glibc keeps freed blocks of the
    size of these outputs in the heap, so RSS would keep every part's outputs)."""
    global _LIBC
    if _LIBC is None:
        try:
            import ctypes
            import ctypes.util

            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


# ---- the probe ------------------------------------------------------------------------------


def _skip(reason: str, batch_size: int, seed: int) -> ProbeResult:
    return ProbeResult(ran=False, batch_size=batch_size, seed=seed, skipped_reason=reason)


def _first_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:240] + "...") if len(text) > 240 else (text or type(exc).__name__)


def _run_failure(exc: BaseException) -> str:
    """Why onnxruntime could not run the model, in one line. A graph whose shapes contradict
    each other (onnxruntime's shape inference rejects it while loading: a MatMul of
    incompatible sizes) is not runnable as written anywhere; that is the file's fault (an
    exporter bug), so the line says so and names the node."""
    text = _first_line(exc)
    if "ShapeInferenceError" in text:
        where = text[text.find("Node ("):] if "Node (" in text else text
        return (f"onnxruntime cannot load the graph, whose shapes contradict each other ({where}): the "
                "file is not runnable as written (an exporter bug; re-export it, e.g. with "
                "torch.onnx.export(..., dynamo=True))")
    return f"onnxruntime could not run the model: {text}"


def _model_bytes(graph: ModelGraph, weights: _Weights) -> int:
    """Bytes of the model's files (external data included), for the worker's memory limit."""
    total = 0
    for f in getattr(graph, "files_read", ()) or ():
        try:
            total += os.path.getsize(f)
        except OSError:
            pass
    return max(total, sum(int(a.nbytes) for a in weights.values.values()))


def start_runtime() -> IsolatedRuntime | None:
    """The isolated onnxruntime worker, started now so that its imports run while the caller
    works (None when onnxruntime is not installed); pass it to :func:`run_onnx_probe`."""
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:
        return None
    return IsolatedRuntime().start()


def _runtime_failed(reason: str, graph: ModelGraph, batch_size: int, seed: int) -> ProbeResult:
    """A probe onnxruntime could not run: skipped with the reason, and a warning on stderr (the
    static audit still reports)."""
    import sys

    print(f"initaudit: warning: {graph.target}: probe skipped: {reason}", file=sys.stderr)
    return _skip(reason, batch_size, seed)


def run_onnx_probe(graph: ModelGraph, path: str | Path | None = None, *, batch_size: int = 64,
                   seed: int = 0, inputs: Mapping[str, np.ndarray] | None = None,
                   input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                   site_stats: Callable[..., SiteStats] | None = None, threads: int | None = None,
                   memory_budget: int | None = None, identical: bool | None = None,
                   batch_size_given: bool = False, inputs_source: str | None = None,
                   runtime: IsolatedRuntime | None = None) -> ProbeResult:
    """Run ``graph`` (from :func:`initaudit.loaders.onnx_loader.load_onnx`) with onnxruntime
    and summarise every weight layer's, embedding's, activation's and normalisation's output.

    ``path``: the ONNX file, used only when ``graph`` did not come from ``load_onnx``.
    ``inputs``: real data, name -> numpy array (missing inputs are synthesised).
    ``input_shapes``: name -> shape for synthetic inputs (``--input-shape``; see
    :func:`parse_input_shapes`). ``site_stats``: the per-tensor summary (default
    :func:`initaudit.probe.stats.site_stats`, shared with the torch probe). ``threads``:
    onnxruntime intra-op threads (default: one per core, at most 16). ``memory_budget``: bytes
    of exposed outputs alive at once (default :func:`default_memory_budget`). ``identical``:
    False skips the identical-units search everywhere (default: on layer sites, as the torch
    probe does).

    ``batch_size_given``: the user asked for ``batch_size`` (an error on a fixed-batch model).
    ``inputs_source``: how to name ``inputs`` in errors (the ``--inputs`` file).
    ``runtime``: an isolated onnxruntime worker started earlier (:func:`start_runtime`, while the
    static pass ran), used for every run and left to the caller to close; default: one of our own.

    onnxruntime runs in an isolated process; a model it cannot load or run, or that crashes it,
    gives ``ran=False`` with the reason (and a warning on stderr), as do synthetic inputs beyond
    the budget. Explicit requests the model cannot honour (``input_shapes`` naming no input,
    ``batch_size_given`` on a fixed batch, wrong-shaped ``inputs``) raise ProbeRequestError.
    """
    if site_stats is None:
        from initaudit.probe.stats import site_stats as default_stats

        site_stats = default_stats
    import importlib.util

    if importlib.util.find_spec("onnxruntime") is None:  # it runs in its own process
        return _skip("onnxruntime is not installed", batch_size, seed)
    info = getattr(graph, "onnx", None)
    if info is None:
        from initaudit.loaders.onnx_loader import load_onnx

        src = path or graph.source_path
        if src is None:
            return _skip("no ONNX file to run", batch_size, seed)
        info = load_onnx(src).onnx
    notes: list[str] = []
    sites = _sites(graph, info, notes)
    model = probe_graph(info.model, info.value_shapes, notes)

    specs = GraphInputs(model)
    check_batch_size(specs.get_inputs(), batch_size, batch_size_given and not input_shapes)
    if inputs:
        inputs = check_given(specs.get_inputs(), inputs, inputs_source or "--inputs")
    try:
        feeds, input_notes = synthetic_inputs(specs, batch_size=batch_size, seed=seed,
                                              input_shapes=input_shapes,
                                              embedding_rows=info.embedding_inputs, given=inputs)
    except CannotSynthesise as exc:
        return _runtime_failed(f"no probe inputs: {exc}", graph, batch_size, seed)
    notes += input_notes
    spread = "N(0,1) floats"
    floats = [k for k, a in feeds.items() if a.dtype.kind == "f"]
    rescale = input_rescale(graph)
    if not inputs and len(floats) == 1 and rescale != 1.0:
        # the graph scales its input (x / 255) before the first layer: feed what makes it read unit spread
        feeds[floats[0]] = (feeds[floats[0]] * rescale).astype(feeds[floats[0]].dtype, copy=False)
        distribution, why = rescaled_spread(rescale, "graph")
        spread = f"{distribution} floats {why}"
    lead = [a.shape[0] for a in feeds.values() if a.ndim]
    used_batch = lead[0] if lead else batch_size
    first = feeds[floats[0]] if floats else None
    out: list[SiteStats] = []
    input_std = 1.0
    if first is not None and first.size:  # as the torch probe: the first float input
        site = site_stats(torch.from_numpy(np.ascontiguousarray(first)), name="input", kind="input",
                          unit_dim=1 if first.ndim >= 4 else -1, identical=False)
        input_std = site.spread
        out.append(site)

    # One segment (the whole graph, one session, one run) unless the exposed outputs exceed the
    # budget together; then parts cut where few tensors cross, each run once.
    budget = memory_budget if memory_budget is not None else default_memory_budget()
    position = {o: i for i, n in enumerate(model.graph.node) for o in n.output if o}
    tensors = list(dict.fromkeys(site.tensor for site in sites))
    sizes = [_site_bytes(info.value_shapes.get(t), used_batch) for t in tensors]
    fill = int(np.median([z for z in sizes if z])) if any(sizes) else 0
    site_bytes: dict[int, int] = {}
    for t, z in zip(tensors, sizes):
        site_bytes[position[t]] = site_bytes.get(position[t], 0) + (z or fill)
    carried = set(feeds) | set(position)
    segments = plan_segments(model.graph.node, site_bytes, budget, carried)

    index: dict[str, list[int]] = {}
    for i, site in enumerate(sites):
        index.setdefault(site.tensor, []).append(i)
    results: list[SiteStats | None] = [None] * len(sites)
    biases: dict[str, torch.Tensor | None] = {}

    def on_site(tensor: str, arr: np.ndarray) -> None:
        x = torch.from_numpy(np.ascontiguousarray(arr))
        for i in index[tensor]:
            results[i] = _summarise(sites[i], x, graph, biases, site_stats, identical)

    try:
        weights = _Weights(info.model)
    except Exception as exc:
        return _skip(f"initializers could not be handed to onnxruntime: {_first_line(exc)}", batch_size, seed)
    own = runtime is None
    runtime = IsolatedRuntime() if own else runtime
    runtime.memory = memory_limit(_model_bytes(graph, weights))
    with runtime if own else contextlib.nullcontext(runtime):
        try:
            _run_segments(model, segments, feeds, tensors, weights, info, threads, on_site, runtime)
            if len(segments) > 1:
                notes.append(f"graph run in {len(segments)} parts to keep at most about "
                             f"{budget >> 20} MB of intermediate outputs alive")
        except RuntimeCrash as exc:
            return _runtime_failed(str(exc), graph, batch_size, seed)
        except Exception as exc:
            if len(segments) == 1:
                return _runtime_failed(_run_failure(exc), graph,
                                       batch_size, seed)
            results[:] = [None] * len(sites)
            try:  # a cut onnxruntime did not accept: run the whole graph at once
                _run_segments(model, [(0, len(model.graph.node))], feeds, tensors, weights, info,
                              threads, on_site, runtime)
                notes.append(f"running the graph in parts failed ({_first_line(exc)}); ran it whole, "
                             "beyond the memory budget")
            except RuntimeCrash as exc2:
                return _runtime_failed(str(exc2), graph, batch_size, seed)
            except Exception as exc2:
                return _runtime_failed(_run_failure(exc2), graph,
                                       batch_size, seed)
    depth: dict[str, int] = {}
    for site in results:
        if site is None:
            continue
        site.depth = depth.get(site.kind, 0)
        depth[site.kind] = site.depth + 1
        out.append(site)
    return ProbeResult(
        ran=True, batch_size=used_batch, seed=seed, inputs="file" if inputs else "synthetic",
        input_std=input_std, sites=out, grads=None, loss=None, device="cpu",
        mode="onnxruntime, forward only; BatchNormalization with batch statistics (as the torch probe)",
        inputs_source=("given arrays" if inputs else
                       f"synthetic: {spread}, embedding ids uniform in the table, dynamic dims = batch size"),
        input_shapes=[list(a.shape) for a in feeds.values()], notes=notes)


def _bias(graph: ModelGraph, name: str | None, units: int, cache: dict) -> torch.Tensor | None:
    """The per-unit bias a layer or norm added (taken off for SiteStats.signal_std)."""
    if not name or name not in graph.params:
        return None
    if name not in cache:
        try:
            b = graph.load_tensor(name).reshape(-1).float()
        except Exception:
            b = None
        cache[name] = b
    b = cache[name]
    return b if b is not None and b.numel() == units else None


def _summarise(site: _Site, x: torch.Tensor, graph: ModelGraph, biases: dict,
               stats_fn: Callable[..., SiteStats], identical: bool | None) -> SiteStats:
    ud = site.unit_dim if site.kind != "output" else -1
    if x.dim() and not -x.dim() <= ud < x.dim():
        ud = -1
    kw: dict[str, Any] = {}
    units = x.shape[ud] if x.dim() else 1
    bias = _bias(graph, site.bias, units, biases)
    if bias is not None:
        kw["bias"] = bias
    s = stats_fn(x, name=site.node.name, kind=site.kind, unit_dim=ud, param=site.param,
                 activation=site.activation, pre_activation=site.pre,
                 identical=site.identical if identical is None else (identical and site.identical), **kw)
    if getattr(s, "module", None) is None:
        s.module = site.node.name
    return s
