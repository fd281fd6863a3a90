"""Fuzzing every parser initaudit has with mutated files (hypothesis, deterministic).

Each target starts from a valid file built here and applies a few mutations (byte flips,
overwritten runs, truncation, insertions, duplicated chunks). Whatever comes out, the run must
end with exit 0/1 and a JSON report, or exit 2 and one line naming the file; no other exception,
no traceback, no run over 30 s, no RSS growth over 2 GB, and the input file unchanged.

Budget: about 2,000 inputs in all by default (a couple of minutes on two cores);
``INITAUDIT_FUZZ_EXAMPLES=N`` runs N inputs per target instead.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

from initaudit.cli import main

PER_TARGET = int(os.environ.get("INITAUDIT_FUZZ_EXAMPLES", "0") or 0)
# CPU seconds of this process: a shared, loaded CI machine can stall wall-clock time for a
# minute, but a decompression bomb or a quadratic parser burns CPU.  The wall-clock limit only
# catches a hang.
CPU_LIMIT_S = 30.0
HANG_LIMIT_S = 600.0
RSS_LIMIT = 2 << 30


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# ---- valid seed files ---------------------------------------------------------------------------

STATE = {"fc1.weight": torch.randn(6, 4, generator=torch.Generator().manual_seed(0)),
         "fc1.bias": torch.zeros(6),
         "fc2.weight": torch.randn(3, 6, generator=torch.Generator().manual_seed(1)),
         "bn.running_var": torch.ones(3)}


def _torch_bytes(**kw) -> bytes:
    """torch.save output with its random ``.data/serialization_id`` fixed, so the seed file (and
    so every mutated input) is the same in every run."""
    buf = io.BytesIO()
    torch.save(STATE, buf, **kw)
    data = bytearray(buf.getvalue())
    if data[:4] != b"PK\x03\x04":
        return bytes(data)
    from initaudit.loaders.torch_zip import read_members

    member = next(m for m in read_members(io.BytesIO(bytes(data))) if m.name.endswith("serialization_id"))
    fixed = b"0" * member.size
    old_crc, new_crc = struct.pack("<I", member.crc), struct.pack("<I", zlib.crc32(fixed))
    data[member.data_start:member.data_start + member.size] = fixed
    tail = member.data_start + member.size  # the data descriptor, then the central directory
    data[tail:] = bytes(data[tail:]).replace(old_crc, new_crc)
    return bytes(data)


def _safetensors_bytes() -> bytes:
    from safetensors.torch import save

    return save(STATE)


def _onnx_model() -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])
    w1 = numpy_helper.from_array(STATE["fc1.weight"].numpy().T.copy(), "W1")
    w2 = numpy_helper.from_array(STATE["fc2.weight"].numpy().T.copy(), "W2")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"], name="mm1"),
             helper.make_node("Tanh", ["h"], ["a"], name="tanh"),
             helper.make_node("MatMul", ["a", "W2"], ["y"], name="mm2")]
    return helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w1, w2]),
                             opset_imports=[helper.make_opsetid("", 17)])


def _npz_bytes() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=np.ones((2, 4), np.float32), mask=np.ones((2,), np.int64))
    return buf.getvalue()


def _npy_bytes() -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ones((2, 4), np.float32))
    return buf.getvalue()


def _inputs_pt_bytes() -> bytes:
    buf = io.BytesIO()
    torch.save({"x": torch.ones(2, 4)}, buf)
    return buf.getvalue()


# ---- targets: which file is mutated and how the CLI is called -----------------------------------

@dataclass
class Target:
    name: str
    mutated: str  # the file the mutations apply to
    examples: int  # default budget
    files: Callable[[Path], None]  # writes the valid files into a folder
    args: Callable[[Path], list[str]]  # the CLI arguments
    region: int = 0  # > 0: mutate mostly the first ``region`` bytes (headers)


def _external_onnx(folder: Path) -> None:
    onnx.save_model(_onnx_model(), str(folder / "m.onnx"), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="m.onnx.data", size_threshold=0)


def _seed(name: str, make: Callable[[], bytes]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        (folder / name).write_bytes(make())
    return write


def _both(*writers: Callable[[Path], None]) -> Callable[[Path], None]:
    def write(folder: Path) -> None:
        for w in writers:
            w(folder)
    return write


_ST = _seed("m.safetensors", _safetensors_bytes)
_INDEX = json.dumps({"metadata": {"total_size": 1}, "weight_map": {k: "m.safetensors" for k in STATE}})
_BASELINE = json.dumps({"baseline_version": 1, "tool": "initaudit", "findings": [
    {"rule": "IA104", "layer": "fc1.weight", "kind": "init-scale", "fingerprint": "IA104:fc1.weight:x"}]})
_PYPROJECT = ('[tool.initaudit]\nselect = ["ALL"]\nignore = ["IA105"]\nfail-on = "warning"\n'
              '[tool.initaudit.severity]\nIA103 = "error"\n[tool.initaudit.options.IA104]\ntolerance = 2.0\n'
              '[tool.initaudit.per-layer-ignores]\n"fc2.*" = ["scale"]\n[tool.initaudit.probe]\nseed = 1\n')

TARGETS = [
    Target("legacy-pickle", "m.pt", 300, _seed("m.pt", lambda: _torch_bytes(_use_new_zipfile_serialization=False)),
           lambda d: [str(d / "m.pt")]),
    Target("torch-zip", "m.pt", 300, _seed("m.pt", _torch_bytes), lambda d: [str(d / "m.pt")]),
    Target("torch-zip-protocol-4", "m.pt", 150, _seed("m.pt", lambda: _torch_bytes(pickle_protocol=4)),
           lambda d: [str(d / "m.pt")]),
    Target("safetensors", "m.safetensors", 250, _ST, lambda d: [str(d / "m.safetensors")], region=256),
    Target("safetensors-index", "m.safetensors.index.json", 150,
           _both(_ST, _seed("m.safetensors.index.json", _INDEX.encode)),
           lambda d: [str(d / "m.safetensors.index.json")]),
    Target("onnx", "m.onnx", 300, _seed("m.onnx", lambda: _onnx_model().SerializeToString()),
           lambda d: [str(d / "m.onnx"), "--no-probe"]),
    Target("onnx-external-data-model", "m.onnx", 150, _external_onnx, lambda d: [str(d / "m.onnx"), "--no-probe"]),
    Target("onnx-external-data-bytes", "m.onnx.data", 60, _external_onnx, lambda d: [str(d / "m.onnx"), "--no-probe"]),
    Target("onnx-with-probe", "m.onnx", 20, _seed("m.onnx", lambda: _onnx_model().SerializeToString()),
           lambda d: [str(d / "m.onnx")]),
    Target("pyproject", "pyproject.toml", 150, _both(_ST, _seed("pyproject.toml", _PYPROJECT.encode)),
           lambda d: [str(d / "m.safetensors"), "--config", str(d / "pyproject.toml")]),
    Target("baseline", "baseline.json", 100, _both(_ST, _seed("baseline.json", _BASELINE.encode)),
           lambda d: [str(d / "m.safetensors"), "--baseline", str(d / "baseline.json")]),
    Target("inputs-pt", "in.pt", 100, _both(_ST, _seed("in.pt", _inputs_pt_bytes)),
           lambda d: [str(d / "m.safetensors"), "--inputs", str(d / "in.pt")]),
    Target("inputs-npy", "in.npy", 60, _both(_ST, _seed("in.npy", _npy_bytes)),
           lambda d: [str(d / "m.safetensors"), "--inputs", str(d / "in.npy")], region=128),
    Target("inputs-npz", "in.npz", 100, _both(_ST, _seed("in.npz", _npz_bytes)),
           lambda d: [str(d / "m.safetensors"), "--inputs", str(d / "in.npz")]),
]


# ---- mutations ----------------------------------------------------------------------------------

MUTATION = st.tuples(st.sampled_from(["flip", "overwrite", "truncate", "insert", "duplicate", "zero"]),
                     st.floats(0, 1, allow_nan=False), st.binary(min_size=1, max_size=16),
                     st.integers(1, 64))


def mutate(data: bytes, mutations, region: int) -> bytes:
    out = bytearray(data)
    for kind, where, blob, length in mutations:
        span = min(len(out), region) if region and where < 0.8 else len(out)
        pos = int(where * max(span - 1, 0))
        if kind == "flip" and out:
            out[pos] ^= 1 << (length % 8)
        elif kind == "overwrite":
            out[pos:pos + len(blob)] = blob
        elif kind == "truncate":
            del out[pos:]
        elif kind == "insert":
            out[pos:pos] = blob
        elif kind == "duplicate":
            out[pos:pos] = out[pos:pos + length]
        elif kind == "zero":
            out[pos:pos + length] = bytes(len(out[pos:pos + length]))
    return bytes(out)


def check_run(target: Target, folder: Path) -> None:
    """One audit of a mutated file: the contract of exit codes, messages and side effects."""
    mutated = folder / target.mutated
    digest = hashlib.sha256(mutated.read_bytes()).hexdigest()
    rss_before = _rss()
    start, cpu_start = time.monotonic(), time.process_time()
    result = CliRunner().invoke(main, [*target.args(folder), "--format", "json", "-q"], catch_exceptions=False)
    elapsed, cpu = time.monotonic() - start, time.process_time() - cpu_start
    out, err = result.stdout, result.stderr
    assert cpu < CPU_LIMIT_S, f"{target.name}: {cpu:.1f} CPU s"
    assert elapsed < HANG_LIMIT_S, f"{target.name}: {elapsed:.1f} s"
    assert _rss() - rss_before < RSS_LIMIT, f"{target.name}: RSS grew by {(_rss() - rss_before) >> 20} MB"
    assert "Traceback" not in out + err
    assert hashlib.sha256(mutated.read_bytes()).hexdigest() == digest, "the input file changed"
    if result.exit_code in (0, 1):
        doc = json.loads(out)
        assert doc["schema_version"] == 1 and isinstance(doc["layers"], list)
        return
    assert result.exit_code == 2, (result.exit_code, err)
    errors = [ln for ln in err.splitlines() if ln.startswith("initaudit: error:")]
    assert len(errors) == 1, err
    line = errors[0]
    assert "internal error" not in line, line
    names = {target.mutated, *(Path(a).name for a in target.args(folder) if "/" in a)}
    assert any(n in line for n in names), line


@pytest.mark.parametrize("target", TARGETS, ids=[t.name for t in TARGETS])
def test_mutated_files_end_in_a_report_or_one_line(target: Target) -> None:
    root = Path(tempfile.mkdtemp(prefix=f"fuzz-{target.name}-"))
    seed = root / "seed"
    seed.mkdir()
    target.files(seed)
    original = (seed / target.mutated).read_bytes()
    check_run(target, seed)  # the valid file itself

    @settings(max_examples=PER_TARGET or target.examples, derandomize=True, database=None, deadline=None,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(st.lists(MUTATION, min_size=1, max_size=4))
    def fuzz(mutations) -> None:
        case = root / "case"
        if case.exists():
            shutil.rmtree(case)
        shutil.copytree(seed, case)
        (case / target.mutated).write_bytes(mutate(original, mutations, target.region))
        check_run(target, case)

    try:
        fuzz()
    finally:
        shutil.rmtree(root, ignore_errors=True)
