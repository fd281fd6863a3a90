"""The wrappers users hand their models over in: ``torch.compile`` (``OptimizedModule``, its
module under ``_orig_mod``) and data parallelism (``DataParallel``/``DistributedDataParallel``,
under ``module``). The audit is of the model inside: the wrapper owns no parameter of its own,
only renames every one (``_orig_mod.``/``module.``), and a compiled forward cannot run under the
capture's and the probe's dispatch modes, while the module inside runs the same maths eagerly."""

from __future__ import annotations

from collections.abc import Collection

import torch.nn as nn

# What the wrappers put in front of every name of a state_dict (DataParallel/DDP, torch.compile).
WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def _inner(module: nn.Module) -> nn.Module | None:
    """The wrapped module, or None when ``module`` is no wrapper."""
    from torch._dynamo.eval_frame import OptimizedModule

    if isinstance(module, OptimizedModule):
        return module._orig_mod
    if isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
        return module.module
    return None


def unwrap_module(module: nn.Module) -> tuple[nn.Module, list[str]]:
    """(the model inside every wrapper, one note per wrapper taken off)."""
    notes = []
    while (inner := _inner(module)) is not None:
        notes.append(f"audited the module inside {type(module).__name__} ({type(inner).__name__}): "
                     "the wrapper holds no parameter of its own")
        module = inner
    return module, notes


def wrapper_prefix(names: Collection[str]) -> str:
    """The wrappers' prefixes every name shares, in any nesting (``module._orig_mod.``), or ""."""
    prefix = ""
    while names and (w := next((w for w in WRAPPER_PREFIXES
                                if all(n.startswith(prefix + w) for n in names)), None)):
        prefix += w
    return prefix
