"""Probe inputs: a file (``--inputs``), the user's ``example_inputs()``, or synthetic batches:
by the model ecosystem's convention (Hugging Face, timm, torchvision, diffusers,
``nn.Transformer*``: :mod:`initaudit.probe.conventions`), else inferred from the first layer.

First-layer synthetic inputs (seeded, ``batch`` = ``--batch-size``):

| first layer | input |
|---|---|
| Linear / HF Conv1D (in) | N(0, 1), shape (batch, in) |
| Conv1d / Conv2d / Conv3d (c) | N(0, 1), shape (batch, c, 64) / (batch, c, 32, 32) / (batch, c, 16, 16, 16) |
| ConvTranspose1d/2d/3d (c) | N(0, 1), shape (batch, c, 16) / (batch, c, 8, 8) / (batch, c, 4, 4, 4) |
| Embedding / EmbeddingBag (n) | token ids uniform on [0, n), shape (batch, 16) |
| RNN / LSTM / GRU (in) | N(0, 1), shape (batch, 16, in) with batch_first, else (16, batch, in) |
| BatchNorm1d/2d/3d, GroupNorm, LayerNorm | N(0, 1) shaped as for the matching layer above |

Where the forward rejects that default (a flattened feature map into a fixed-width Linear
fixes the image size, a Linear first layer may take a set), the common sizes are tried in
order, one no-gradient eval-mode forward each with every buffer put back, and the first the
forward accepts is used (the source says which were rejected): images 28, 64, 84, 96, 128,
224, 256, 299 (1 for a ConvTranspose's latent map), (batch, 16, in) for a Linear.

A model whose first layout-fixing layer is sequence-first (an RNN or ``nn.MultiheadAttention``
without ``batch_first``, behind any Linear, Embedding or LayerNorm layers) takes its samples in
dimension 1: token ids (16, batch), features (16, batch, in), and the probe's batch size is read
from dimension 1 of every input (files and ``example_inputs()`` too: :func:`batch_dim`).

``--input-shape`` gives the full shape in the model's own layout (token ids when the first layer
is an embedding); it overrides ``--batch-size``. Input files are read without unpickling code:
``torch.load(weights_only=True)`` for a tensor, a tuple/list of tensors (positional arguments)
or a dict of tensors (keyword arguments); ``.npy`` (one array) and ``.npz`` (``arr_0, arr_1, ...`` positional, other names
keyword) with ``allow_pickle=False``.
"""

from __future__ import annotations

import inspect
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from initaudit.errors import TargetError, first_line
from initaudit.graph import ModelGraph
from initaudit.loaders.pickle_safety import scan_checkpoint
from initaudit.loaders.torch_module import is_hf_conv1d
from initaudit.probe.conventions import elements, from_convention
from initaudit.probe.profile import input_rescale, rescaled_spread

SEQ_LEN = 16
CONV_SPATIAL = {1: (64,), 2: (32, 32), 3: (16, 16, 16)}
CONV_T_SPATIAL = {1: (16,), 2: (8, 8), 3: (4, 4, 4)}


class ProbeInputError(Exception):
    """Inputs cannot be inferred; the message says why (the probe is skipped, the audit runs)."""

MAX_SYNTHETIC_ELEMENTS = 1 << 30  # 4 GiB of float32: past that a shape is a typo


@dataclass
class ProbeInputs:
    args: tuple = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    kind: str = "synthetic"  # "synthetic" | "file" (DESIGN section 4 vocabulary)
    source: str = ""  # what made them: "synthetic N(0,1) (64, 100) for 0 (Linear)", a path, ...
    unit_dim: int = -1  # where the units of the first input are (1 for images)
    convention: str | None = None  # the ecosystem convention synthetic inputs followed
    batch_dim: int = 0  # where the samples are (1 for sequence-first models: see batch_dim())

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in _flatten((self.args, self.kwargs)) if isinstance(t, torch.Tensor)]

    @property
    def batch_size(self) -> int:
        """Samples in the first input: its size in ``batch_dim`` (a tensor without that dim is
        one sample)."""
        ts = self.tensors()
        return int(ts[0].shape[self.batch_dim]) if ts and ts[0].dim() > self.batch_dim else 1

    def to(self, device: torch.device | str) -> ProbeInputs:
        move = lambda v: _map(v, lambda t: t.to(device))  # noqa: E731
        return replace(self, args=move(self.args), kwargs=move(self.kwargs))


