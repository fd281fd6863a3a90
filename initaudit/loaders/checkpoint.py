"""Checkpoints: state_dict pickles (``.pt``/``.pth``/``.bin``/``.ckpt``) and safetensors files.

Pickles are scanned against an allow-list before torch's weights-only loader sees them, and
loaded memory-mapped; safetensors are opened lazily and read tensor by tensor. A bare checkpoint
(no ``--model``) is described from names and shapes alone, and the graph says what that leaves
undetermined.
"""

from __future__ import annotations

from collections import Counter

import io
import json
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from initaudit.errors import TargetError, first_line
from initaudit.graph import ModelGraph, OpKind, Param, ParamRole, torch_shape_fans
from initaudit.loaders.low_rank import mark_low_rank
from initaudit.loaders.pickle_safety import loadable_copy, scan_checkpoint
from initaudit.loaders.shards import SafetensorsSource, ShardReader, TensorSource
from initaudit.loaders.wrappers import wrapper_prefix

PICKLE_SUFFIXES = {".pt", ".pth", ".bin", ".ckpt"}
META_REASON = ("on the meta device: it holds no values (materialise it with to_empty() and call "
               "reset_parameters(), or load real weights)")
# Keys that show a checkpoint was saved during or after training.
_TRAINING_KEYS = ("optimizer", "optimizer_state_dict", "optimizer_states", "optim", "epoch",
                  "global_step", "step", "iteration", "lr_scheduler", "lr_schedulers", "scheduler",
                  "pytorch-lightning_version")
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model", "module", "net", "network", "weights")


@dataclass
class Checkpoint:
    """Tensor names, shapes and dtypes, a loader per tensor, and evidence of training."""

    path: Path
    format: str  # "state-dict" | "safetensors"
    shapes: dict[str, tuple[int, ...]]
    dtypes: dict[str, str]
    load: Callable[[str], torch.Tensor]
    evidence: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # every file read (index and shards)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (name, why not analysed)
    module: torch.nn.Module | None = None  # a full pickled module (``--unsafe-pickle`` only)
    code_ran: str | None = None  # why code from the file ran while loading it (None: none did)
    # how another process reopens the tensors (initaudit.pool); None: only through ``load``
    source: TensorSource | None = None


def is_float_dtype(dtype: str) -> bool:
    """torch ("float32", "bfloat16", "float8_e4m3fn") or safetensors ("f32", "bf16", "f8_e4m3")."""
    d = dtype.lower()
    return d.startswith(("float", "bfloat", "half", "double", "f8", "f16", "bf16", "f32", "f64"))


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _training_evidence(top: Mapping) -> list[str]:
    found = []
    for key in _TRAINING_KEYS:
        value = top.get(key)
        if isinstance(value, torch.Tensor):
            value = value.item() if value.numel() == 1 else value.tolist()
        if value is None or value == 0 or (isinstance(value, (dict, list, tuple)) and not value):
            continue
        shown = value if isinstance(value, (int, float, str)) else type(value).__name__
        found.append(f"checkpoint has '{key}' ({shown})")
    return found


