"""The inputs of an ONNX graph as the probe feeds them: the declared inputs (name, type, dims) read
from the model, and synthetic feeds for them. Dynamic dimensions take the batch size unless
``--input-shape`` names them; integer inputs that feed an embedding (Gather) get ids within the
table; other integer inputs (masks) are ones; float inputs are N(0, 1)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from initaudit.errors import ProbeRequestError
from initaudit.probe.onnx_requests import CannotSynthesise, check_synthetic

ORT_TYPES = {
    "tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int16)": np.int16,
    "tensor(int8)": np.int8, "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_,
}

class InputSpec:
    """A graph input as onnxruntime's NodeArg describes it: name, "tensor(float)", dims."""

    def __init__(self, vi):
        from onnx import helper

        tt = vi.type.tensor_type
        self.name = vi.name
        self.type = f"elem {tt.elem_type}"
        try:
            np_type = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
            self.type = next((k for k, v in ORT_TYPES.items() if np.dtype(v) == np_type), self.type)
        except (KeyError, TypeError, ValueError):
            pass
        self.shape = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                      for d in tt.shape.dim] if tt.HasField("shape") else []


class GraphInputs:
    """The graph inputs of an ONNX model, with the ``get_inputs()`` of an ORT session."""

    def __init__(self, model):
        inits = {t.name for t in model.graph.initializer}
        self._inputs = [InputSpec(vi) for vi in model.graph.input if vi.name not in inits]

    def get_inputs(self):
        return self._inputs


def synthetic_inputs(session, *, batch_size: int, seed: int,
                     input_shapes: Mapping[str, tuple[int, ...]] | None = None,
                     embedding_rows: Mapping[str, int] | None = None,
                     given: Mapping[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], list[str]]:
    """Feeds for every input of ``session`` (anything with ``get_inputs()``): ``given`` arrays
    first, else synthetic ones. Returns (feeds, notes)."""
    gen = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    notes: list[str] = []
    shapes = dict(input_shapes or {})
    total = 0
    for inp in session.get_inputs():
        if given and inp.name in given:
            feeds[inp.name] = np.asarray(given[inp.name])
            shapes.pop(inp.name, None)
            continue
        dtype = ORT_TYPES.get(inp.type)
        if dtype is None:
            raise CannotSynthesise(f"input {inp.name!r} has type {inp.type}, which the probe cannot "
                                   "synthesise; pass real inputs with --inputs")
        declared = list(inp.shape or [])
        requested = inp.name in shapes
        if inp.name in shapes:
            shape = tuple(shapes.pop(inp.name))
            if len(declared) == len(shape) and any(isinstance(d, int) and d > 0 and d != s
                                                   for d, s in zip(declared, shape)):
                notes.append(f"--input-shape {inp.name}={','.join(map(str, shape))} differs from the "
                             f"declared shape {declared}")
        else:
            shape = tuple(d if isinstance(d, int) and d > 0 else batch_size for d in declared)
        total = check_synthetic(inp.name, shape, requested, total)
        if dtype in (np.float32, np.float16, np.float64):
            feeds[inp.name] = gen.standard_normal(shape, dtype=np.float32).astype(dtype, copy=False)
        elif dtype is np.bool_:
            feeds[inp.name] = np.ones(shape, dtype=np.bool_)
        elif embedding_rows and inp.name in embedding_rows:
            feeds[inp.name] = gen.integers(0, max(1, embedding_rows[inp.name]), size=shape).astype(dtype)
        else:
            feeds[inp.name] = np.ones(shape, dtype=dtype)
            notes.append(f"integer input {inp.name!r} feeds no embedding: filled with ones")
    if shapes:
        raise ProbeRequestError(f"--input-shape names no model input: {', '.join(sorted(shapes))} "
                          f"(inputs: {', '.join(i.name for i in session.get_inputs())})")
    return feeds, notes
