"""What the ONNX probe may be asked for, checked before anything is allocated or run.

Explicit requests the model cannot honour are errors (exit 2, :class:`ProbeRequestError`):
``--batch-size`` on a model whose inputs all have a fixed batch dimension, ``--input-shape``
naming no input or beyond the element limit, ``--inputs`` arrays of the wrong rank, shape or
kind. What was not asked for but cannot be done (synthetic inputs for an input declared
40000x40000, an input type with no synthetic values) raises :class:`CannotSynthesise`: the
probe is skipped with the reason and the static audit still reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from initaudit.errors import ProbeRequestError

SYNTHETIC_ELEMENTS = 1 << 26  # all synthetic inputs together (256 MB of float32)
REQUESTED_ELEMENTS = 1 << 30  # an explicit --input-shape (4 GiB of float32): past that, a typo


class CannotSynthesise(Exception):
    """Synthetic inputs cannot be made within the budget; the message says why."""


def _shown(shape) -> str:
    return "x".join(str(d) for d in shape)


def check_batch_size(inputs, batch_size: int, given: bool) -> None:
    """``--batch-size`` given while every input's batch dimension is fixed (and different)."""
    if not given:
        return
    leads = [(i.name, list(i.shape)) for i in inputs if i.shape]
    if leads and all(isinstance(s[0], int) and s[0] > 0 for _, s in leads) \
            and any(s[0] != batch_size for _, s in leads):
        shapes = ", ".join(f"{n} {s}" for n, s in leads[:3])
        raise ProbeRequestError(f"--batch-size {batch_size}: the model's inputs have a fixed batch "
                                f"dimension ({shapes}); drop --batch-size, or give --input-shape / "
                                "--inputs the model accepts")


def check_synthetic(name: str, shape: tuple[int, ...], requested: bool, total: int) -> int:
    """Elements of all synthetic inputs so far, with this one; raises past the budgets."""
    n = math.prod(shape)
    if requested:
        if n > REQUESTED_ELEMENTS:
            raise ProbeRequestError(f"--input-shape {name}={','.join(map(str, shape))} has {n:,} "
                                    f"elements (at most {REQUESTED_ELEMENTS:,})")
        return total + n
    if total + n > SYNTHETIC_ELEMENTS:
        raise CannotSynthesise(f"input {name!r} is declared {_shown(shape)} ({n:,} elements): synthetic "
                               f"inputs are capped at {SYNTHETIC_ELEMENTS:,} elements in all; give "
                               "--input-shape or --inputs to probe it")
    return total + n


def check_given(inputs, given: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """``--inputs`` arrays checked against the declared inputs (names, rank, fixed dimensions,
    kind) and made contiguous in the declared type; raises ProbeRequestError naming ``source``."""
    from initaudit.probe.onnx_inputs import ORT_TYPES

    by_name = {i.name: i for i in inputs}
    unknown = [k for k in given if k not in by_name]
    if unknown:
        raise ProbeRequestError(f"{source}: names no model input: {', '.join(unknown[:5])} "
                                f"(inputs: {', '.join(by_name) or 'none'})")
    out: dict[str, np.ndarray] = {}
    for name, arr in given.items():
        arr = np.asarray(arr)
        spec = by_name[name]
        declared = list(spec.shape or [])
        if spec.shape is not None and declared and len(declared) != arr.ndim:
            raise ProbeRequestError(f"{source}: input {name!r} has shape {list(arr.shape)}, the model "
                                    f"declares {len(declared)} dimensions {declared}")
        for d, s in zip(declared, arr.shape):
            if isinstance(d, int) and d > 0 and d != s:
                raise ProbeRequestError(f"{source}: input {name!r} has shape {list(arr.shape)}, the "
                                        f"model declares {declared}")
        want = ORT_TYPES.get(spec.type)
        if want is not None and np.dtype(want) != arr.dtype:
            same_kind = (np.dtype(want).kind == "f") == (arr.dtype.kind == "f") \
                and (np.dtype(want).kind == "b") == (arr.dtype.kind == "b")
            if not same_kind:
                raise ProbeRequestError(f"{source}: input {name!r} holds {arr.dtype}, the model "
                                        f"expects {spec.type}")
            arr = arr.astype(want)
        out[name] = np.ascontiguousarray(arr)
    return out
