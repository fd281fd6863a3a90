"""Explicit requests are honoured or the run stops (exit 2 with one line saying why).

What a user asks for explicitly (a command-line flag, an ``audit()`` argument) never passes
silently: ``--model`` given with a target that has its own architecture, ``--device cuda`` on a
machine without CUDA, ``--input-shape`` or ``--inputs`` that the model rejects or that name no
input, ``--batch-size`` the probe could not use (an ONNX input with a fixed batch, inputs from a
file). The same settings read from a config file are defaults for many targets, not requests:
a probe that was not asked for and cannot run is a warning and a note, and the static audit runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from initaudit.errors import ProbeRequestError, RequestError

#: Settings fields of the probe that are requests when given explicitly, and their flags.
PROBE_FLAGS = {"probe_enabled": "--probe", "probe_inputs": "--inputs", "probe_input_shape": "--input-shape",
               "probe_batch_size": "--batch-size", "probe_device": "--device"}
_EXPLICIT = "command line"  # initaudit.config.COMMAND_LINE: flags and audit() keyword arguments


def explicit_probe_requests(settings: Any) -> dict[str, str]:
    """{field: flag} of the probe settings the user gave explicitly (not from a config file)."""
    sources = getattr(settings, "sources", {}) or {}
    out = {}
    for fld, flag in PROBE_FLAGS.items():
        value = getattr(settings, fld, None)
        if value is None or value is False or value == []:
            continue
        if sources.get(fld) == _EXPLICIT or (fld == "probe_inputs" and fld not in sources):
            out[fld] = flag
    return out


def _flag_text(settings: Any, fld: str) -> str:
    flag, value = PROBE_FLAGS[fld], getattr(settings, fld)
    if fld == "probe_enabled":
        return flag
    if fld == "probe_input_shape":
        return " ".join(f"{flag} {v}" for v in value)
    if fld == "probe_inputs" and not isinstance(value, (str, Path)):
        return "inputs=" + type(value).__name__
    return f"{flag} {value}"


def check_model_argument(target: Any, model: Any) -> None:
    """``--model`` gives the architecture of a checkpoint; any other target has its own."""
    if model is None:
        return
    import torch.nn as nn

    from initaudit.loaders.factory import looks_like_factory_spec

    what = None
    if isinstance(target, nn.Module):
        what = "a live module"
    elif looks_like_factory_spec(str(target)):
        what = "a module factory"
    elif str(target).lower().endswith(".onnx"):
        what = "an ONNX graph"
    if what:
        raise RequestError(f"{target}: --model applies to a checkpoint (.pt/.pth/.bin/.ckpt, .safetensors); "
                           f"this target is {what} and carries its own architecture")


def check_device(settings: Any) -> None:
    """``--device cuda`` (or ``cuda:N``, ``mps``) must exist before any work is done."""
    device = getattr(settings, "probe_device", None)
    if not device or device in ("auto", "cpu") or not getattr(settings, "probe_enabled", True) \
            or "probe_device" not in explicit_probe_requests(settings):
        return  # a config file's device is a default: the probe skips with a note if it is missing
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ProbeRequestError(f"--device {device!r}: not a device (cpu, cuda, cuda:N, mps, auto)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ProbeRequestError(f"--device {device}: CUDA is not available on this machine "
                                    f"(torch {torch.__version__}, {build}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ProbeRequestError(f"--device {device}: this machine has {torch.cuda.device_count()} "
                                    "CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ProbeRequestError(f"--device {device}: MPS is not available on this machine")


def check_probe_honoured(settings: Any, probe: Any, target: str) -> None:
    """After the probe: every explicit probe request either happened or this raises."""
    asked = explicit_probe_requests(settings)
    if not asked:
        return
    flags = ", ".join(_flag_text(settings, f) for f in asked)
    if not getattr(probe, "ran", False):
        reason = getattr(probe, "skipped_reason", None) or "the probe did not run"
        if reason.startswith("disabled"):
            return
        raise ProbeRequestError(f"{target}: {flags} asked for the probe, which did not run: {reason}")
    input_shapes = [list(s) for s in (getattr(probe, "input_shapes", None) or [])]
    if "probe_batch_size" in asked and probe.batch_size != settings.probe_batch_size:
        shapes = ", ".join("x".join(map(str, s)) for s in input_shapes[:3])
        source = getattr(probe, "inputs_source", None) or probe.inputs
        raise ProbeRequestError(
            f"{target}: --batch-size {settings.probe_batch_size} could not be used: the probe ran with batch "
            f"{probe.batch_size} ({source}{'; input shapes ' + shapes if shapes else ''})")
    if "probe_device" in asked and settings.probe_device not in ("auto",):
        import torch

        want, got = torch.device(settings.probe_device), torch.device(getattr(probe, "device", "cpu") or "cpu")
        if want.type != got.type or (want.index is not None and want.index != (got.index or 0)):
            raise ProbeRequestError(f"{target}: --device {settings.probe_device}: the probe ran on {got} "
                                    "(this model's probe cannot run there)")
