"""Deferred imports: rule metadata (``initaudit rules``, ``explain``, ``config``) and
``initaudit --version`` must load without torch, which costs seconds to import."""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from typing import Any


def lazy_function(module: str, name: str) -> Callable[..., Any]:
    """A stand-in for ``from module import name`` (a function) that imports ``module`` on the
    first call, e.g. ``assess = lazy_function("initaudit.schemes", "assess")`` in a rule module."""

    @functools.cache
    def target() -> Callable[..., Any]:
        return getattr(importlib.import_module(module), name)

    def call(*args: Any, **kwargs: Any) -> Any:
        return target()(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"{module}.{name}, imported on first call."
    return call
