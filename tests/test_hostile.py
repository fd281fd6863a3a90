"""Hostile and damaged input (issue 11): every file is built here. Each class of attack gets a
test that proves nothing ran (a sentinel file), nothing outside the model's folder was read
(content checks, recorded opens), and the outcome is a report or one line naming the file."""

from __future__ import annotations

import builtins
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from initaudit.cli import main
from initaudit.errors import TargetError, UnsafeCheckpointError
from initaudit.loaders.pickle_safety import scan_checkpoint

PY = sys.executable


def run_cli(*args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    """The CLI in-process (fast); returns (exit code, stdout, stderr)."""
    result = CliRunner().invoke(main, [*args, "-q"], catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def run_subprocess(*args: str, cwd: Path | None = None, code: str | None = None,
                   timeout: float = 120) -> subprocess.CompletedProcess:
    cmd = [PY, "-c", code or "from initaudit.cli import main; main()", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def one_error_line(stderr: str, path: Path | str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("initaudit: error:")]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and "internal error" not in stderr, stderr
    assert str(path) in lines[0] or Path(path).name in lines[0], lines[0]
    return lines[0]


def mlp_onnx(path: Path, *, batch: int | str | None = None, ext: dict | None = None,
             width: int = 4, node_domain: str = "", extra_inputs=()) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, width])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((width, 3)).astype(np.float32), "W")
    if ext is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for k, v in ext.items():
            e = w.external_data.add()
            e.key, e.value = k, v
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"], name="mm"),
             helper.make_node("Relu", ["h"], ["y"], name="relu", domain=node_domain)]
    graph = helper.make_graph(nodes, "g", [x, *extra_inputs], [y], [w])
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(node_domain, 1)] if node_domain else [])
    model = helper.make_model(graph, opset_imports=opsets)
    path.write_bytes(model.SerializeToString())
    return path


STATE = {"fc.weight": torch.randn(8, 4, generator=torch.Generator().manual_seed(0)), "fc.bias": torch.zeros(8)}


# ---- 1. config files never run code from a model's folder ----------------------------------------

def _planted_config(folder: Path, sentinel: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evil_rules.py").write_text(f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('ran')\n")
    (folder / "pyproject.toml").write_text('[tool.initaudit]\nrules = ["evil_rules.py"]\nselect = ["ALL"]\n')
    from safetensors.torch import save_file

    save_file(STATE, folder / "model.safetensors")
    return folder / "model.safetensors"


def test_config_next_to_a_model_never_imports_its_rule_files(tmp_path, monkeypatch):
    sentinel = tmp_path / "SENTINEL"
    target = _planted_config(tmp_path / "downloads" / "model", sentinel)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    code, out, err = run_cli(str(target), "--format", "json")
    assert code in (0, 1), err
    assert not sentinel.exists()
    notes = json.loads(out)["notes"]
    assert any("evil_rules.py" in n and "not loaded" in n and "--trust-config-rules" in n for n in notes)


def test_a_planted_parent_config_is_ignored_too(tmp_path, monkeypatch):
    sentinel = tmp_path / "SENTINEL"
    shared = tmp_path / "shared"
    _planted_config(shared, sentinel)
    (shared / "model.safetensors").unlink()
    from safetensors.torch import save_file

    (shared / "sub").mkdir()
    save_file(STATE, shared / "sub" / "m.safetensors")
    monkeypatch.chdir(tmp_path)
    code, _out, err = run_cli(str(shared / "sub" / "m.safetensors"), "--format", "json")
    assert code in (0, 1) and not sentinel.exists(), err


@pytest.mark.parametrize("how", ["cwd-project", "--config", "--trust-config-rules"])
def test_rule_files_load_from_the_users_project_or_with_opt_in(tmp_path, monkeypatch, how):
    sentinel = tmp_path / "SENTINEL"
    folder = tmp_path / "proj"
    target = _planted_config(folder, sentinel)
    monkeypatch.chdir(folder if how == "cwd-project" else tmp_path)
    extra = {"cwd-project": [], "--config": ["--config", str(folder / "pyproject.toml")],
             "--trust-config-rules": ["--trust-config-rules"]}[how]
    run_cli(str(target), "--format", "json", *extra)
    assert sentinel.exists()  # the user's own project (or explicit opt-in) does load its rules


