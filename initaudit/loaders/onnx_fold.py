"""Values an ONNX graph computes from tensor shapes: folded where every shape they read is known.

Exporters write some constants as arithmetic on ``Shape``: torch.onnx's
``scaled_dot_product_attention`` with the default scale computes ``1 / sqrt(d)`` as
``Div(1, Sqrt(Cast(Slice(Shape(q), -1))))`` and multiplies Q and K by its square root. With the
shapes ONNX shape inference gives (static in an export with fixed sizes), that is a number; the
loader reads it like any constant scale. Only small integer/float arithmetic is folded; a shape
with a dynamic dimension, or an op not listed here, gives None (the value stays unknown).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import onnx

from initaudit.loaders.onnx_weights import _attr

_MAX_DEPTH = 16
_BINARY = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide, "Pow": np.power}
_UNARY = {"Sqrt": np.sqrt, "Reciprocal": np.reciprocal, "Neg": np.negative, "Identity": lambda a: a}


def fold(t: str, producer: Callable[[str], onnx.NodeProto | None],
         constant: Callable[[str], np.ndarray | None], shape_of: Callable[[str], tuple],
         depth: int = 0) -> np.ndarray | None:
    """The value of tensor ``t`` when it is computed from constants and known shapes only."""
    if not t or depth > _MAX_DEPTH:
        return None
    arr = constant(t)
    if arr is not None:
        return np.asarray(arr)
    n = producer(t)
    if n is None:
        return None

    def arg(i: int) -> np.ndarray | None:
        return fold(n.input[i], producer, constant, shape_of, depth + 1) if len(n.input) > i and n.input[i] else None

    op = n.op_type
    with np.errstate(all="ignore"):
        try:
            if op == "Shape":
                dims = shape_of(n.input[0])
                if not dims or not all(isinstance(d, int) and d > 0 for d in dims):
                    return None
                full = np.asarray(dims, dtype=np.int64)
                return full[_attr(n, "start", 0):_attr(n, "end", len(dims))]
            if op in _UNARY:
                x = arg(0)
                return None if x is None else _UNARY[op](x.astype(np.float64) if op != "Identity" else x)
            if op in _BINARY:
                a, b = arg(0), arg(1)
                return None if a is None or b is None else _BINARY[op](a.astype(np.float64), b.astype(np.float64))
            if op == "Cast":
                x = arg(0)
                return None if x is None else x.astype(np.float64)
            if op == "Slice":
                x, starts, ends = arg(0), arg(1), arg(2)
                if x is None or starts is None or ends is None or x.ndim != 1:
                    return None
                step = arg(4)
                first, last = int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0])
                return x[first:last:int(step.reshape(-1)[0]) if step is not None else 1]
            if op == "Gather":
                x, idx = arg(0), arg(1)
                if x is None or idx is None:
                    return None
                return np.take(x, idx.astype(np.int64), axis=int(_attr(n, "axis", 0)))
            if op in ("Squeeze", "Unsqueeze", "Reshape", "Flatten"):
                x = arg(0)
                if x is None or x.size != 1:
                    return None  # only scalars, whose reshapes keep the one value
                return x.reshape(())
        except (ValueError, IndexError, TypeError, OverflowError):
            return None
    return None
