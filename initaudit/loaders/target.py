"""Pick the loader for a target and return its format-neutral ModelGraph."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
import torch.nn as nn

from initaudit.errors import TargetError
from initaudit.graph import ModelGraph
from initaudit.loaders.checkpoint import (PICKLE_SUFFIXES, Checkpoint, graph_from_checkpoint,
                                          read_pickle_checkpoint, read_safetensors)
from initaudit.loaders.factory import FactoryTarget, load_factory, looks_like_factory_spec
from initaudit.loaders.parametrized import computed_from
from initaudit.loaders.torch_module import graph_from_module
from initaudit.loaders.wrappers import unwrap_module

_COMMON_PREFIXES = ("model.", "module.", "net.", "network.", "_orig_mod.")


def load_target(target: str | Path | nn.Module, *, model: str | nn.Module | None = None,
                unsafe_pickle: bool = False) -> tuple[ModelGraph, FactoryTarget | None]:
    """ModelGraph for ``target``, and the factory (for example inputs) where one was called.

    ``model`` gives the architecture for a checkpoint (a factory spec or a live module).
    """
    if isinstance(target, nn.Module):
        inner, notes = unwrap_module(target)
        graph = graph_from_module(inner, type(target).__name__)
        graph.notes[:0] = notes
        return graph, None
    spec = str(target)
    if looks_like_factory_spec(spec):
        factory = load_factory(spec)
        graph = graph_from_module(factory.module, spec)
        graph.source_path = factory.source_path
        graph.files_read.update(factory.files_read())
        return graph, factory
    path = Path(spec)
    if not path.exists():
        raise TargetError(spec, "no such file (a module factory is written pkg.module:factory "
                                "or path/to/file.py:factory)")
    if path.is_dir():
        from initaudit.loaders.directory import read_directory

        ckpt = read_directory(path)
    else:
        ckpt = _read_file(path, unsafe_pickle)
    if isinstance(ckpt, ModelGraph):
        return ckpt, None
    if model is None and ckpt.module is not None:  # torch.save(model) under --unsafe-pickle
        graph = graph_from_pickled_module(ckpt, spec)
    elif model is None:
        graph = graph_from_checkpoint(ckpt, spec)
    else:
        graph = None
    if graph is not None:
        graph.code_ran = ckpt.code_ran
        return graph, None
    factory = None
    if isinstance(model, nn.Module):
        # checkpoint values go into a copy, never the caller's model; the names the checkpoint
        # has with a wrapper's prefix are matched by _match_names
        module = copy.deepcopy(unwrap_module(model)[0])
    else:
        factory = load_factory(model)
        module = factory.module
    graph = graph_with_architecture(ckpt, module, spec)
    graph.code_ran = ckpt.code_ran
    if factory is not None:
        graph.files_read.update(factory.files_read())
    return graph, factory


def graph_from_pickled_module(ckpt: Checkpoint, target: str) -> ModelGraph:
    """A full pickled module (``torch.save(model)``, loaded with ``--unsafe-pickle``): the module
    it holds is the architecture, audited as a live module (dataflow, probe), as for a factory."""
    graph = graph_from_module(ckpt.module, target)  # stage evidence from the live module (stage.py)
    graph.source_path = str(ckpt.path)
    graph.files_read.update(str(f.resolve()) for f in ckpt.files)
    graph.notes.extend(ckpt.notes)
    return graph


def _read_file(path: Path, unsafe_pickle: bool) -> Checkpoint | ModelGraph:
    name = path.name.lower()
    if name.endswith(".safetensors") or name.endswith(".safetensors.index.json"):
        return read_safetensors(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return read_pickle_checkpoint(path, unsafe_pickle)
    if path.suffix.lower() == ".onnx":
        from initaudit.loaders.onnx_loader import load_onnx

        return load_onnx(path)
    raise TargetError(path, f"unsupported file type {path.suffix or '(none)'!r}: expected .onnx, "
                            ".pt/.pth/.bin/.ckpt, .safetensors, *.safetensors.index.json or a factory spec")


def _match_names(ckpt_names: list[str], module_names: set[str]) -> dict[str, str]:
    """checkpoint name -> module name, stripping a wrapper prefix when that matches more."""
    best = {n: n for n in ckpt_names if n in module_names}
    for prefix in _COMMON_PREFIXES:
        stripped = {n: n[len(prefix):] for n in ckpt_names
                    if n.startswith(prefix) and n[len(prefix):] in module_names}
        if len(stripped) > len(best):
            best = stripped
    return best


def graph_with_architecture(ckpt: Checkpoint, module: nn.Module, target: str) -> ModelGraph:
    """Checkpoint values placed in the module's architecture (``ckpt --model factory``).

    Values are copied into the module (ties between parameters survive a copy, not an assign),
    so the static audit and the probe see the same tensors.
    """
    own = module.state_dict(keep_vars=True)
    mapping = _match_names(list(ckpt.shapes), set(own))
    if not mapping:
        raise TargetError(ckpt.path, "no tensor name in the checkpoint matches the --model "
                                     f"architecture (e.g. checkpoint {next(iter(ckpt.shapes), '?')!r} "
                                     f"vs model {next(iter(own), '?')!r})")
    mismatched = []
    with torch.no_grad():
        for src, dst in mapping.items():
            value = ckpt.load(src)
            if tuple(value.shape) != tuple(own[dst].shape):
                mismatched.append(f"{src} {tuple(value.shape)} vs {tuple(own[dst].shape)}")
                continue
            own[dst].copy_(value)
    if mismatched:
        raise TargetError(ckpt.path, f"shape mismatch with --model: {mismatched[0]}"
                                     + (f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""))
    graph = graph_from_module(module, target, fmt=ckpt.format)
    loaded = set(mapping.values())
    missing = [n for n, p in graph.params.items() if n not in loaded and not any(a in loaded for a in p.aliases)
               and not computed_from(p, loaded)]  # weight_norm's g v / |v| from the stored g, v
    for name in missing:
        del graph.params[name]
        graph.skipped.append((name, "not in the checkpoint (the factory's value is not judged)"))
    unused = [n for n in ckpt.shapes if n not in mapping]
    if unused:
        graph.notes.append(f"{len(unused)} checkpoint tensor(s) match nothing in --model and were "
                           f"not analysed: {', '.join(unused[:5])}{' ...' if len(unused) > 5 else ''}")
    graph.stage_evidence = list(ckpt.evidence)
    graph.source_path = str(ckpt.path)
    graph.files_read.update(str(f.resolve()) for f in ckpt.files)
    graph.notes.extend(ckpt.notes)
    return graph
