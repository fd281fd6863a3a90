"""Forward and backward probe of a live ``nn.Module`` through hooks.

What it does, in order:

1. Mode. The model is put in eval mode (dropout off, stochastic layers deterministic), except
   batch-statistics normalisation (BatchNorm, InstanceNorm), which runs in train mode: a fresh
   model's running statistics are mean 0 / var 1, so eval-mode BatchNorm is an identity-like
   affine map and would hide what the layer does in training; train mode normalises with the
   probe batch, the realistic training-time picture. The running statistics this updates are
   restored afterwards.
2. Forward. Hooks on every module with a weight ("layer" sites: the output is the layer's
   pre-activation), every normalisation module ("norm" sites) and every activation module whose
   input is not already a recorded layer/norm output ("act" sites). Sites are keyed by call site:
   a module called k times yields ``name``, ``name#1``, ... (DESIGN section 8). The statistics
   (:func:`initaudit.probe.stats.site_stats`) are reduced inside the hook and the tensor is not
   kept. Pre/post hooks on every module keep a stack of modules entered, so a forward that
   raises is reported as one line naming the innermost module and its input shapes.
3. Backward, from the synthetic loss :data:`LOSS`: L = sum_o <r_o, y_o> / batch over every
   floating-point output y_o, with r_o ~ N(0, 1) fixed by the seed. Its gradient at each output
   is r_o / batch whatever the output's value, so a zero-initialised head still sends a signal
   (its own weights get a gradient; what lies below gets exactly what the head passes on), and
   no label format has to be guessed. Gradients come from ``torch.autograd.grad``: ``.grad``
   attributes are never written.
4. Restore, in ``finally`` (also when the forward raises): hooks removed, every module's
   ``training`` flag, every parameter and buffer object (buffers copied back bit for bit, so
   BatchNorm running statistics and ``num_batches_tracked`` are unchanged), each parameter's
   ``.grad``, and the global RNG state (the forward runs in ``torch.random.fork_rng``).

A model probed on another device than its own is copied there first; the original is untouched.
"""

from __future__ import annotations

import copy
import math
from collections import Counter
from typing import Any

import torch
import torch.nn as nn

from torch.utils._python_dispatch import TorchDispatchMode

from initaudit.analysis import unit_rows
from initaudit.errors import first_line
from initaudit.distributed import (full_value, is_sharded, l2_norm, nonfinite_count, unit_row_norms,
                                   unit_rows_at)
from initaudit.graph import Activation, ModelGraph, OpKind, Param, ParamRole
from initaudit.loaders.torch_module import _ACT_MODULES, _NORM, ModuleAttributes, activation_of_module
from initaudit.probe.inputs import CHANNEL_FIRST, ProbeInputs, _flatten
from initaudit.probe.options import ProbeOptions
from initaudit.probe.result import GradStats, ProbeResult, SiteStats
from initaudit.probe.stats import IDENTICAL_RTOL, site_stats

LOSS = ("L = sum over outputs of <r, y> / batch, r ~ N(0, 1) fixed by the seed "
        "(gradient r / batch at every output element)")
MODE = "eval (dropout off); BatchNorm/InstanceNorm in train mode (batch statistics), buffers restored"
_BATCH_STAT_NORMS = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm)
_LAYER_KINDS = (OpKind.LINEAR, OpKind.CONV, OpKind.CONV_TRANSPOSE, OpKind.EMBEDDING,
                OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN, OpKind.ATTENTION)
_SYMMETRY_KINDS = (OpKind.LINEAR, OpKind.CONV, OpKind.CONV_TRANSPOSE)


class _Role:
    __slots__ = ("kind", "param", "activation", "unit_dim", "bias")

    def __init__(self, kind: str, param: str | None, activation: Activation | None, unit_dim: int,
                 bias: torch.Tensor | None = None):
        self.kind, self.param, self.activation, self.unit_dim = kind, param, activation, unit_dim
        self.bias = bias  # the module's own per-unit bias (taken off for SiteStats.signal_std)