def _unwrap(obj: object, path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    if _is_tensor_dict(obj):
        return dict(obj), []
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            inner = obj.get(key)
            if isinstance(inner, Mapping):
                tensors = {k: v for k, v in inner.items() if isinstance(v, torch.Tensor)}
                if tensors:
                    return tensors, _training_evidence(obj)
        tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if tensors:
            return tensors, _training_evidence(obj)
    raise TargetError(path, "no state_dict found: expected a dict of tensors, or one under "
                            f"{', '.join(repr(k) for k in _WRAPPER_KEYS[:3])}")


def _strip_prefix(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Names without the wrappers' prefixes every name shares (``module.`` of DataParallel/DDP,
    ``_orig_mod.`` of a torch.compile'd model's state_dict, in any nesting)."""
    prefix = wrapper_prefix(tensors)
    return {k[len(prefix):]: v for k, v in tensors.items()} if prefix else tensors


UNSAFE_LOAD = ("unpickled with --unsafe-pickle (torch.load(weights_only=False)), since the allow-list "
               "scan refused it ({cause}): code from the file ran with your permissions")


def read_pickle_checkpoint(path: Path, unsafe_pickle: bool = False) -> Checkpoint:
    """A state_dict checkpoint via ``torch.load(weights_only=True)`` after the allow-list scan.

    With ``unsafe_pickle`` a file the scan refuses (a full pickled module, ``torch.save(model)``)
    is unpickled by Python instead; ``code_ran`` then says so and ``module`` holds a loaded
    module. A file the scan accepts is still read the safe way: no code runs."""
    try:
        scan = scan_checkpoint(path)
    except TargetError as exc:
        if not unsafe_pickle:
            raise
        obj = _torch_load(path, weights_only=False)
        code_ran = UNSAFE_LOAD.format(cause=exc.cause.removeprefix("refusing to load: ").split(", ")[0])
        source = _serial_only
    else:
        obj = _torch_load(loadable_copy(scan) if scan.needs_rewrite else path, weights_only=True, name=path)
        code_ran = None
        source = _reopenable(path, scan)
    module = obj if isinstance(obj, torch.nn.Module) else None  # only reachable with --unsafe-pickle
    if module is not None:
        obj = module.state_dict()
    tensors, evidence = _unwrap(obj, path)
    tensors = _strip_prefix(tensors)
    tensors, skipped = admit_tensors(tensors, path)
    ckpt = Checkpoint(path, "state-dict", {k: tuple(v.shape) for k, v in tensors.items()},
                      {k: str(v.dtype).replace("torch.", "") for k, v in tensors.items()},
                      tensors.__getitem__, evidence, files=[path], skipped=skipped, module=module,
                      code_ran=code_ran, source=source(tensors))
    ckpt.evidence += _bn_evidence(tensors)
    return ckpt


def _serial_only(tensors: dict[str, torch.Tensor]) -> None:
    return None


def _reopenable(path: Path, scan) -> Callable[[dict[str, torch.Tensor]], TensorSource | None]:
    """How worker processes can reopen the admitted tensors of a zip checkpoint large enough for
    the pool (initaudit.loaders.zip_records), found by a second, meta-device load of the scanned
    file; a function that gives None where the pool would not run or the records are not exact."""
    from initaudit import pool
    from initaudit.loaders.zip_records import file_stamp, locate_records

    stamp = file_stamp(path)
    if not scan.zip or scan.needs_rewrite or not pool.worker_count(stamp[1]):
        return _serial_only
    try:
        meta, _ = _unwrap(_torch_load(path, weights_only=True, map_location="meta"), path)
    except TargetError:  # a value torch cannot build on the meta device: read it here
        return _serial_only
    meta = _strip_prefix(meta)

    def source(tensors: dict[str, torch.Tensor]) -> TensorSource | None:
        if not all(name in meta for name in tensors):
            return None
        return locate_records(path, {name: meta[name] for name in tensors}, stamp)

    return source


def dense_budget(path: Path) -> int:
    """Bytes a stored tensor may expand to when made dense (a sparse tensor's dense form): 16x
    the file's size, at least 64 MiB. Dense tensors need no budget: their bytes are in the file."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return max(64 << 20, 16 * size)


def admit_tensors(tensors: dict[str, torch.Tensor], path: Path
                  ) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """The tensors the analysis may read, as plain dense tensors, and (name, why) for the rest.

    - Python attributes pickled with a tensor could shadow its methods (``t.reshape = 1``): each
      tensor becomes a plain ``torch.Tensor`` sharing the same storage.
    - Meta tensors hold no values.
    - A stride-0 or overlapping view (``torch.zeros(1).expand(40000, 40000)``: 4 stored bytes,
      6.4 GB as a view) is skipped: its statistics are those of the few stored values, and
      expanding it would turn a 1.6 KB file into gigabytes.
    - Sparse tensors are analysed in dense form within :func:`dense_budget`, else skipped.
    """
    budget = dense_budget(path)
    kept: dict[str, torch.Tensor] = {}
    skipped: list[tuple[str, str]] = []
    for name, value in tensors.items():
        t = torch.Tensor.detach(value)  # unbound: an instance attribute cannot shadow it
        size = "x".join(map(str, t.shape))
        if t.device.type == "meta":
            skipped.append((name, META_REASON))
            continue
        if t.layout != torch.strided:
            dense = t.numel() * t.element_size()
            if dense > budget:
                skipped.append((name, f"a {t.layout} tensor of shape {size} would take {dense:,} bytes "
                                      f"dense, beyond the budget of {budget:,} for this file"))
                continue
            try:
                t = t.to_dense()
            except (RuntimeError, TypeError, ValueError) as exc:
                skipped.append((name, f"a {t.layout} tensor that cannot be made dense ({first_line(exc)})"))
                continue
        elif t.numel() * t.element_size() > t.untyped_storage().nbytes():
            skipped.append((name, f"a stride-0 or overlapping view (shape {size}, stride "
                                  f"{list(t.stride())}) of {t.untyped_storage().nbytes():,} stored bytes: "
                                  "its values are repeats of the stored ones; save it with .contiguous() "
                                  "to audit it"))
            continue
        kept[name] = t
    return kept, skipped


def _torch_load(source: Path | io.BytesIO, weights_only: bool, name: Path | None = None,
                map_location: str = "cpu") -> object:
    """torch.load, memory-mapped where the source is a file (``map_location="meta"``: no storage
    is read); torch's own warnings (protocol, sparse invariants, weights_only notices) are not
    printed: the one error line says it all."""
    path = name or source
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if isinstance(source, io.BytesIO) or map_location == "meta":
                return torch.load(source, map_location=map_location, weights_only=weights_only)
            try:
                return torch.load(source, map_location="cpu", weights_only=weights_only, mmap=True)
            except RuntimeError as exc:
                if "mmap" not in str(exc):
                    raise
                return torch.load(source, map_location="cpu", weights_only=weights_only)
    except TargetError:
        raise
    except Exception as exc:
        first = first_line(exc) or type(exc).__name__
        raise TargetError(path, f"cannot read checkpoint: {first[:200]}") from exc


def _bn_evidence(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    steps = [int(v) for k, v in tensors.items() if k.endswith("num_batches_tracked") and v.numel() == 1]
    if steps and max(steps) > 0:
        return [f"BatchNorm num_batches_tracked = {max(steps)} (running statistics were updated)"]
    return []


INDEX_MAX_BYTES = 64 << 20  # a weight_map of millions of tensors is still a few dozen MB


def read_index(path: Path) -> dict[str, str]:
    """The ``weight_map`` of a ``*.safetensors.index.json``, validated: a JSON object mapping
    tensor names to shard file names; each shard a plain relative name (no NUL, not absolute, no
    ``..``) that resolves inside the index's folder and exists."""
    try:
        if path.stat().st_size > INDEX_MAX_BYTES:
            raise TargetError(path, f"safetensors index larger than {INDEX_MAX_BYTES >> 20} MB")
        index = json.loads(path.read_bytes().decode("utf-8"))
    except TargetError:
        raise
    except UnicodeDecodeError as exc:
        raise TargetError(path, f"not a safetensors index: not UTF-8 text (byte {exc.start})") from None
    except RecursionError:
        raise TargetError(path, "not a safetensors index: JSON nested too deeply") from None
    except ValueError as exc:
        raise TargetError(path, f"not a safetensors index: invalid JSON ({first_line(exc)})") from None
    except OSError as exc:
        raise TargetError(path, f"cannot read the index: {exc.strerror or exc}") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        got = type(weight_map).__name__ if isinstance(index, dict) and "weight_map" in index else "none"
        raise TargetError(path, f"not a safetensors index: needs a non-empty 'weight_map' object of "
                                f"tensor name -> shard file (got {got})")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise TargetError(path, f"weight_map[{name!r}] is a {type(shard).__name__}, not a shard file name")
    base = path.parent.resolve()
    for shard in sorted(set(weight_map.values())):
        if not shard or "\x00" in shard or Path(shard).is_absolute() or shard.startswith(("/", "\\")) \
                or ".." in Path(shard.replace("\\", "/")).parts:
            raise TargetError(path, f"shard {shard!r} is not a plain file name: it points outside the "
                                    "index's folder or holds NUL (absolute or traversing name); refused")
        full = (path.parent / shard).resolve()
        if base not in full.parents:
            raise TargetError(path, f"shard {shard!r} resolves outside the index's folder")
        if not full.is_file():
            raise TargetError(path, f"shard {shard!r} listed in the index does not exist")
    return weight_map


def read_safetensors(path: Path) -> Checkpoint:
    """One ``.safetensors`` file or a sharded ``*.safetensors.index.json``, opened lazily."""
    from safetensors import safe_open

    if path.name.endswith(".json"):
        weight_map = read_index(path)
        shards = sorted(set(weight_map.values()))
    else:
        weight_map, shards = {}, [path.name]
    shapes, dtypes, files = {}, {}, {}
    metadata: dict = {}
    for shard in shards:
        file = path.parent / shard
        try:
            with safe_open(str(file), framework="pt") as handle:  # the header only: no tensor is read
                for key in handle.keys():
                    sl = handle.get_slice(key)
                    shapes[key] = tuple(sl.get_shape())
                    dtypes[key] = str(sl.get_dtype()).lower()
                    files[key] = str(file)
                if shard == shards[0]:
                    metadata = handle.metadata() or {}
        except Exception as exc:
            raise TargetError(file, f"cannot read safetensors: {str(exc).splitlines()[0][:200]}") from exc
    evidence = [f"safetensors metadata has '{k}' ({metadata[k]})" for k in _TRAINING_KEYS if k in metadata]
    prefix = wrapper_prefix(shapes)  # save_file(torch.compile(m).state_dict()): read under m's names
    if prefix:
        shapes, dtypes, files = ({k[len(prefix):]: v for k, v in d.items()} for d in (shapes, dtypes, files))
    ckpt = Checkpoint(path, "safetensors", shapes, dtypes, ShardReader(files, prefix=prefix), evidence,
                      files=[path, *(path.parent / shard for shard in shards)],
                      source=SafetensorsSource(files, prefix))
    bn = [k for k in shapes if k.endswith("num_batches_tracked")]
    ckpt.evidence += _bn_evidence({k: ckpt.load(k) for k in bn})
    return ckpt


# --- bare checkpoints: what names and shapes honestly allow -----------------------------------

_NORM_NAME = re.compile(r"(^|[._])(ln|norm|bn|layernorm|layer_norm|batchnorm|rmsnorm|gn)([._\d]|$)", re.IGNORECASE)
# ``emb`` as a word of its own (``emb``, ``src_emb``, ``tgt_emb``, ``tok_emb``, ``pos_emb``), not
# inside another word (``member``)
_EMBED_NAME = re.compile(r"(embed|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|shared|"
                         r"(^|[._])([a-z\d]+_)*embs?(\.|$))", re.IGNORECASE)
# GPT-2 style Conv1D modules store (in, out).
# What layers call their weight matrices and kernels (torch, Hugging Face, Flax/TF exports).
_LAYER_WEIGHT = re.compile(r"weight|kernel|^w$|_w$|^w_|proj", re.IGNORECASE)
_HF_CONV1D = re.compile(r"(^|\.)(c_attn|c_fc|c_proj|c_attn_q)\.weight$")


def _prefix(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ""


def graph_from_checkpoint(ckpt: Checkpoint, target: str) -> ModelGraph:
    """Describe a checkpoint with no architecture from tensor names and shapes."""
    params: dict[str, Param] = {}
    norm_prefixes = {_prefix(k) for k in ckpt.shapes if k.endswith("running_mean")}
    # A 1-D weight beside no matrix of its own is a norm scale (LayerNorm, RMSNorm).
    matrix_prefixes = {_prefix(k) for k, s in ckpt.shapes.items() if len(s) >= 2}
    skipped = []
    for name, shape in ckpt.shapes.items():
        dtype = ckpt.dtypes[name]
        if not is_float_dtype(dtype):
            skipped.append((name, f"{dtype} tensor: integer and boolean tensors are not weights initaudit "
                                  "can judge (quantised weights need their scales)"))
            continue
        prefix, local = _prefix(name), name.rsplit(".", 1)[-1]
        common = dict(name=name, shape=shape, dtype=dtype, layer=prefix)
        if local in ("running_mean", "running_var"):
            role = ParamRole.RUNNING_MEAN if local == "running_mean" else ParamRole.RUNNING_VAR
            params[name] = Param(op="norm", kind=OpKind.NORM, role=role, **common)
        elif len(shape) == 1 and _layer_scale(name, ckpt.shapes) and prefix not in norm_prefixes:
            params[name] = Param(op="layer-scale", kind=OpKind.OTHER, role=ParamRole.OTHER, **common)
            params[name].notes.append("read as a LayerScale gain (a lone 'gamma' with no shift beside it)")
        elif len(shape) == 1 and (prefix in norm_prefixes or _NORM_NAME.search(name) or (
                local in ("weight", "bias", "gamma", "beta") and prefix not in matrix_prefixes)):
            role = ParamRole.NORM_SHIFT if local in ("bias", "beta") else ParamRole.NORM_SCALE
            params[name] = Param(op="norm", kind=OpKind.NORM, role=role, **common)
        elif "bias" in local or len(shape) == 1:
            role = ParamRole.BIAS if "bias" in local else ParamRole.OTHER
            params[name] = Param(op="unknown", kind=OpKind.OTHER, role=role, **common)
        else:
            params[name] = _bare_weight(name, shape, ckpt.shapes, common)
    pair_norms(params)
    mark_heads(params)
    mark_low_rank(params)  # after the heads: a narrow up factor B is no output head
    graph = ModelGraph(target=target, format=ckpt.format, params=params, load_tensor=ckpt.load,
                       skipped=skipped + ckpt.skipped, tensor_source=ckpt.source,
                       stage_evidence=list(ckpt.evidence), source_path=str(ckpt.path),
                       files_read={str(f.resolve()) for f in ckpt.files})
    graph.notes.append("no architecture given: the activation after each layer, normalisation, "
                       "residual and output positions are unknown, so init scale is compared with "
                       "every known scheme instead of the one the activation calls for, and no "
                       "signal-propagation estimate is made; pass --model pkg.mod:factory for a full audit")
    graph.notes.extend(ckpt.notes)
    from initaudit.loaders.torch_module import detect_family

    graph.family = detect_family(graph)
    return graph


def _bare_weight(name: str, shape: tuple[int, ...], shapes: dict, common: dict) -> Param:
    local = name.rsplit(".", 1)[-1]
    init_in, init_out = torch_shape_fans(shape)
    base = dict(init_fan_in=init_in, init_fan_out=init_out, role=ParamRole.WEIGHT, **common)
    if local.startswith(("weight_hh", "weight_ih")):
        hh = shapes.get(name.replace("weight_ih", "weight_hh"), shape)
        hidden = hh[1]
        n_gates = max(1, shape[0] // hidden)
        gates = {4: ("i", "f", "g", "o"), 3: ("r", "z", "n")}.get(n_gates, ())
        kind = OpKind.RECURRENT_HIDDEN if local.startswith("weight_hh") else OpKind.RECURRENT_INPUT
        return Param(op="recurrent", kind=kind, fan_in=shape[1], fan_out=hidden, gates=gates, **base)
    if local == "in_proj_weight" and len(shape) == 2 and shape[0] == 3 * shape[1]:
        return Param(op="MultiheadAttention", kind=OpKind.ATTENTION, fan_in=shape[1], fan_out=shape[1],
                     gates=("q", "k", "v"), **{**base, "init_fan_in": shape[1], "init_fan_out": shape[1]})
    if _broadcast_shape(shape):
        return Param(op="parameter", kind=OpKind.OTHER, **base)
    if len(shape) == 2 and _EMBED_NAME.search(name):
        return Param(op="embedding", kind=OpKind.EMBEDDING, fan_in=shape[1], fan_out=shape[0], **base)
    if len(shape) == 2 and _HF_CONV1D.search(name):
        return Param(op="Conv1D", kind=OpKind.LINEAR, fan_in=shape[0], fan_out=shape[1], units_dim=1, **base)
    if not _LAYER_WEIGHT.search(local):  # A_log, time_decay, seg_embed: a parameter, not a layer's weight
        p = Param(op="parameter", kind=OpKind.OTHER, **base)
        p.notes.append(f"'{local}' is not a layer weight's name: read as a parameter of no known layer")
        return p
    if len(shape) == 2:
        return Param(op="linear", kind=OpKind.LINEAR, fan_in=shape[1], fan_out=shape[0], **base)
    # ConvTranspose stores (in, out/groups, *k) and cannot be told apart by shape; groups neither.
    p = Param(op="conv", kind=OpKind.CONV, fan_in=init_in, fan_out=init_out, **base)
    p.notes.append("read as a convolution (out, in/groups, *kernel) from its shape")
    return p


def _broadcast_shape(shape: tuple[int, ...]) -> bool:
    """(1, N, D): a class token or position table added to a (B, N, D) signal, not a Conv1d
    with a single output channel; and any tensor with at most one axis longer than 1 ((H, 1, 1)
    temperatures, (1, D) mask tokens, (1, 1, 1, C) gains: see roles.is_channel_vector)."""
    return (len(shape) == 3 and shape[0] == 1) or (len(shape) >= 2 and sum(d > 1 for d in shape) <= 1)


def _digits(local: str) -> str:
    return "".join(ch for ch in local if ch.isdigit())


def pair_norms(params: dict[str, Param]) -> None:
    """Mark each weight that a BatchNorm in the same file normalises (``normalized_after``),
    paired from names and shapes: the norm's running statistics give its channel count C; its
    layer is the weight with C output units beside it - under the same parent with the same
    index (``conv1``/``bn1``, ``conv.weight``/``bn.weight``, ``convolution``/``normalization``)
    or one position before it in a Sequential (``features.0``/``features.1``)."""
    weights = [p for p in params.values() if p.is_weight and p.kind in (OpKind.CONV, OpKind.LINEAR)]
    for stat in [p for p in params.values() if p.role is ParamRole.RUNNING_VAR]:
        channels, layer = stat.shape[0] if stat.shape else None, stat.layer
        parent, _, local = layer.rpartition(".")
        if not channels:
            continue
        before = (f"{parent}.{int(local) - 1}" if parent else str(int(local) - 1)) if local.isdigit() else None
        near = [w for w in weights if w.shape[0] == channels and (
            w.layer.rpartition(".")[0] == parent or w.layer == before or w.layer.startswith(f"{before}."))]
        if len(near) > 1:
            near = [w for w in near if w.layer == before or _digits(w.layer.rpartition(".")[2]) == _digits(local)]
        if len(near) == 1 and not near[0].normalized_after:
            near[0].normalized_after = True
            near[0].notes.append(f"normalised by {layer} (paired from names and shapes: its running "
                                 f"statistics hold {channels} channels)")


def mark_heads(params: dict[str, Param]) -> None:
    """Mark as output heads (``is_output``) the linear weights whose outputs nothing else in the
    file reads, from shapes: a matrix that narrows (fan_out < fan_in, a classifier's classes
    from its features) to a width that is no other weight's fan_in and no normalisation's
    size; then any other such unread matrix whose width is a marked head's (a second
    classifier over the same classes: an auxiliary or distillation head, which may widen,
    768 -> 1000 in Inception-v3's); then an unread widening matrix whose width is no multiple
    (2-16x) of a read width and which at most two others share (ResMLP-12's 384 -> 1000 head,
    DeiT-tiny's two 192 -> 1000). A widening matrix of a width 2-16x a read one stays a layer (a
    fused q/k/v or gate/up projection, whose slices are read), as does one repeated in every block. A zero-initialised head
    (timm's MLP-Mixer, ResMLP) is then legitimate, as with the architecture; a zeroed hidden
    layer (its width is read by the next layer) is not."""
    weights = [p for p in params.values() if p.is_weight]
    read = {p.fan_in for p in weights if p.fan_in} | {
        p.shape[0] for p in params.values() if p.kind is OpKind.NORM and p.shape}
    unread = [p for p in weights if p.kind is OpKind.LINEAR and len(p.shape) == 2 and p.fan_out
              and p.fan_in and p.fan_out not in read]
    for p in unread:
        if p.fan_out < p.fan_in:
            _mark_head(p, f"its {p.fan_out} outputs are no other weight's input width")
    classes = {p.fan_out for p in unread if p.is_output}
    for p in unread:
        if not p.is_output and p.fan_out in classes:
            _mark_head(p, f"its {p.fan_out} outputs are no other weight's input width and another "
                          "head's classes")
    count = Counter(p.fan_out for p in unread)
    for p in unread:
        if not p.is_output and count[p.fan_out] <= 3 and not _split_width(p.fan_out, read | {p.fan_in}):
            _mark_head(p, f"its {p.fan_out} outputs are no other weight's input width, no multiple of "
                          "one, and at most 3 matrices have them (a classifier wider than its features)")


def _split_width(width: int, read: set[int]) -> bool:
    """``width`` = k * r for a read width r and 2 <= k <= 16: a fused projection whose slices
    are read (q/k/v 3d, gate/up 2f, adaLN's 6d modulation), not a head's classes."""
    return any(r and width % r == 0 and 2 <= width // r <= 16 for r in read)


def _mark_head(p: Param, why: str) -> None:
    p.is_output = True
    p.notes.append(f"read as an output head from shapes: {why}")


def _layer_scale(name: str, shapes: dict) -> bool:
    """A 1-D ``gamma`` with no ``beta``/``bias`` beside it and no norm in its name: a LayerScale
    gain (y = x + gamma * f(x), timm/ConvNeXt ``gamma``, ``ls1.gamma``), not a norm scale."""
    prefix, _, local = name.rpartition(".")
    if local != "gamma" or _NORM_NAME.search(name):
        return False
    return not any(f"{prefix}.{s}" in shapes for s in ("beta", "bias"))