def _flatten(obj: Any):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _flatten(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _flatten(v)


def _map(obj: Any, fn):
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, dict):
        return {k: _map(v, fn) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_map(v, fn) for v in obj)
    return obj


def from_object(obj: Any, kind: str, source: str) -> ProbeInputs:
    """A tensor (one argument), a tuple/list (positional) or a dict (keyword arguments)."""
    if isinstance(obj, np.ndarray):
        obj = torch.from_numpy(obj)
    if isinstance(obj, torch.Tensor):
        return ProbeInputs((obj,), {}, kind, source, _guess_unit_dim(obj))
    if isinstance(obj, (tuple, list)):
        args = tuple(torch.from_numpy(v) if isinstance(v, np.ndarray) else v for v in obj)
        first = next((t for t in args if isinstance(t, torch.Tensor)), None)
        return ProbeInputs(args, {}, kind, source, _guess_unit_dim(first))
    if isinstance(obj, dict):
        kwargs = {str(k): torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in obj.items()}
        first = next((t for t in kwargs.values() if isinstance(t, torch.Tensor)), None)
        return ProbeInputs((), kwargs, kind, source, _guess_unit_dim(first))
    raise ProbeInputError(f"{source} gave a {type(obj).__name__}; expected a tensor, a tuple/list "
                          "or a dict of tensors")


def _guess_unit_dim(t: torch.Tensor | None) -> int:
    return 1 if t is not None and t.dim() >= 4 else -1


INPUT_BYTES_BUDGET = 1 << 28  # an --inputs tensor stored as a view may expand to at most this


def load_inputs_file(path: str | Path) -> ProbeInputs:
    """Read ``--inputs``; an unreadable, hostile or malformed file is a bad argument (exit 2).

    Nothing is unpickled beyond the allow-list (``.pt``: the checkpoint scan, then
    ``torch.load(weights_only=True)``; ``.npy``/``.npz``: ``allow_pickle=False``). Every array
    must be numeric; ``.npy`` headers are checked against the file's size before anything is
    allocated; every ``.npz`` member must be an array; tensors stored as stride-0 or overlapping
    views are made contiguous only within :data:`INPUT_BYTES_BUDGET`, sparse tensors refused."""
    p = Path(path)
    if not p.is_file():
        raise TargetError(p, "--inputs: no such file")
    try:
        if p.suffix.lower() == ".npy":
            obj: Any = _load_npy(p)
        elif p.suffix.lower() == ".npz":
            obj = _load_npz(p)
        else:
            obj = _load_pt(p)
    except TargetError:
        raise
    except Exception as exc:
        first = first_line(exc) or type(exc).__name__
        raise TargetError(p, f"--inputs: cannot read ({first[:200]}); expected torch.save'd tensors "
                             "(loaded with weights_only=True), .npy or .npz") from exc
    try:
        inputs = from_object(obj, "file", str(p))
    except ProbeInputError as exc:
        raise TargetError(p, f"--inputs: {exc}") from exc
    if not inputs.tensors():
        raise TargetError(p, "--inputs: holds no tensor")
    return _checked(inputs, p)


def _check_array(arr: Any, p: Path, name: str) -> np.ndarray:
    if not isinstance(arr, np.ndarray):
        raise TargetError(p, f"--inputs: {name} is not an array ({type(arr).__name__})")
    if arr.dtype.kind not in "biuf":
        raise TargetError(p, f"--inputs: {name} holds {arr.dtype} values, not numbers")
    return arr