def _own_bias(m: nn.Module) -> torch.Tensor | None:
    b = getattr(m, "bias", None)
    return full_value(b) if isinstance(b, torch.Tensor) and b.dim() == 1 else None


def _roles(module: nn.Module, graph: ModelGraph) -> dict[str, _Role]:
    """Which modules are sites, and what each one's output is."""
    modules = dict(module.named_modules())
    roles: dict[str, _Role] = {}
    for p in graph.params.values():
        if not p.is_weight or p.kind is OpKind.NORM:
            continue
        for name in (p.name, *p.aliases):
            owner = name.rpartition(".")[0]
            m = modules.get(owner)
            if m is None or owner in roles:
                continue
            if p.kind not in _LAYER_KINDS and any(True for _ in m.children()):
                continue  # a container's own extra parameter (e.g. a position table)
            recurrent = p.kind in (OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN)
            roles[owner] = _Role("layer", p.name, None if recurrent else p.activation,
                                 1 if isinstance(m, CHANNEL_FIRST) else -1,
                                 None if recurrent else _own_bias(m))
    scales = {p.layer: p for p in graph.params.values() if p.role is ParamRole.NORM_SCALE}
    for name, m in modules.items():
        if name in roles:
            continue
        if isinstance(m, _NORM):
            scale = scales.get(name)
            roles[name] = _Role("norm", scale.name if scale else None,
                                scale.activation if scale else None,
                                1 if isinstance(m, CHANNEL_FIRST) else -1, _own_bias(m))
        elif type(m) in _ACT_MODULES and not isinstance(m, nn.Identity):
            roles[name] = _Role("act", None, activation_of_module(m), 0)
    return roles


def _norm_population(m: nn.Module, x: torch.Tensor | None) -> int | None:
    """Values each batch statistic of ``m`` is taken over: N * prod(spatial) per channel for
    BatchNorm, prod(spatial) per sample and channel for InstanceNorm (``x``: its input)."""
    if x is None or x.dim() < 2:
        return None
    if isinstance(m, nn.modules.instancenorm._InstanceNorm):
        return math.prod(x.shape[x.dim() - m._get_no_batch_dim() + 1:])
    return x.numel() // x.shape[1]


def _first_tensor(out: Any) -> torch.Tensor | None:
    return next((t for t in _flatten(out) if isinstance(t, torch.Tensor)), None)


def _shapes(args: Any) -> str:
    shapes = [tuple(t.shape) for t in _flatten(args) if isinstance(t, torch.Tensor)]
    if not shapes:
        return "no tensor input"
    text = ", ".join(str(s) for s in shapes[:3]) + (", ..." if len(shapes) > 3 else "")
    return f"input shape {text}" if len(shapes) == 1 else f"input shapes {text}"