# ---- 2. a native crash of onnxruntime is one line; the static report still comes out -------------

CRASHING_WORKER = "import os, signal, sys\nsys.stdin.buffer.read(8)\nos.kill(os.getpid(), signal.SIGSEGV)\n"


def test_runtime_crash_is_one_line_and_the_static_report_still_comes_out(tmp_path):
    model = mlp_onnx(tmp_path / "m.onnx", batch="n")
    worker = tmp_path / "crash_worker.py"
    worker.write_text(CRASHING_WORKER)
    code = ("import sys; from pathlib import Path; import initaudit.probe.ort_process as p; "
            f"p.WORKER = Path({str(worker)!r}); from initaudit.cli import main; main()")
    proc = run_subprocess(str(model), "--format", "json", code=code)
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["probe"]["ran"] is False and "crashed (SIGSEGV)" in doc["probe"]["skipped_reason"]
    assert doc["layers"] and "Traceback" not in proc.stderr
    warnings = [ln for ln in proc.stderr.splitlines() if "probe skipped" in ln]
    assert len(warnings) == 1 and "SIGSEGV" in warnings[0]


def test_layernorm_without_bias_runs_or_is_reported_not_fatal(tmp_path):
    """The published crasher's shape (LayerNormalization, optional bias omitted): whatever the
    installed onnxruntime does with it, initaudit's own process survives."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    scale = numpy_helper.from_array(np.ones(4, np.float32), "scale")
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["h"]),
             helper.make_node("LayerNormalization", ["h", "scale"], ["y"], axis=-1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [scale, w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    path = tmp_path / "ln.onnx"
    path.write_bytes(model.SerializeToString())
    proc = run_subprocess(str(path), "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    assert json.loads(proc.stdout)["layers"]


# ---- 3. no byte from outside the model's folder: hard links --------------------------------------

def test_hard_linked_external_data_is_refused_and_never_read(tmp_path, monkeypatch):
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"TOPSECRET" * 6)  # 54 bytes: more than the 48 the tensor needs
    folder = tmp_path / "model"
    folder.mkdir()
    os.link(secret, folder / "w.bin")
    model = mlp_onnx(folder / "m.onnx", ext={"location": "w.bin", "length": "48"})
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy_open(file, *a, **k):
        opened.append(os.path.realpath(file) if isinstance(file, (str, Path)) else str(file))
        return real_open(file, *a, **k)

    def spy_os_open(file, *a, **k):
        opened.append(os.path.realpath(file))
        return real_os_open(file, *a, **k)

    monkeypatch.setattr(builtins, "open", spy_open)
    monkeypatch.setattr(os, "open", spy_os_open)
    code, out, err = run_cli(str(model), "--format", "json")
    monkeypatch.undo()
    assert code == 2
    assert "hard links" in one_error_line(err, model)
    assert "TOPSECRET" not in out + err
    assert str(folder / "w.bin") not in opened and str(secret) not in opened


# ---- 4. the scan reads what torch reads: ambiguous zips are refused -------------------------------

class _Payload:
    def __reduce__(self):
        return (exec, (f"open({str(SENTINEL_HOLDER[0])!r}, 'w').write('ran')",))


SENTINEL_HOLDER: list[Path] = []


def _torch_zip(state) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _hostile_zip(sentinel: Path) -> bytes:
    SENTINEL_HOLDER[:] = [sentinel]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"x": _Payload()}, protocol=2))
        z.writestr("archive/version", "3\n")
    return buf.getvalue()


def _eocd(data: bytes) -> int:
    return data.rfind(b"PK\x05\x06")


def _overlapping(hostile: bytes) -> bytes:
    """Member "blob" whose bytes hold a complete second member (the hostile data.pkl, local
    header and all), which a second central entry names: two members share bytes."""
    inner = hostile[:struct.unpack_from("<I", hostile, _eocd(hostile) + 16)[0]]  # local records
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("archive/notes", "x")
        z.writestr("archive/blob", inner)
        info = z.getinfo("archive/blob")
    outer = buf.getvalue()
    data_start = info.header_offset + 30 + sum(struct.unpack_from("<HH", outer, info.header_offset + 26))
    end = _eocd(outer)
    central = hostile[struct.unpack_from("<I", hostile, _eocd(hostile) + 16)[0]:_eocd(hostile)]
    entries, pos = [], 0
    while pos < len(central):
        size = 46 + sum(struct.unpack_from("<HHH", central, pos + 28))
        entry = bytearray(central[pos:pos + size])
        struct.pack_into("<I", entry, 42, data_start + struct.unpack_from("<I", entry, 42)[0])
        entries.append(bytes(entry))
        pos += size
    record = bytearray(outer[end:end + 22])
    n = struct.unpack_from("<H", record, 10)[0] + len(entries)
    struct.pack_into("<HHI", record, 8, n, n, struct.unpack_from("<I", record, 12)[0] + len(b"".join(entries)))
    return outer[:end] + b"".join(entries) + bytes(record)


def _variants(benign: bytes, hostile: bytes) -> dict[str, bytes]:
    end = _eocd(benign)
    renamed = bytearray(benign)
    renamed[30] = ord("X")  # the first local header's name no longer matches its central entry
    return {
        "two archives (benign last)": hostile + benign,
        "trailing data": benign + b"\0" * 64,
        "prepended data": b"PK\x03\x04" + b"\0" * 60 + benign,
        "second end record": benign + benign[end:],
        "local header disagrees": bytes(renamed),
        "overlapping entries": _overlapping(hostile),
    }


@pytest.mark.parametrize("case", ["two archives (benign last)", "trailing data", "prepended data",
                                  "second end record", "local header disagrees", "overlapping entries"])
def test_ambiguous_zip_checkpoints_are_refused(tmp_path, case):
    sentinel = tmp_path / "SENTINEL"
    data = _variants(_torch_zip(STATE), _hostile_zip(sentinel))[case]
    path = tmp_path / "ckpt.pt"
    path.write_bytes(data)
    before = path.read_bytes()
    code, _out, err = run_cli(str(path), "--format", "json")
    assert code == 2, (case, err)
    one_error_line(err, path)
    assert not sentinel.exists() and path.read_bytes() == before


def test_bytearray_memory_bomb_is_refused(tmp_path):
    path = tmp_path / "bomb.pt"
    # {"w": bytearray(6 GiB)} spelled by hand: GLOBAL builtins.bytearray, (6 GiB,), REDUCE
    body = (b"\x80\x02}q\x00X\x01\x00\x00\x00wcbuiltins\nbytearray\nq\x01\x8a\x05"
            + (6 << 30).to_bytes(5, "little") + b"\x85Rq\x02s.")
    path.write_bytes(body)
    with pytest.raises(UnsafeCheckpointError, match="bytearray"):
        scan_checkpoint(path)


def test_pickle_claiming_a_huge_string_is_a_short_read(tmp_path):
    path = tmp_path / "huge.pt"
    path.write_bytes(b"\x80\x04\x8d" + (1 << 62).to_bytes(8, "little") + b"abc")  # BINUNICODE8
    with pytest.raises(TargetError, match="not a valid pickle"):
        scan_checkpoint(path)


# ---- 5. budgets: stride-0 views, synthetic inputs, --inputs ---------------------------------------

def _peak_rss_mb(proc_code: str) -> float:
    code = (proc_code + "\nimport resource; print('RSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RSS")][-1]
    return int(line.split()[1]) / 1024


def test_stride_zero_checkpoint_is_skipped_with_a_reason_in_bounded_memory(tmp_path):
    path = tmp_path / "s0.pt"
    state = {f"l{i}.weight": torch.zeros(1).expand(40000, 40000) for i in range(20)}
    state["ok.weight"] = torch.randn(8, 4)
    torch.save(state, path)
    assert path.stat().st_size < 20_000
    code = ("import json, initaudit\n"
            f"r = initaudit.audit({str(path)!r}, probe_enabled=False)\n"
            "print('SKIPPED', sum('stride-0' in why for _n, why in r.skipped))")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=60)
    assert "SKIPPED 20" in out.stdout, out.stderr
    assert _peak_rss_mb(code) < 1500


def test_huge_declared_onnx_input_is_not_allocated(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [40000, 40000])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [40000, 3])
    w = numpy_helper.from_array(np.ones((40000, 3), np.float32), "W")
    model = helper.make_model(helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g", [x], [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
    path = tmp_path / "big_input.onnx"
    path.write_bytes(model.SerializeToString())
    code = ("import initaudit\n"
            f"r = initaudit.audit({str(path)!r})\n"
            "print('REASON', r.probe.skipped_reason)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, timeout=120)
    assert "REASON no probe inputs" in out.stdout and "40000x40000" in out.stdout, out.stdout + out.stderr
    assert "probe skipped" in out.stderr
    assert _peak_rss_mb(code) < 1500


def test_stride_zero_inputs_for_onnx_are_made_contiguous(tmp_path):
    model = mlp_onnx(tmp_path / "m.onnx", batch="n")
    inputs = tmp_path / "in.pt"
    torch.save({"x": torch.ones(1, 4).expand(16, 4)}, inputs)
    code, out, err = run_cli(str(model), "--inputs", str(inputs), "--format", "json")
    assert code in (0, 1), err
    probe = json.loads(out)["probe"]
    assert probe["ran"] and probe["inputs"] == "file"


def test_stride_zero_inputs_beyond_the_budget_are_refused(tmp_path):
    model = mlp_onnx(tmp_path / "m.onnx", batch="n", width=40000)
    inputs = tmp_path / "in.pt"
    torch.save({"x": torch.ones(1).expand(40000, 40000)}, inputs)
    code, _out, err = run_cli(str(model), "--inputs", str(inputs))
    assert code == 2 and "stride-0" in one_error_line(err, inputs)


# ---- 6. nothing but the report on stdout -------------------------------------------------------

def test_native_prints_never_reach_the_json_report(tmp_path):
    factory = tmp_path / "noisy.py"
    factory.write_text(textwrap.dedent("""
        import os
        import torch.nn as nn

        os.write(1, b"EP Error: banner written by a native library at import\\n")

        class Noisy(nn.Sequential):
            def forward(self, x):
                os.write(1, b"EP Error: banner written during the forward pass\\n")
                print("a print() in the model")
                return super().forward(x)

        def build():
            return Noisy(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    """))
    proc = run_subprocess(f"{factory}:build", "--format", "json")
    assert proc.returncode in (0, 1), proc.stderr
    doc = json.loads(proc.stdout)  # valid JSON: the banners went to stderr
    assert doc["probe"]["ran"]
    assert "EP Error" in proc.stderr and "EP Error" not in proc.stdout


# ---- 7. --inputs is never silently ignored -------------------------------------------------------

def test_inputs_file_is_validated_when_the_probe_cannot_run(tmp_path):
    from safetensors.torch import save_file

    target = tmp_path / "m.safetensors"
    save_file(STATE, target)
    bad = tmp_path / "in.npz"
    np.savez(bad, a=np.zeros(3))
    with zipfile.ZipFile(bad, "a") as z:
        z.writestr("b.npy", b"not an array")
    code, _out, err = run_cli(str(target), "--inputs", str(bad))
    assert code == 2 and "not a .npy array" in one_error_line(err, bad)
    good = tmp_path / "in.npy"
    np.save(good, np.zeros((2, 4), np.float32))
    code, _out, err = run_cli(str(target), "--inputs", str(good))
    # A valid file the probe cannot use on a bare checkpoint: an explicit request that cannot be
    # honoured (exit 2, one line), never a silent pass.
    assert code == 2 and "static only" in err


# ---- 8. precise causes instead of "internal error" ------------------------------------------------

def _index(tmp_path: Path, weight_map) -> Path:
    p = tmp_path / "m.safetensors.index.json"
    p.write_text(json.dumps({"weight_map": weight_map}))
    return p


def _onnx_with(tmp_path: Path, mutate) -> Path:
    path = mlp_onnx(tmp_path / "m.onnx")
    model = onnx.load(str(path))
    mutate(model)
    data = model.SerializeToString()
    path.write_bytes(data)
    return path


def _non_utf8(tmp_path: Path) -> Path:
    path = mlp_onnx(tmp_path / "m.onnx")
    path.write_bytes(path.read_bytes().replace(b"relu", b"r\xffel"))
    return path


def _set_dims(m, dims):
    del m.graph.initializer[0].dims[:]
    m.graph.initializer[0].dims.extend(dims)


def _npz_with_text(tmp_path: Path) -> Path:
    p = tmp_path / "in.npz"
    with zipfile.ZipFile(p, "w") as z:
        z.writestr("x.npy", b"hello")
    return p


def _st(t: Path) -> Path:
    from safetensors.torch import save_file

    save_file(STATE, t / "m.safetensors")
    return t / "m.safetensors"


def _ext(t: Path, length: str) -> Path:
    np.ones(12, np.float32).tofile(t / "w.bin")
    return mlp_onnx(t / "m.onnx", ext={"location": "w.bin", "length": length})


def _write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data) if isinstance(data, bytes) else path.write_text(data)
    return path


# case -> (build(tmp) -> (CLI args, the file the error must name), the cause it must give)
CAUSES = {
    "non-UTF-8 config": (lambda t: ([str(_st(t)), "--config", str(c := _write(t / "c.toml", b"select = [\"\xff\"]\n"))],
                                    c), "not UTF-8"),
    "deep baseline": (lambda t: ([str(_st(t)), "--baseline", str(b := _write(t / "b.json", "[" * 100000))], b),
                      "nested too deeply"),
    "weight_map list": (lambda t: ([str(i := _index(t, ["a"]))], i), "weight_map"),
    "weight_map int shard": (lambda t: ([str(i := _index(t, {"a": 3}))], i), "not a shard file name"),
    "weight_map NUL shard": (lambda t: ([str(i := _index(t, {"a": "x\x00.safetensors"}))], i), "NUL"),
    "weight_map absolute shard": (lambda t: ([str(i := _index(t, {"a": "/etc/passwd"}))], i), "outside"),
    "negative ONNX dims": (lambda t: ([str(o := _onnx_with(t, lambda m: _set_dims(m, [-4, 3])))], o),
                           "negative dimensions"),
    "unknown dtype enum": (lambda t: ([str(o := _onnx_with(t, lambda m: setattr(m.graph.initializer[0],
                                                                                 "data_type", 99)))], o),
                           "unknown data type 99"),
    "non-UTF-8 protobuf string": (lambda t: ([str(o := _non_utf8(t))], o), "not UTF-8"),
    "npz member not an array": (lambda t: ([str(_st(t)), "--inputs", str(z := _npz_with_text(t))], z),
                                "not a .npy array"),
    "negative external length": (lambda t: ([str(o := _ext(t, "-5"))], o), "negative offset or length"),
}


@pytest.mark.parametrize("case", sorted(CAUSES))
def test_bad_files_get_a_precise_cause(tmp_path, case):
    build, cause = CAUSES[case]
    args, named = build(tmp_path)
    code, _out, err = run_cli(*args)
    assert code == 2, err
    assert cause in one_error_line(err, named)


def test_legitimate_sparse_tensor_and_shadowing_attributes_load(tmp_path):
    t = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    t.reshape = 1  # a pickled attribute that would shadow Tensor.reshape
    t.float = "x"
    path = tmp_path / "odd.pt"
    torch.save({"fc.weight": t, "sp.weight": torch.randn(6, 5).to_sparse(), "fc.bias": torch.zeros(8)}, path)
    code, out, err = run_cli(str(path), "--format", "json")
    assert code in (0, 1), err
    params = {row["param"] for row in json.loads(out)["layers"]}
    assert {"fc.weight", "sp.weight"} <= params


# ---- 9. valid files load; structurally invalid ones are exit 2 with the checker's cause ----------

@pytest.mark.parametrize("zip_format", [True, False])
def test_protocol_4_checkpoint_loads_without_torch_warnings(tmp_path, zip_format):
    path = tmp_path / "p4.pt"
    torch.save(STATE, path, pickle_protocol=4, _use_new_zipfile_serialization=zip_format)
    from initaudit.loaders.checkpoint import read_pickle_checkpoint

    ckpt = read_pickle_checkpoint(path)
    assert all(torch.equal(ckpt.load(k), v) for k, v in STATE.items())
    proc = run_subprocess(str(path), "--format", "json")
    assert proc.returncode in (0, 1) and "Warning" not in proc.stderr, proc.stderr
    assert json.loads(proc.stdout)["layers"]


def _cycle(tmp_path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["y", "W"], ["h"], name="mm"), helper.make_node("Relu", ["h"], ["y"])]
    path = tmp_path / "cycle.onnx"
    path.write_bytes(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                                       opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


def _duplicate_outputs(tmp_path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    w = numpy_helper.from_array(np.eye(4, dtype=np.float32), "W")
    nodes = [helper.make_node("MatMul", ["x", "W"], ["y"]), helper.make_node("Relu", ["x"], ["y"])]
    path = tmp_path / "dup.onnx"
    path.write_bytes(helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w]),
                                       opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())
    return path


@pytest.mark.parametrize("build, cause", [(_cycle, "topologically sorted"), (_duplicate_outputs, "SSA")])
def test_structurally_invalid_onnx_is_exit_2_with_the_checkers_cause(tmp_path, build, cause):
    path = build(tmp_path)
    code, _out, err = run_cli(str(path))
    assert code == 2 and cause in one_error_line(err, path) and "onnx.checker" in err


# ---- explicit probe requests that cannot be honoured; probes nobody asked for --------------------

def test_batch_size_on_a_fixed_batch_model_is_exit_2(tmp_path):
    path = mlp_onnx(tmp_path / "fixed.onnx", batch=1)
    code, _out, err = run_cli(str(path), "--batch-size", "8")
    assert code == 2 and "--batch-size 8" in err and "fixed batch" in err
    code, _out, err = run_cli(str(path))  # not asked for: the declared batch is used
    assert code in (0, 1), err


def test_input_shape_naming_no_input_is_exit_2(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", batch="n")
    code, _out, err = run_cli(str(path), "--input-shape", "nope=2,4")
    assert code == 2 and "names no model input" in err


def test_wrong_shaped_inputs_are_exit_2_naming_the_file(tmp_path):
    path = mlp_onnx(tmp_path / "m.onnx", batch="n")
    inputs = tmp_path / "in.npy"
    np.save(inputs, np.zeros((2, 5), np.float32))
    code, _out, err = run_cli(str(path), "--inputs", str(inputs))
    assert code == 2 and str(inputs) in err and "declares" in err


def test_custom_op_domain_is_a_warning_and_the_static_audit_runs(tmp_path):
    path = mlp_onnx(tmp_path / "custom.onnx", batch="n", node_domain="com.example")
    code, out, err = run_cli(str(path), "--format", "json")
    assert code in (0, 1), err
    doc = json.loads(out)
    assert doc["probe"]["ran"] is False and doc["layers"]
    assert "initaudit: warning:" in err and "probe skipped" in err