def _npy_header_fits(fh: Any, size: int, p: Path, name: str) -> None:
    """The .npy header's shape must fit in the bytes that follow it (no huge allocation)."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, _fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    else:
        shape, _fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    need = math.prod(shape) * dtype.itemsize
    if need > size - fh.tell():
        raise TargetError(p, f"--inputs: {name} declares shape {list(shape)} ({need:,} bytes) but "
                             f"{size - fh.tell():,} bytes follow its header (truncated or corrupt)")


def _load_npy(p: Path) -> np.ndarray:
    with p.open("rb") as fh:
        _npy_header_fits(fh, p.stat().st_size, p, "the array")
    return _check_array(np.load(p, allow_pickle=False), p, "the array")


def _load_npz(p: Path) -> Any:
    import zipfile

    budget = max(INPUT_BYTES_BUDGET, 64 * p.stat().st_size)
    with zipfile.ZipFile(p) as archive:
        total = sum(i.file_size for i in archive.infolist())
        if total > budget:
            raise TargetError(p, f"--inputs: the archive expands to {total:,} bytes (at most {budget:,})")
        for info in archive.infolist():
            with archive.open(info) as fh:
                if fh.read(6) != b"\x93NUMPY":
                    raise TargetError(p, f"--inputs: member {info.filename!r} is not a .npy array")
            with archive.open(info) as fh:
                _npy_header_fits(fh, info.file_size, p, f"member {info.filename!r}")
    with np.load(p, allow_pickle=False) as z:
        arrays = {k: _check_array(z[k], p, f"member {k!r}") for k in z.files}
    if arrays and all(k.startswith("arr_") and k[4:].isdigit() for k in arrays):
        return tuple(arrays[k] for k in sorted(arrays, key=lambda k: int(k[4:])))
    return arrays


def _load_pt(p: Path) -> Any:
    import warnings

    from initaudit.loaders.pickle_safety import loadable_copy

    try:
        scan = scan_checkpoint(p)  # the allow-list gate, as for checkpoints: no code runs
    except TargetError as exc:
        raise TargetError(p, f"--inputs: {exc.cause}") from exc
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        source = loadable_copy(scan) if scan.needs_rewrite else p
        return torch.load(source, map_location="cpu", weights_only=True)


def _checked(inputs: ProbeInputs, p: Path) -> ProbeInputs:
    """Every tensor dense, numeric and contiguous; views that expand past the budget refused."""
    def fix(t: torch.Tensor) -> torch.Tensor:
        t = torch.Tensor.detach(t)  # a plain tensor: no Python attributes shadowing its methods
        if t.layout != torch.strided:
            raise TargetError(p, f"--inputs: a {t.layout} tensor; probe inputs must be dense")
        if t.is_complex() or t.dtype in (torch.qint8, torch.quint8, torch.qint32):
            raise TargetError(p, f"--inputs: a {t.dtype} tensor; probe inputs must be real numbers")
        stored = t.untyped_storage().nbytes()
        expanded = t.numel() * t.element_size()
        if expanded > stored and expanded > max(INPUT_BYTES_BUDGET, 4 * p.stat().st_size):
            raise TargetError(p, f"--inputs: a {list(t.shape)} tensor stored as a stride-0 or overlapping "
                                 f"view of {stored:,} bytes would expand to {expanded:,} bytes (at most "
                                 f"{INPUT_BYTES_BUDGET:,})")
        return t.contiguous()

    return replace(inputs, args=_map(inputs.args, fix), kwargs=_map(inputs.kwargs, fix))


def _required_inputs(module: nn.Module) -> list[str]:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return ["input"]
    return [n for n, prm in sig.parameters.items()
            if prm.default is inspect.Parameter.empty
            and prm.kind in (prm.POSITIONAL_ONLY, prm.POSITIONAL_OR_KEYWORD)]


def _layers_in_order(module: nn.Module, graph: ModelGraph):
    """(name, module) of the modules with parameters of their own, in forward order (graph
    nodes), then those the graph does not name, in registration order."""
    modules = dict(module.named_modules())
    seen = set()
    for node in graph.nodes:
        name = node.name.split("#")[0]
        if name.endswith(".in_proj") and name not in modules:
            name = name[: -len(".in_proj")]
        m = modules.get(name)
        if m is not None and name and name not in seen and any(True for _ in m.parameters(recurse=False)):
            seen.add(name)
            yield name, m
    for name, m in modules.items():
        if name not in seen and any(True for _ in m.parameters(recurse=False)):
            yield name, m


def first_layer(module: nn.Module, graph: ModelGraph) -> tuple[str, nn.Module] | None:
    """The first module with parameters in forward order (graph nodes), else registration order."""
    return next(_layers_in_order(module, graph), None)


# Layers that keep the leading dimensions of their input as they are: the layout (batch first or
# sequence first) is decided by a later layer.
_LAYOUT_FREE = (nn.Linear, nn.Embedding, nn.LayerNorm)


def batch_dim(module: nn.Module, graph: ModelGraph) -> int:
    """Where the samples are in the model's inputs: 1 when the first layer that fixes a layout is
    sequence-first (``nn.RNN``/``LSTM``/``GRU`` or ``nn.MultiheadAttention`` without
    ``batch_first``, as in ``nn.Transformer*`` built without it: inputs (seq, batch, ...)), else 0.
    Linear, embedding and LayerNorm layers in front keep the leading dims and do not decide;
    convolutions and every other layer are batch first."""
    for _, m in _layers_in_order(module, graph):
        if isinstance(m, (nn.RNNBase, nn.MultiheadAttention)):
            return 0 if m.batch_first else 1
        if not (isinstance(m, _LAYOUT_FREE) or is_hf_conv1d(m)):
            return 0
    return 0


def synthesize(module: nn.Module, graph: ModelGraph, batch: int, seed: int,
               input_shapes: dict[str, tuple[int, ...]] | None = None) -> ProbeInputs:
    """Seeded synthetic inputs: by the model ecosystem's convention
    (:mod:`initaudit.probe.conventions`), else for the first layer (see the module docstring)."""
    if not input_shapes:
        made = from_convention(module, batch, torch.Generator().manual_seed(seed))
        if made is not None:
            if elements(made) > MAX_SYNTHETIC_ELEMENTS:
                raise ProbeInputError(f"{made.convention}: {elements(made):,} input elements (at most "
                                      f"{MAX_SYNTHETIC_ELEMENTS:,}); give --inputs")
            source = made.convention
            if made.batch and made.batch < batch:
                source += f"; batch {made.batch} instead of --batch-size {batch} for inputs this large"
            inputs = ProbeInputs(made.args, made.kwargs, "synthetic", source, made.unit_dim,
                                 made.convention)
            return inputs
    required = _required_inputs(module)
    several = _several(module, graph, required, batch, seed) if len(required) > 1 and not input_shapes else None
    if several is not None:
        return several
    if len(required) != 1:
        names = ", ".join(required) or "none"
        raise ProbeInputError(f"forward() takes {len(required)} required inputs ({names}); synthetic "
                              "inputs are made for one or, one per input, token ids for as many "
                              "embeddings or the first layer's input for each, which the forward "
                              "rejects; give --inputs FILE or define example_inputs()")
    input_shape = None
    if input_shapes:
        if len(input_shapes) > 1 or next(iter(input_shapes)) not in ("", required[0]):
            raise ProbeInputError(f"--input-shape names {', '.join(k or '(unnamed)' for k in input_shapes)}; "
                                  f"forward() takes one input, {required[0]!r}")
        input_shape = next(iter(input_shapes.values()))
    found = first_layer(module, graph)
    if found is None:
        raise ProbeInputError("no layer with parameters to infer the input from; give --inputs "
                              "or --input-shape")
    name, m = found
    label = f"{name or type(m).__name__} ({type(m).__name__})"
    if input_shape is not None and math.prod(input_shape) > MAX_SYNTHETIC_ELEMENTS:
        raise ProbeInputError(f"--input-shape {','.join(map(str, input_shape))} has "
                              f"{math.prod(input_shape):,} elements (at most {MAX_SYNTHETIC_ELEMENTS:,})")
    gen = torch.Generator().manual_seed(seed)
    sequence_first = input_shape is None and batch_dim(module, graph) == 1
    if isinstance(m, (nn.Embedding, nn.EmbeddingBag)):
        shape = input_shape or ((SEQ_LEN, batch) if sequence_first and isinstance(m, nn.Embedding)
                                else (batch, SEQ_LEN))
        ids = torch.randint(0, m.num_embeddings, shape, generator=gen)
        return ProbeInputs((ids,), {}, "synthetic",
                           f"token ids uniform on [0, {m.num_embeddings}) {tuple(shape)} for {label}", -1)
    dtype = _own_float_dtype(m)
    note = ""
    if input_shape is not None:
        shape = input_shape
        unit_dim = 1 if len(shape) >= 3 and _channel_first(m) else -1
    else:
        def shapes(b: int) -> list[tuple[int, ...]]:
            # (batch, features) in front of a sequence-first layer gets the sequence in front
            return [(SEQ_LEN, *s) if sequence_first and len(s) == 2 else s for s in _candidate_shapes(m, b)]
        candidates = shapes(batch)
        if not candidates:
            raise ProbeInputError(f"cannot infer an input for the first layer {label}; give "
                                  "--input-shape or --inputs")
        chosen = _first_accepted(module, shapes(_TRIAL_BATCH), dtype)
        shape = candidates[chosen]
        if chosen:
            rejected = ", ".join(str(s) for s in candidates[:chosen])
            note = (f" (the forward rejects {rejected}; this is the first common size it accepts: "
                    "give --input-shape for another)")
        unit_dim = 1 if _channel_first(m) else -1
    x = torch.randn(shape, generator=gen)
    spread = "N(0, 1)"
    rescale = input_rescale(graph)
    if rescale != 1.0:  # the forward scales its input (x / 255): the first layer reads unit spread
        x = x * rescale
        spread = " ".join(rescaled_spread(rescale, "forward"))
    return ProbeInputs((x.to(dtype),), {}, "synthetic", f"{spread} {tuple(shape)} for {label}{note}", unit_dim)


# Sizes tried in order when the forward rejects the first: the spatial sizes datasets and papers
# use (CIFAR 32, MNIST 28, DCGAN 64, Atari 84, STL 96, ImageNet 224, Inception 299; 1 for a
# generator's latent map), a flattened feature map into a fixed-width Linear fixing one of them;
# a Linear first layer may take a set or a sequence (batch, n, in), an input the forward
# splits in halves before it (RealNVP's x.chunk(2): (batch, 2 in)), or coordinates it encodes
# first (NeRF's positional encoding: (batch, 3) for in = 3 (1 + 2 octaves)).
_SPATIAL = {1: (64, 128, 256, 1024, 16000), 2: (32, 28, 64, 84, 96, 128, 224, 256, 299), 3: (16, 32, 64)}
_SPATIAL_T = {1: (16, 1, 4, 64), 2: (8, 1, 4, 16, 32), 3: (4, 1, 8)}
_TRIAL_BATCH = 2
_TRIAL_SECONDS = 20.0


def _candidate_shapes(m: nn.Module, batch: int) -> list[tuple[int, ...]]:
    """The input shapes to try for first layer ``m``, the default (:func:`_shape_for`) first."""
    first = _shape_for(m, batch)
    if first is None:
        return []
    if isinstance(m, nn.Linear):  # a set or sequence; an input the forward halves first (a coupling flow);
        # coordinates the forward encodes first (NeRF's x, sin(2^k x), cos(2^k x) of xyz: 3 -> 39)
        coords = [(batch, d) for d in (3, 2, 1, 4) if m.in_features > 4 * d and m.in_features % d == 0]
        return [first, (batch, SEQ_LEN, m.in_features), (batch, 2 * m.in_features), *coords]
    if isinstance(m, (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm)) and len(first) >= 3:
        sizes = (_SPATIAL_T if isinstance(m, nn.modules.conv._ConvTransposeNd) else _SPATIAL)[len(first) - 2]
        return [first] + [(*first[:2], *(s,) * (len(first) - 2)) for s in sizes if s != first[2]]
    return [first]


def _own_float_dtype(m: nn.Module) -> torch.dtype:
    return next((p.dtype for p in m.parameters(recurse=False) if p.is_floating_point()), torch.float32)


def _device_of(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _runs(module: nn.Module, args: tuple, read_by_layers: bool = False) -> bool:
    """Whether the module's forward runs on ``args`` (eval mode, no gradient, every buffer and
    mode put back); with ``read_by_layers``, also whether each arg is itself the input of a
    module with parameters (a second sample or token sequence, not a mask the forward
    multiplies by, which N(0, 1) would fake)."""
    from initaudit.probe.torch_probe import _Snapshot  # torch_probe imports this module

    read: set[int] = set()
    hooks = [m.register_forward_pre_hook(lambda m, a: read.update(id(t) for t in a if isinstance(t, torch.Tensor)))
             for m in module.modules() if read_by_layers and any(True for _ in m.parameters(recurse=False))]
    snapshot = _Snapshot(module)
    try:
        module.eval()
        with snapshot.writes, torch.no_grad(), torch.random.fork_rng():
            module(*args)
        return not read_by_layers or all(id(a) in read for a in args)
    except Exception:  # the model's own shape check
        return False
    finally:
        snapshot.restore()
        for h in hooks:
            h.remove()


def _first_accepted(module: nn.Module, shapes: list[tuple[int, ...]], dtype: torch.dtype) -> int:
    """The index of the first shape whose N(0, 1) input the module's forward runs on
    (:func:`_runs`); 0 (the default) when there is one shape or none runs within
    ``_TRIAL_SECONDS``."""
    if len(shapes) < 2:
        return 0
    start = time.monotonic()
    device = _device_of(module)
    for i, shape in enumerate(shapes):
        if _runs(module, (torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(device, dtype),)):
            return i
        if time.monotonic() - start > _TRIAL_SECONDS:
            break
    return 0


def _several(module: nn.Module, graph: ModelGraph, required: list[str], batch: int,
             seed: int) -> ProbeInputs | None:
    """Inputs for a forward of several required inputs, where one trial forward accepts them:
    token ids for each from the embeddings in forward order when the model has at least as many
    (a translation model's ``forward(src, tgt)``: source and target tables), else the first
    layer's input for each (a siamese ``forward(x1, x2)`` through one tower), each read by a
    layer itself (:func:`_runs`). None otherwise."""
    layers = list(_layers_in_order(module, graph))
    tables = [(n, m) for n, m in layers if isinstance(m, nn.Embedding)]
    gen = torch.Generator().manual_seed(seed)
    lead = (SEQ_LEN, batch) if batch_dim(module, graph) == 1 else (batch, SEQ_LEN)
    if len(tables) >= len(required):
        args = tuple(torch.randint(0, m.num_embeddings, lead, generator=gen) for _, m in tables[:len(required)])
        what = "; ".join(f"{arg}: token ids uniform on [0, {m.num_embeddings}) {lead} for {n}"
                         for arg, (n, m) in zip(required, tables))
    elif layers and (shape := _shape_for(layers[0][1], batch)) is not None and not tables:
        name, m = layers[0]
        dtype = _own_float_dtype(m)
        args = tuple(torch.randn(shape, generator=gen).to(dtype) for _ in required)
        what = f"{', '.join(required)}: N(0, 1) {tuple(shape)} each, for {name} ({type(m).__name__})"
    else:
        return None
    device = _device_of(module)
    args = tuple(a.to(device) for a in args)
    if not _runs(module, args, read_by_layers=True):
        return None
    unit_dim = 1 if not tables and _channel_first(layers[0][1]) else -1
    return ProbeInputs(args, {}, "synthetic", f"{what} (one per required input of forward())", unit_dim)


def cast_to_model(inputs: ProbeInputs, module: nn.Module) -> ProbeInputs:
    """Float inputs in the model's floating dtype (fp16/bf16 models: the dtype of its first
    floating parameter); the source says so when a given input changed dtype."""
    dtype = next((p.dtype for p in module.parameters() if p.is_floating_point()), torch.float32)
    if dtype == torch.float32:
        return inputs
    changed = [t.dtype for t in _flatten((inputs.args, inputs.kwargs))
               if isinstance(t, torch.Tensor) and t.is_floating_point() and t.dtype != dtype]
    if not changed:
        return inputs
    cast = lambda v: _map(v, lambda t: t.to(dtype) if t.is_floating_point() else t)  # noqa: E731
    source = inputs.source if inputs.kind == "synthetic" else (
        f"{inputs.source}; {str(changed[0]).removeprefix('torch.')} cast to the model's "
        f"{str(dtype).removeprefix('torch.')}")
    return replace(inputs, args=cast(inputs.args), kwargs=cast(inputs.kwargs), source=source)


# Layers whose inputs and outputs carry units (channels) in dimension 1, not the last one.
CHANNEL_FIRST = (nn.modules.conv._ConvNd, nn.modules.batchnorm._NormBase, nn.GroupNorm,
                 nn.LocalResponseNorm)


def _channel_first(m: nn.Module) -> bool:
    return isinstance(m, CHANNEL_FIRST)


def _shape_for(m: nn.Module, batch: int) -> tuple[int, ...] | None:
    if isinstance(m, nn.Linear):
        return (batch, m.in_features)
    if is_hf_conv1d(m):
        return (batch, int(m.weight.shape[0]))
    if isinstance(m, nn.modules.conv._ConvTransposeNd):
        return (batch, m.in_channels, *CONV_T_SPATIAL[len(m.kernel_size)])
    if isinstance(m, nn.modules.conv._ConvNd):
        return (batch, m.in_channels, *CONV_SPATIAL[len(m.kernel_size)])
    if isinstance(m, nn.RNNBase):
        return (batch, SEQ_LEN, m.input_size) if m.batch_first else (SEQ_LEN, batch, m.input_size)
    if isinstance(m, (nn.BatchNorm1d, nn.InstanceNorm1d)) and m.num_features:
        return (batch, m.num_features)
    if isinstance(m, (nn.BatchNorm2d, nn.InstanceNorm2d)) and m.num_features:
        return (batch, m.num_features, *CONV_SPATIAL[2])
    if isinstance(m, (nn.BatchNorm3d, nn.InstanceNorm3d)) and m.num_features:
        return (batch, m.num_features, *CONV_SPATIAL[3])
    if isinstance(m, nn.GroupNorm):
        return (batch, m.num_channels, *CONV_SPATIAL[2])
    if isinstance(m, nn.LayerNorm):
        return (batch, *m.normalized_shape)
    return None