class _Recorder:
    """Hook bookkeeping: the entered-modules stack and the sites, keyed by call site."""

    def __init__(self, roles: dict[str, _Role], bins: int):
        self.roles = roles
        self.bins = bins
        self.sites: list[SiteStats] = []
        self.calls: Counter[str] = Counter()
        self.depth: Counter[str] = Counter()
        self.stack: list[tuple[str, nn.Module, Any]] = []
        self.last_pre: tuple[int, int, str | None] | None = None
        self.unit_dims: dict[int, int] = {}

    def enter(self, name: str):
        def hook(m, args):
            self.stack.append((name, m, args))
        return hook

    def leave(self, name: str):
        role = self.roles.get(name)

        def hook(m, args, out):
            while self.stack:
                if self.stack.pop()[0] == name:
                    break
            if role is not None:
                site = self.record(name, role, args, out)
                if site is not None and role.kind == "norm" and isinstance(m, _BATCH_STAT_NORMS) and m.training:
                    site.norm_population = _norm_population(m, _first_tensor(args))
        return hook

    def record(self, name: str, role: _Role, args: Any, out: Any) -> SiteStats | None:
        k = self.calls[name]
        self.calls[name] += 1
        t = _first_tensor(out)
        if t is None or not t.is_floating_point():
            return None
        site_name = f"{name}#{k}" if k else name
        act = role.activation
        if role.kind == "act":
            x = _first_tensor(args)
            if x is not None and self.last_pre == (x.data_ptr(), x.numel(), act.name):
                return None  # its input is the recorded pre-activation of a layer/norm site
            unit_dim = self.unit_dims.get(t.dim(), 1 if t.dim() >= 4 else -1)
            site = site_stats(t, name=site_name, kind="act", unit_dim=unit_dim, activation=act,
                              pre_activation=False, depth=self.depth["act"],
                              histogram_bins=self.bins, identical=False)
        else:
            site = site_stats(t, name=site_name, kind=role.kind, unit_dim=role.unit_dim,
                              param=role.param, activation=act, depth=self.depth[role.kind],
                              histogram_bins=self.bins, identical=role.kind == "layer",
                              bias=role.bias)
            self.unit_dims[t.dim()] = role.unit_dim
            self.last_pre = (t.data_ptr(), t.numel(), act.name if act else None)
        site.module = name
        self.depth[site.kind] += 1
        self.sites.append(site)
        return site

    def failure(self, exc: BaseException, root: nn.Module) -> str:
        msg = first_line(exc)
        cause = f"{type(exc).__name__}: {msg[:240]}" if msg else type(exc).__name__
        if self.stack:
            name, m, args = self.stack[-1]
            k = self.calls[name]
            where = f"{name}#{k}" if k else name
            where = f"{where} ({type(m).__name__})" if where else f"forward() of {type(m).__name__}"
            return f"forward pass failed in {where} on {_shapes(args)}: {cause}"
        return f"forward pass of {type(root).__name__} failed: {cause}"


def _call(module: nn.Module, inputs: ProbeInputs) -> Any:
    return module(*inputs.args, **inputs.kwargs)


def _storage(t: torch.Tensor) -> int | None:
    """Where ``t``'s values live (a DTensor: its local shard); None for a tensor without storage
    of its own (fake and functional tensors), which nothing can write."""
    try:
        return (t.to_local() if is_sharded(t) else t).untyped_storage().data_ptr()
    except (RuntimeError, NotImplementedError, AttributeError):
        return None


class _CopyOnWrite(TorchDispatchMode):
    """Saves a watched tensor's values just before the first op that writes them (an in-place op,
    an ``out=`` argument, a write through ``.data`` or a view: any op whose schema marks the
    argument written, on the same storage). Only what the run changes is copied, so the probe's
    memory is that of a plain forward and backward (cloning every parameter up front doubled
    the weights: +2,944 MB against +1,409 MB on a 297M LLaMA-style model)."""

    def __init__(self, tensors: list[torch.Tensor]):
        super().__init__()
        self.watched = {key: t for t in tensors if t.device.type != "meta" and (key := _storage(t))}
        self.saved: dict[int, torch.Tensor] = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        schema = func._schema
        if schema.is_mutable and self.watched:
            for i, arg in enumerate(schema.arguments):
                if arg.alias_info is None or not arg.alias_info.is_write:
                    continue
                value = args[i] if i < len(args) else kwargs.get(arg.name)
                for t in value if isinstance(value, (list, tuple)) else (value,):
                    if isinstance(t, torch.Tensor) and t.device.type != "meta":
                        key = _storage(t)
                        if key in self.watched and key not in self.saved:  # the first write only
                            self.saved[key] = self.watched[key].detach().clone()
        return func(*args, **kwargs)


