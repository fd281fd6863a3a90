"""Unreadable ONNX targets end with TargetError (exit 2, one line), and external data never
reaches outside the model's folder (external-data path traversal is a known CVE class)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from initaudit.errors import TargetError
from initaudit.loaders.onnx_loader import load_onnx
from onnx_models import mlp_onnx

# Files opened while a test watches (sys.audit "open" events); hooks cannot be removed, so the
# hook records only while _WATCH is set.
_OPENED: list[str] = []
_WATCH = False


def _hook(event, args):
    if _WATCH and event == "open" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_hook)


def _load_watching(path: Path):
    global _WATCH
    _OPENED.clear()
    _WATCH = True
    try:
        return load_onnx(path)
    finally:
        _WATCH = False


def _one_line(exc: TargetError) -> str:
    text = str(exc)
    assert "\n" not in text and "Traceback" not in text
    return text


def _external_model(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return mlp_onnx(folder / "m.onnx", depth=2, width=16, external=True)


def _set_location(path: Path, location: str, *, only_first: bool = False) -> None:
    model = onnx.load(str(path), load_external_data=False)
    for t in model.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
        if only_first:
            break
    with open(path, "wb") as f:
        f.write(model.SerializeToString())


# ---- corrupt files --------------------------------------------------------------------------


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.999])
def test_truncated_file(tmp_path, fraction):
    path = mlp_onnx(tmp_path / "m.onnx", depth=3, width=32)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(TargetError) as info:
        g = load_onnx(path)
        for name in g.params:  # a tensor cut short is found when it is read at the latest
            g.load_tensor(name)
    msg = _one_line(info.value)
    assert str(path) in msg and ("corrupt" in msg or "truncated" in msg)


@pytest.mark.parametrize("content", [b"", b"hello, this is not a model\n", bytes(range(256)) * 8,
                                     np.random.default_rng(0).bytes(4096)])
def test_corrupt_or_foreign_file(tmp_path, content):
    path = tmp_path / "bad.onnx"
    path.write_bytes(content)
    with pytest.raises(TargetError) as info:
        load_onnx(path)
    assert str(path) in _one_line(info.value)


def test_audit_raises_target_error(tmp_path):
    import initaudit

    path = tmp_path / "bad.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(TargetError):
        initaudit.audit(str(path))


def test_tensor_data_shorter_than_its_shape(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", depth=2, width=16)
    model = onnx.load(str(path))
    t = model.graph.initializer[0]
    t.raw_data = t.raw_data[: len(t.raw_data) // 2]
    onnx.save_model(model, str(path))
    with pytest.raises(TargetError) as info:  # onnx.checker finds it, or the read
        load_onnx(path).load_tensor(t.name)
    assert t.name in _one_line(info.value)


# ---- external data --------------------------------------------------------------------------


def test_external_data_loads_inside_folder(tmp_path):
    path = _external_model(tmp_path / "model")
    g = _load_watching(path)
    assert g.params["fc0.weight"].shape == (16, 16)
    for name in g.params:
        g.load_tensor(name)
    assert g.onnx.has_external


@pytest.mark.parametrize("location", ["../secret.bin", "sub/../../secret.bin"])
def test_external_data_path_traversal(tmp_path, location):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(4096, np.float32).tobytes())
    path = _external_model(tmp_path / "model")
    _set_location(path, location)
    global _WATCH
    _OPENED.clear()
    _WATCH = True
    try:
        with pytest.raises(TargetError) as info:
            load_onnx(path)
    finally:
        _WATCH = False
    msg = _one_line(info.value)
    assert "outside the model's folder" in msg
    assert not any(Path(p).name == "secret.bin" for p in _OPENED), _OPENED


def test_external_data_absolute_path(tmp_path):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(4096, np.float32).tobytes())
    path = _external_model(tmp_path / "model")
    _set_location(path, str(secret))
    global _WATCH
    _OPENED.clear()
    _WATCH = True
    try:
        with pytest.raises(TargetError) as info:
            load_onnx(path)
    finally:
        _WATCH = False
    assert "absolute path" in _one_line(info.value)
    assert str(secret) not in _OPENED


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symlinks")
def test_external_data_symlink_out_of_folder(tmp_path):
    secret = tmp_path / "secret.bin"
    path = _external_model(tmp_path / "model")
    data = path.parent / (path.name + ".data")
    secret.write_bytes(data.read_bytes())  # a valid payload, but outside the folder
    data.unlink()
    os.symlink(secret, data)
    with pytest.raises(TargetError) as info:
        load_onnx(path)
    assert "outside the model's folder" in _one_line(info.value)


def test_external_data_missing_or_truncated(tmp_path):
    path = _external_model(tmp_path / "model")
    data = path.parent / (path.name + ".data")
    data.write_bytes(data.read_bytes()[:100])
    with pytest.raises(TargetError) as info:
        load_onnx(path)
    assert "truncated" in _one_line(info.value)
    data.unlink()
    with pytest.raises(TargetError) as info:
        load_onnx(path)
    assert "not found" in _one_line(info.value)


def test_cli_exit_code_2(tmp_path):
    """The CLI turns the TargetError into exit code 2 with one line on stderr."""
    import subprocess

    path = tmp_path / "model"
    p = _external_model(path)
    _set_location(p, "../x.bin")
    proc = subprocess.run([sys.executable, "-c", "from initaudit.cli import main; main()", str(p)],
                          capture_output=True, text=True, timeout=120)
    if proc.returncode != 2 and "No module named" in proc.stderr:
        pytest.skip("CLI module not available")
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "outside the model's folder" in lines[0]


def test_external_reference_in_a_constant_node_is_checked(tmp_path):
    """Tensors outside the initializer list (a Constant node's value) are checked too: the
    probe's onnxruntime would otherwise read them."""
    from onnx import TensorProto, helper

    secret = tmp_path / "secret.bin"
    secret.write_bytes(np.zeros(64, np.float32).tobytes())
    folder = tmp_path / "model"
    folder.mkdir()
    value = TensorProto()
    value.name, value.data_type = "c", TensorProto.FLOAT
    value.dims.extend([4, 4])
    value.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "../secret.bin"), ("offset", "0"), ("length", "64")):
        e = value.external_data.add()
        e.key, e.value = k, v
    nodes = [helper.make_node("Constant", [], ["W"], name="const", value=value),
             helper.make_node("MatMul", ["x", "W"], ["y"], name="mm")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    path = folder / "m.onnx"
    path.write_bytes(model.SerializeToString())
    with pytest.raises(TargetError) as info:
        load_onnx(path)
    assert "outside the model's folder" in _one_line(info.value)
