"""``pkg.module:factory`` and ``path/to/file.py:factory`` specs: import the user's code (that is
the user's intent) and call a zero-argument callable that returns an ``nn.Module``."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch.nn as nn

from initaudit.errors import TargetError
from initaudit.loaders.wrappers import unwrap_module


@dataclass
class FactoryTarget:
    module: nn.Module
    source_module: ModuleType  # where the factory lives; may define example_inputs()
    source_path: str | None
    factory: Any = None  # the factory itself: its own ``example_inputs`` attribute comes first

    def files_read(self) -> set[str]:
        """The factory's source file, resolved (a package's __init__ for ``pkg:factory``)."""
        return {str(Path(self.source_path).resolve())} if self.source_path else set()

    def example_inputs(self) -> Any:
        """The user's inputs, if any: the factory's own ``example_inputs`` attribute (one file
        with several factories: ``build.example_inputs = make_batch``), else an
        ``example_inputs()`` function defined next to the factory."""
        fn = getattr(self.factory, "example_inputs", None)
        if not callable(fn):
            fn = getattr(self.source_module, "example_inputs", None)
        return fn() if callable(fn) else None


def looks_like_factory_spec(spec: str) -> bool:
    if ":" not in spec or Path(spec).exists():
        return False
    left, _, right = spec.rpartition(":")
    return bool(left) and right.isidentifier()


def _import_file(path: Path, spec: str) -> ModuleType:
    if not path.is_file():
        raise TargetError(spec, f"no such file: {path}")
    name = f"initaudit_user_{abs(hash(str(path.resolve())))}"
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise TargetError(spec, f"cannot import {path}")
    module = importlib.util.module_from_spec(module_spec)
    sys.path.insert(0, str(path.parent.resolve()))  # so the file can import its neighbours
    try:
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(path.parent.resolve()))
    return module


def _import_from_cwd(name: str) -> ModuleType:
    """``importlib.import_module`` that also sees packages in the current folder, as
    ``python -m`` does (the ``initaudit`` script's own folder is first on sys.path instead)."""
    cwd = str(Path.cwd())
    if cwd in sys.path or "" in sys.path:
        return importlib.import_module(name)
    sys.path.append(cwd)  # after installed packages: a folder named like one does not shadow it
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(cwd)


def load_factory(spec: str) -> FactoryTarget:
    """Import and call the factory named by ``spec``."""
    left, _, attr = spec.rpartition(":")
    try:
        if left.endswith(".py") or "/" in left or "\\" in left:
            source = _import_file(Path(left), spec)
            path = str(Path(left))
        else:
            source = _import_from_cwd(left)
            path = getattr(source, "__file__", None)
    except TargetError:
        raise
    except Exception as exc:  # the user's module failed to import: say so in one line
        raise TargetError(spec, f"importing {left} failed: {type(exc).__name__}: {exc}") from exc
    factory = getattr(source, attr, None)
    if factory is None:
        raise TargetError(spec, f"{left} has no attribute {attr!r}")
    if not callable(factory):
        raise TargetError(spec, f"{attr} is not callable")
    try:
        module = factory()
    except Exception as exc:
        raise TargetError(spec, f"calling {attr}() failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(module, nn.Module):
        raise TargetError(spec, f"{attr}() returned {type(module).__name__}, not a torch.nn.Module")
    return FactoryTarget(unwrap_module(module)[0], source, path, factory)  # a factory may return torch.compile(m)