class _Snapshot:
    """Everything a probe could change, to be put back exactly. Modes, the parameter objects and
    the gradients are kept by reference, buffers by value; a parameter's values are copied only
    when the run writes them (:class:`_CopyOnWrite`, active while the probe runs)."""

    def __init__(self, module: nn.Module):
        self.modes = [(m, m.training) for m in module.modules()]
        self.params = [(m, k, p) for m in module.modules() for k, p in m._parameters.items()]
        # A forward may write parameters in place (weight-norm hacks, EMA updates): version
        # counters say which moved.
        self.values = [(p, p._version) for _, _, p in self.params if p is not None]
        # Buffers are copied up front: they are small, and the op that writes BatchNorm's running
        # statistics (native_batch_norm) does not declare the write in its schema.
        self.buffers = [(m, k, b, None if b is None else b.detach().clone())
                        for m in module.modules() for k, b in m._buffers.items()]
        self.grads = [(p, p.grad) for _, _, p in self.params if p is not None]
        self.attrs = ModuleAttributes(module)  # a recurrent state or cache a forward keeps
        self.writes = _CopyOnWrite([p for p, _ in self.values])
        self.unrestored = 0

    def restore(self) -> None:
        for m, mode in self.modes:
            m.training = mode
        for m, k, p in self.params:
            if m._parameters.get(k) is not p:
                m._parameters[k] = p
        saved = self.writes.saved
        moved = [p for p, version in self.values if p._version != version]
        with torch.no_grad():
            for key, kept in saved.items():  # written (through .data too: its own version counter)
                self.writes.watched[key].copy_(kept)
            for m, k, b, kept in self.buffers:
                if m._buffers.get(k) is not b:
                    m._buffers[k] = b
                if b is not None:
                    b.copy_(kept)
        # written where the mode did not see it (another thread, an op whose schema hides the write)
        self.unrestored = sum(1 for p in moved if _storage(p) not in saved)
        self.writes.saved = {}
        for p, g in self.grads:
            if p.grad is not g:
                p.grad = g
        self.attrs.restore()


def _device_of(module: nn.Module) -> torch.device:
    t = next(module.parameters(), None)
    if t is None:
        t = next(module.buffers(), None)
    return t.device if t is not None else torch.device("cpu")


def probe_module(module: nn.Module, graph: ModelGraph, inputs: ProbeInputs,
                 options: ProbeOptions) -> ProbeResult:
    """Run the probe on ``module`` (see the module docstring); never raises for model errors."""
    own = _device_of(module)
    device = torch.device(options.device) if options.device else own
    if device.type == "cuda" and not torch.cuda.is_available():
        return ProbeResult(ran=False, seed=options.seed, inputs=inputs.kind,
                           skipped_reason=f"--device {options.device}: CUDA is not available")
    notes = []
    if device != own:
        module = copy.deepcopy(module).to(device)  # the user's model stays where it is
        notes.append(f"probed a copy of the model on {device} (the model is on {own})")
    result = ProbeResult(ran=True, batch_size=inputs.batch_size, seed=options.seed,
                         inputs=inputs.kind, inputs_source=inputs.source, loss=None,
                         input_shapes=[list(t.shape) for t in inputs.tensors()],
                         device=str(device), mode=MODE, notes=notes)
    inputs = inputs.to(device)
    roles = _roles(module, graph)
    rec = _Recorder(roles, options.histogram_bins)
    snapshot = _Snapshot(module)
    handles = []
    rng_devices = [device.index or 0] if device.type == "cuda" else []
    try:
        module.eval()
        for m in module.modules():
            if isinstance(m, _BATCH_STAT_NORMS):
                m.train()
        for name, m in module.named_modules():
            handles.append(m.register_forward_pre_hook(rec.enter(name)))
            handles.append(m.register_forward_hook(rec.leave(name)))
        first = next((t for t in inputs.tensors() if t.is_floating_point()), None)
        if first is not None:
            site = site_stats(first, name="input", kind="input", unit_dim=inputs.unit_dim,
                              identical=False, histogram_bins=options.histogram_bins)
            result.sites.append(site)
            result.input_std = site.spread
        with snapshot.writes, torch.random.fork_rng(devices=rng_devices):
            torch.random.default_generator.manual_seed(options.seed)
            if device.type == "cuda":
                torch.cuda.manual_seed(options.seed)
            try:
                with torch.set_grad_enabled(options.backward):
                    out = _call(module, inputs)
            except Exception as exc:  # the model's own error: one line, the static audit goes on
                return ProbeResult(ran=False, batch_size=result.batch_size, seed=options.seed,
                                   inputs=inputs.kind, inputs_source=inputs.source,
                                   skipped_reason=rec.failure(exc, module))
            for h in handles:
                h.remove()
            handles.clear()
            rec.sites[:0] = result.sites
            result.sites = rec.sites
            outputs = _outputs(out)
            for label, t in outputs:
                result.sites.append(site_stats(t, name=label, kind="output", unit_dim=-1,
                                               identical=False, histogram_bins=options.histogram_bins))
            if options.backward:
                try:
                    _backward(module, graph, outputs, result, options)
                except Exception as exc:  # keep the forward picture; say why gradients are missing
                    result.grads = None
                    msg = first_line(exc)[:240]
                    result.notes.append(f"backward pass failed ({type(exc).__name__}: {msg}); "
                                        "gradient rules did not run")
    finally:
        for h in handles:
            h.remove()
        snapshot.restore()
    if snapshot.unrestored:
        result.notes.append(f"{snapshot.unrestored} parameter(s) were written in place where the probe "
                            "could not see it (an op that does not declare the write) and were not restored")
    return result


