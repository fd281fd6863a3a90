"""Regenerate examples/mlp_tanh_small_init.onnx, the bundled ONNX example.

A 5-layer, 100-unit tanh MLP whose weights were drawn from N(0, 0.01^2) - the classic
too-small initialisation (Glorot & Bengio, 2010): each layer multiplies the signal's std by
sqrt(fan_in) x 0.01 = 0.1 (tanh is linear near 0), so the fifth layer's output is 1e-5 of the
input and the gradients reaching the first layers shrink the same way.

    python examples/make_onnx_example.py      # writes examples/mlp_tanh_small_init.onnx
    initaudit examples/mlp_tanh_small_init.onnx

The file is built with onnx.helper from a seeded numpy generator, so it is byte-for-byte the
same on every run (no exporter version in the loop). Initializer and node names follow what
torch.onnx.export writes for ``nn.Sequential(Linear, Tanh, ..., Linear)``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

WIDTH, DEPTH, CLASSES, STD, SEED = 100, 5, 10, 0.01, 0


def build() -> onnx.ModelProto:
    rng = np.random.default_rng(SEED)
    nodes, inits = [], []
    x = "input"
    for i in range(DEPTH):
        idx = 2 * i  # nn.Sequential index: Linear at 0, 2, 4, ...; Tanh in between
        out_dim = CLASSES if i == DEPTH - 1 else WIDTH
        w = (rng.standard_normal((out_dim, WIDTH)) * STD).astype(np.float32)
        b = np.zeros(out_dim, np.float32)
        inits += [numpy_helper.from_array(w, f"{idx}.weight"), numpy_helper.from_array(b, f"{idx}.bias")]
        y = f"/{idx}/Gemm_output_0"
        nodes.append(helper.make_node("Gemm", [x, f"{idx}.weight", f"{idx}.bias"], [y], name=f"/{idx}/Gemm",
                                      alpha=1.0, beta=1.0, transB=1))
        x = y
        if i < DEPTH - 1:
            a = f"/{idx + 1}/Tanh_output_0"
            nodes.append(helper.make_node("Tanh", [x], [a], name=f"/{idx + 1}/Tanh"))
            x = a
    nodes.append(helper.make_node("Identity", [x], ["logits"], name="/Identity"))
    graph = helper.make_graph(nodes, "mlp_tanh_small_init",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", WIDTH])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
                              inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="initaudit-example", producer_version="1")
    model.ir_version = 8
    model.doc_string = ("5-layer 100-unit tanh MLP, weights N(0, 0.01^2): vanishing signal. "
                        "Regenerate with examples/make_onnx_example.py")
    onnx.checker.check_model(model)
    return model


def main(argv: list[str]) -> int:
    out = Path(argv[1]) if len(argv) > 1 else Path(__file__).with_name("mlp_tanh_small_init.onnx")
    out.write_bytes(build().SerializeToString())
    print(f"wrote {out} ({out.stat().st_size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
