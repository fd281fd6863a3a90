"""The op in front of an op nothing models (a custom ONNX domain's op, an op the recogniser does
not know, an unknown torch function) is judged "activation unknown", never "no activation"
(issue 10): IA104 then expects no scheme, accepts any known one, and names the op when a spread
is outside them all. Controls: the same layers before ReLU, and a Shape read of a layer's output
(which reads no values)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from initaudit.cli import main

WIDTH = 64


def mlp(path, act: str, domain: str = "", std: float | None = None, shape_branch: bool = False):
    """Five MatMul+Add layers of 64 units, ``act`` between them; weights at He(relu) scale
    unless ``std`` is given."""
    rng = np.random.default_rng(0)
    nodes, inits, cur = [], [], "x"
    for i in range(5):
        w = rng.standard_normal((WIDTH, WIDTH)) * (std if std is not None else np.sqrt(2 / WIDTH))
        inits += [numpy_helper.from_array(w.astype(np.float32), f"w{i}"),
                  numpy_helper.from_array(np.zeros(WIDTH, np.float32), f"b{i}")]
        nodes += [helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"], name=f"mm{i}"),
                  helper.make_node("Add", [f"m{i}", f"b{i}"], [f"h{i}"], name=f"add{i}")]
        cur = f"h{i}"
        if shape_branch:  # a reshape by the tensor's own shape, as exporters write x.view(x.size())
            nodes += [helper.make_node("Shape", [cur], [f"s{i}"], name=f"shape{i}"),
                      helper.make_node("Reshape", [cur, f"s{i}"], [f"r{i}"], name=f"reshape{i}")]
            cur = f"r{i}"
        if i < 4:
            nodes.append(helper.make_node(act, [cur], [f"a{i}"], name=f"act{i}", domain=domain))
            cur = f"a{i}"
    graph = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", WIDTH])],
                              [helper.make_tensor_value_info(cur, TensorProto.FLOAT, ["n", WIDTH])], inits)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), path)
    return str(path)


def audit(path: str, *args: str) -> dict:
    res = CliRunner().invoke(main, [path, "--isolated", "--format", "json", "-q", *args])
    assert res.exit_code in (0, 1), res.output
    return json.loads(res.stdout)


def hidden_rows(doc: dict) -> list[dict]:
    return [r for r in doc["layers"] if r["param"] in {f"w{i}" for i in range(4)}]


def scale_findings(doc: dict) -> dict[str, dict]:
    return {f["layer"]: f for f in doc["findings"] if f["rule"] == "IA104"}


@pytest.mark.parametrize("act, domain, op", [("FancyAct", "com.example", "com.example::FancyAct"),
                                             ("Atan", "", "Atan")])
def test_unknown_op_after_a_layer_is_activation_unknown(tmp_path, act, domain, op):
    doc = audit(mlp(tmp_path / "m.onnx", act, domain), "--no-probe")
    rows = hidden_rows(doc)
    assert rows and all(r["activation"] is None and r["follows_unknown_op"] == op for r in rows)
    assert all(r["expected"] is None for r in rows)  # no scheme claimed with certainty
    assert not set(scale_findings(doc)) & {r["param"] for r in rows}  # He(relu) is a known scheme


def test_unknown_op_finding_names_the_op_instead_of_no_activation(tmp_path):
    doc = audit(mlp(tmp_path / "m.onnx", "FancyAct", "com.example", std=1.0), "--no-probe")
    found = scale_findings(doc)
    for i in range(4):
        msg = found[f"w{i}"]["message"]
        assert "activation unknown: com.example::FancyAct follows" in msg
        assert "no activation" not in msg and "nearest known scheme" in msg


def test_control_relu_keeps_its_expected_scheme(tmp_path):
    healthy = audit(mlp(tmp_path / "he.onnx", "Relu"), "--no-probe")
    assert all(r["activation"] == "relu" and r["follows_unknown_op"] is None for r in hidden_rows(healthy))
    assert not scale_findings(healthy)
    broken = audit(mlp(tmp_path / "big.onnx", "Relu", std=1.0), "--no-probe")
    found = scale_findings(broken)
    assert all("He std" in found[f"w{i}"]["message"] and "before relu" in found[f"w{i}"]["message"]
               for i in range(4))


def test_control_a_shape_read_is_not_an_unknown_consumer(tmp_path):
    doc = audit(mlp(tmp_path / "m.onnx", "Relu", shape_branch=True), "--no-probe")
    assert all(r["activation"] == "relu" and r["follows_unknown_op"] is None for r in hidden_rows(doc))


def test_probe_of_a_standard_unknown_op_still_runs(tmp_path):
    doc = audit(mlp(tmp_path / "m.onnx", "Atan"))
    assert doc["probe"]["ran"]  # onnxruntime knows Atan; only initaudit does not model it


def test_torch_function_nobody_models_is_activation_unknown(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "atannet.py").write_text(
        "import torch, torch.nn as nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, act):\n"
        "        super().__init__()\n"
        "        self.a, self.b, self.act = nn.Linear(32, 32), nn.Linear(32, 32), act\n"
        "    def forward(self, x):\n"
        "        return self.b(self.act(self.a(x)))\n"
        "def atan():\n    return Net(torch.atan)\n"
        "def tanh():\n    return Net(torch.tanh)\n")
    rows = {r["param"]: r for r in audit("atannet.py:atan", "--no-probe")["layers"]}
    assert rows["a.weight"]["activation"] is None and rows["a.weight"]["follows_unknown_op"]
    control = {r["param"]: r for r in audit("atannet.py:tanh", "--no-probe")["layers"]}
    assert control["a.weight"]["activation"] == "tanh" and control["a.weight"]["follows_unknown_op"] is None


def test_division_by_a_constant_is_a_known_scale_not_an_unknown_op(tmp_path):
    """x / s (attention's 1/sqrt(d) in exported graphs) is a product with 1/s, as the torch
    capture records it; x / y of two signals stays unknown."""
    from initaudit.loaders.onnx_loader import load_onnx

    w = numpy_helper.from_array(np.eye(8, dtype=np.float32), "w")
    two = numpy_helper.from_array(np.array(2.0, np.float32), "two")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
             helper.make_node("Div", ["h", "two"], ["d"], name="scaled"),
             helper.make_node("Div", ["d", "x"], ["y"], name="ratio")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])], [w, two])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "d.onnx")
    kinds = {n.name: (n.kind, n.attrs.get("scale")) for n in load_onnx(tmp_path / "d.onnx").nodes}
    assert kinds["scaled"] == ("mul", 0.5) and kinds["ratio"][0] == "unknown"