def _outputs(out: Any) -> list[tuple[str, torch.Tensor]]:
    found: list[tuple[str, torch.Tensor]] = []

    def walk(obj: Any, label: str) -> None:
        if isinstance(obj, torch.Tensor):
            if obj.is_floating_point():
                found.append((label, obj))
        elif isinstance(obj, dict):
            for k, v in obj.items():
                walk(v, f"{label}.{k}")
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{label}[{i}]")

    walk(out, "output")
    return found


def _backward(module: nn.Module, graph: ModelGraph, outputs: list[tuple[str, torch.Tensor]],
              result: ProbeResult, options: ProbeOptions) -> None:
    named = list(module.named_parameters())
    result.frozen = [n for n, p in named if not p.requires_grad]
    trainable = [(n, p) for n, p in named if p.requires_grad]
    ys = [t for _, t in outputs if t.requires_grad]
    if not ys or not trainable:
        result.notes.append("no output depends on a trainable parameter: no backward pass")
        return
    result.loss = LOSS
    gen = torch.Generator().manual_seed(options.seed + 1)
    batch = max(1, result.batch_size)
    directions = [torch.randn(y.shape, generator=gen).to(device=y.device, dtype=y.dtype) / batch
                  for y in ys]
    if any(is_sharded(p) for _, p in trainable):
        # FSDP2 hands gradients to its sharded parameters through .grad (a reduce-scatter in
        # its post-backward hooks), not through autograd.grad: run backward as a training step
        # does. Every rank has the same inputs, so the averaged gradient is the one-process one;
        # the snapshot puts every .grad back afterwards.
        for _, p in trainable:
            p.grad = None
        torch.autograd.backward(ys, grad_tensors=directions)
        grads = [p.grad for _, p in trainable]
    else:
        grads = torch.autograd.grad(ys, [p for _, p in trainable], grad_outputs=directions,
                                    allow_unused=True)
    figures: list[torch.Tensor] = []
    rows_of: list[int] = []
    with torch.no_grad():
        for (name, p), g in zip(trainable, grads):
            # DTensor shards (FSDP2): whole-tensor figures from partial sums over the shards.
            wnorm = l2_norm(p.detach())
            if g is None:
                figures.append(torch.stack([torch.zeros((), device=wnorm.device), wnorm,
                                            torch.zeros((), device=wnorm.device)]))
                rows_of.append(0)
                continue
            # One pass over the gradient: per-row norms give the total norm and the zero rows.
            row_norms = _row_norms(g, graph.params.get(name))
            figures.append(torch.stack([torch.linalg.vector_norm(row_norms), wnorm.to(row_norms.device),
                                        (row_norms == 0).sum().float()]))
            rows_of.append(row_norms.shape[0])
        values = torch.stack(figures).double().cpu().tolist() if figures else []
    result.grads = {}
    for (name, p), g, (norm, wnorm, zero), nrows in zip(trainable, grads, values, rows_of):
        stats = GradStats(norm=norm, weight_norm=wnorm, received=g is not None,
                          zero_rows=int(zero), rows=nrows)
        if g is not None and not math.isfinite(norm):
            stats.nonfinite = nonfinite_count(g)
        result.grads[name] = stats
    _symmetry(graph, dict(zip((n for n, _ in trainable), grads)), result)


