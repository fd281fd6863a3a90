"""The static pickle gate: clean checkpoints pass and load weights-only; payloads never run."""

from __future__ import annotations

import builtins
import io
import os
import pickle
import pickletools
import random
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from initaudit.errors import TargetError, UnsafeCheckpointError
from initaudit.loaders.pickle_safety import ALLOWED_GLOBALS, is_allowed_global, scan_checkpoint


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))


class TinyNet(nn.Module):
    """A user-defined module: pickling the whole object imports this class."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)


class Payload:
    """Unpickling this calls ``reduce_fn(*args)``: the classic code-execution gadget."""

    def __init__(self, reduce_fn: Callable[..., object], *args: object) -> None:
        self.reduce_fn, self.args = reduce_fn, args

    def __reduce__(self) -> tuple[object, tuple[object, ...]]:
        return self.reduce_fn, self.args


def _touch_code(marker: Path) -> str:
    return f"open({str(marker)!r}, 'w').close()"


def _lightning_like() -> dict[str, object]:
    model = _model()
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1)
    model(torch.randn(5, 4)).sum().backward()
    opt.step()
    sched.step()
    return {
        "state_dict": model.state_dict(),
        "epoch": 3,
        "global_step": 100,
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hyper_parameters": {"lr": 0.1, "name": "x", "betas": (0.9, 0.999), "tags": None},
    }


def _as(dtype: torch.dtype) -> Callable[[], dict[str, torch.Tensor]]:
    return lambda: {k: v.to(dtype) for k, v in _model().state_dict().items()}


# --- 1. clean checkpoints pass, and torch's weights-only loader loads them ----------------------

CLEAN = {
    "fp32-state-dict": (lambda: _model().state_dict(), True),
    "fp16-state-dict": (_as(torch.float16), True),
    "bf16-state-dict": (_as(torch.bfloat16), True),
    "lightning-like": (_lightning_like, True),
    "legacy-state-dict": (lambda: _model().state_dict(), False),
    "legacy-lightning-like": (_lightning_like, False),
}


@pytest.mark.parametrize("case", sorted(CLEAN))
def test_clean_checkpoint_passes_and_loads_weights_only(tmp_path: Path, case: str) -> None:
    build, zip_format = CLEAN[case]
    obj = build()
    path = tmp_path / "ckpt.pt"
    torch.save(obj, path, _use_new_zipfile_serialization=zip_format)
    assert zipfile.is_zipfile(path) is zip_format

    assert scan_checkpoint(path).path == Path(path)
    loaded = torch.load(path, weights_only=True)
    assert loaded.keys() == obj.keys()


def test_dtypes_and_storages_come_from_torch() -> None:
    for name in ("float32", "float16", "bfloat16", "int8", "bool", "float8_e4m3fn"):
        assert is_allowed_global("torch", name)
    for name in ("FloatStorage", "HalfStorage", "BFloat16Storage", "LongStorage"):
        assert is_allowed_global("torch", name)
    assert ("torch.storage", "UntypedStorage") in ALLOWED_GLOBALS
    assert ("torch._utils", "_rebuild_tensor_v2") in ALLOWED_GLOBALS


@pytest.mark.parametrize(
    "pair",
    [("builtins", "exec"), ("builtins", "eval"), ("builtins", "getattr"), ("os", "system"),
     ("posix", "system"), ("subprocess", "Popen"), ("torch", "load"), ("collections", "deque")],
)
def test_allow_list_rejects_code_paths(pair: tuple[str, str]) -> None:
    assert not is_allowed_global(*pair)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_plain_pickle_of_safe_values_passes(tmp_path: Path, protocol: int) -> None:
    path = tmp_path / "plain.pkl"
    path.write_bytes(pickle.dumps(OrderedDict(a={1, 2}, b=b"xy", c=[1.5, "s"]), protocol=protocol))
    scan_checkpoint(path)


def test_stack_global_resolved_through_memo_passes(tmp_path: Path) -> None:
    # Protocol 4 writes the class once (STACK_GLOBAL, memoised) and fetches it again with BINGET.
    data = pickle.dumps([OrderedDict(a=1), OrderedDict(b=2)], protocol=4)
    names = {op.name for op, _, _ in pickletools.genops(data)}
    assert {"STACK_GLOBAL", "BINGET"} <= names
    path = tmp_path / "p4.pkl"
    path.write_bytes(data)
    scan_checkpoint(path)


# --- 2. malicious pickles are refused without running them ----------------------------------------


def _stack_global_payload(code: str, decoy: bool) -> bytes:
    """A hand-written protocol 4 pickle calling builtins.exec(code) through STACK_GLOBAL.

    With ``decoy`` the real names are memoised, popped, then an allowed pair is pushed and popped
    before the real ones are fetched back with BINGET: a scanner that only looks at the last two
    strings pushed would see collections.OrderedDict.
    """
    def text(s: str) -> bytes:
        raw = s.encode()
        return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


    if decoy:
        names = (
            text("builtins") + b"q\x00" + text("exec") + b"q\x01" + b"00"
            + text("collections") + text("OrderedDict") + b"00" + b"h\x00h\x01"
        )
    else:
        names = text("builtins") + b"\x94" + text("exec") + b"\x94"
    code_arg = pickle.BINUNICODE + len(code.encode()).to_bytes(4, "little") + code.encode()
    call = pickle.STACK_GLOBAL + code_arg + pickle.TUPLE1 + pickle.REDUCE
    return pickle.PROTO + b"\x04" + names + call + pickle.STOP


def _exec_payload(marker: Path) -> Payload:
    return Payload(builtins.exec, _touch_code(marker))


def _with_tensors(payload: object) -> dict[str, object]:
    return {"weight": torch.randn(3, 3), "bias": torch.zeros(3), "extra": payload}


def _torch_saved(legacy: bool) -> Callable[[Path, Path], None]:
    def write(path: Path, marker: Path) -> None:
        obj = _with_tensors(_exec_payload(marker))
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)

    return write


def _plain(protocol: int) -> Callable[[Path, Path], None]:
    def write(path: Path, marker: Path) -> None:
        path.write_bytes(pickle.dumps(_exec_payload(marker), protocol=protocol))

    return write


def _crafted(decoy: bool) -> Callable[[Path, Path], None]:
    def write(path: Path, marker: Path) -> None:
        path.write_bytes(_stack_global_payload(_touch_code(marker), decoy))

    return write


def _zip_os_system(path: Path, marker: Path) -> None:
    torch.save(_with_tensors(Payload(os.system, f"touch '{marker}'")), path)


# case: (write(path, marker), the global the message must name, saved by torch.save?)
MALICIOUS: dict[str, tuple[Callable[[Path, Path], None], str, bool]] = {
    "zip-exec": (_torch_saved(legacy=False), "builtins.exec", True),
    "legacy-exec": (_torch_saved(legacy=True), "builtins.exec", True),
    "zip-os-system": (_zip_os_system, f"{os.system.__module__}.system", True),
    "plain-exec-p2": (_plain(2), "builtins.exec", False),
    "stack-global-p4": (_plain(4), "builtins.exec", False),
    "stack-global-memoize": (_crafted(decoy=False), "builtins.exec", False),
    "stack-global-binget-decoy": (_crafted(decoy=True), "builtins.exec", False),
}


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_payload_is_live_when_unpickled(tmp_path: Path, case: str) -> None:
    """Control: each crafted file really runs its code when loaded the unsafe way."""
    write, _, via_torch = MALICIOUS[case]
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    write(path, marker)
    if via_torch:
        torch.load(path, weights_only=False)
    else:
        pickle.loads(path.read_bytes())
    assert marker.exists()


@pytest.mark.parametrize("case", sorted(MALICIOUS))
def test_malicious_checkpoint_is_refused_without_running(tmp_path: Path, case: str) -> None:
    write, global_name, _ = MALICIOUS[case]
    path, marker = tmp_path / "evil.pt", tmp_path / "ran"
    write(path, marker)

    with pytest.raises(UnsafeCheckpointError) as info:
        scan_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refusing to load")
    assert f"imports {global_name}," in message
    assert "would run code" in message
    assert "\n" not in message
    assert not marker.exists()


def test_stack_global_with_unresolvable_operands_is_refused(tmp_path: Path) -> None:
    # Module name pushed as bytes, not str: no string to check, so refuse.
    data = (
        pickle.PROTO + b"\x04" + pickle.SHORT_BINBYTES + b"\x08builtins"
        + pickle.SHORT_BINUNICODE + b"\x04exec"
        + pickle.STACK_GLOBAL + pickle.STOP
    )
    path = tmp_path / "opaque.pkl"
    path.write_bytes(data)
    with pytest.raises(UnsafeCheckpointError, match="cannot be resolved statically"):
        scan_checkpoint(path)


def test_pickle_with_zip_appended_is_scanned_as_pickle(tmp_path: Path) -> None:
    """torch picks the format from the first bytes; a trailing clean zip must not hide a payload."""
    clean = io.BytesIO()
    torch.save(_model().state_dict(), clean)
    path, marker = tmp_path / "polyglot.pt", tmp_path / "ran"
    path.write_bytes(pickle.dumps(_exec_payload(marker), protocol=2) + clean.getvalue())
    assert zipfile.is_zipfile(path)
    with pytest.raises(UnsafeCheckpointError, match="builtins.exec"):
        scan_checkpoint(path)
    assert not marker.exists()


# --- 3. a full pickled model is refused with a way out ------------------------------------------


@pytest.mark.parametrize(
    ("build", "global_name"),
    [(TinyNet, f"{TinyNet.__module__}.TinyNet"), (_model, "torch.nn.modules.container.Sequential")],
    ids=["user-class", "torch-sequential"],
)
def test_full_pickled_model_is_refused_with_state_dict_advice(
    tmp_path: Path, build: Callable[[], nn.Module], global_name: str
) -> None:
    path = tmp_path / "model.pt"
    torch.save(build(), path)
    with pytest.raises(UnsafeCheckpointError) as info:
        scan_checkpoint(path)
    message = str(info.value)
    assert f"imports {global_name}," in message
    assert "full pickled model" in message
    assert "torch.save(model.state_dict(), 'model.pt')" in message
    assert "--unsafe-pickle" in message
    assert "\n" not in message


# --- 4. corrupt files are a TargetError with one line, never a crash ----------------------------


def _truncated_zip(path: Path) -> None:
    buf = io.BytesIO()
    torch.save(_model().state_dict(), buf)
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


def _truncated_legacy(path: Path) -> None:
    buf = io.BytesIO()
    torch.save(_model().state_dict(), buf, _use_new_zipfile_serialization=False)
    path.write_bytes(buf.getvalue()[:200])


def _zip_without_pickle(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/version", "3\n")


CORRUPT: dict[str, Callable[[Path], object]] = {
    "truncated-zip": _truncated_zip,
    "truncated-legacy": _truncated_legacy,
    "truncated-plain": lambda p: p.write_bytes(pickle.dumps(list(range(50)), protocol=2)[:-10]),
    "random-bytes": lambda p: p.write_bytes(random.Random(0).randbytes(4096)),
    "empty": lambda p: p.write_bytes(b""),
    "zip-without-pickle": _zip_without_pickle,
    "missing-file": lambda p: None,
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_corrupt_file_is_a_one_line_target_error(tmp_path: Path, case: str) -> None:
    path = tmp_path / "bad.pt"
    CORRUPT[case](path)
    with pytest.raises(TargetError) as info:
        scan_checkpoint(path)
    assert type(info.value) is TargetError  # corrupt, not "unsafe"
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert len(message) > len(f"{path}: ") + 5
    assert "\n" not in message