def _row_norms(g: torch.Tensor, param: Param | None) -> torch.Tensor:
    """L2 norm of each unit's gradient row (rows along the param's units dimension)."""
    if g.dim() <= 1:
        return full_value(g).float().reshape(-1).abs()
    dim = param.units_dim if param is not None else 0
    if is_sharded(g):
        return unit_row_norms(g, dim)
    g = g.float()
    other = [d for d in range(g.dim()) if d != dim]
    return torch.linalg.vector_norm(g, dim=other)


def _rows(t: torch.Tensor, param: Param | None) -> torch.Tensor:
    if t.dim() == 0:
        return t.reshape(1, 1)
    if t.dim() == 1:
        return t.reshape(-1, 1)
    return unit_rows(t, param) if param is not None else t.reshape(t.shape[0], -1)


def _symmetry(graph: ModelGraph, grads: dict[str, torch.Tensor | None], result: ProbeResult) -> None:
    """For units with identical activations: the gradient rows their weights received."""
    seen = set()
    for site in result.sites:
        if site.kind != "layer" or not site.identical_groups or site.param in seen:
            continue
        seen.add(site.param)
        p = graph.params.get(site.param)
        g = grads.get(site.param)
        stats = (result.grads or {}).get(site.param)
        if p is None or g is None or stats is None or p.kind not in _SYMMETRY_KINDS:
            continue
        sharded = is_sharded(g) and g.dim() >= 2  # read only the groups' rows from the shards
        rows = None if sharded else _rows(full_value(g.detach()).float(), p)
        if (g.shape[p.units_dim] if sharded else rows.shape[0]) != site.units:
            continue
        for group in site.identical_groups:
            block = unit_rows_at(g.detach(), p.units_dim, group) if sharded \
                else rows[torch.tensor(group, device=rows.device)]
            zero = int((~block.ne(0).any(dim=1)).sum())
            stats.group_rows += len(group)
            stats.group_count += 1
            stats.group_zero_rows += zero
            stats.distinct_rows = (stats.distinct_rows or 0) + _distinct(block)


def _distinct(block: torch.Tensor) -> int:
    """Distinct rows of ``block`` (rows equal within IDENTICAL_RTOL of the block's magnitude
    count once), from a sorted random projection: O(rows x cols), no pairwise comparison."""
    scale = float(block.abs().max())
    if scale == 0 or block.shape[0] < 2:
        return 1 if block.shape[0] else 0
    gen = torch.Generator().manual_seed(0x5EED)
    r = torch.randn(block.shape[1], generator=gen, dtype=torch.float64).to(block.device)
    proj = torch.sort(block.double() @ r).values
    tol = IDENTICAL_RTOL * scale * float(r.abs().sum())
    return 1 + int(((proj[1:] - proj[:-1]) > tol).sum())
