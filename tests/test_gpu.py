"""The GPU path: a model already on a CUDA device is analysed where it is (statistics, sample,
duplicate and orthogonality checks on the device; only small summaries come back to the CPU),
and ``--device cuda`` runs the probe there. Run where CUDA is present; this machine's CI has no
GPU, so the device-generic code itself is also checked on CPU (tests/test_held_analysis.py
runs ``analyze_held`` on CPU tensors against ``analyze``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import initaudit
from initaudit.analysis import analyze
from initaudit.graph import OpKind, Param, ParamRole

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="no CUDA device here: the GPU path needs one (the device-generic "
                                       "code is tested on CPU in tests/test_held_analysis.py)")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import defective  # noqa: E402


class _CopiesToCpu(TorchDispatchMode):
    """The largest tensor copied from a GPU to the CPU while active."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        src = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if isinstance(out, torch.Tensor) and out.device.type == "cpu" and src is not None \
                and src.device.type == "cuda":
            self.largest = max(self.largest, out.numel())
        return out


def _keys(report):
    return sorted((f.rule, f.layer, f.severity.value) for f in report.findings)


def test_statistics_of_a_gpu_tensor_are_computed_there():
    w = torch.randn(2048, 1024) * 0.03
    w[100] = w[7]
    param = Param("w", (2048, 1024), "float32", "l", "Linear", OpKind.LINEAR, ParamRole.WEIGHT)
    on_cpu = analyze(w, param)
    with _CopiesToCpu() as watch:
        on_gpu = analyze(w.cuda(), param)
    assert watch.largest < w.numel() // 16, watch.largest  # summaries only, never the tensor
    assert on_gpu.stats.numel == on_cpu.stats.numel
    for k in ("mean", "std", "min", "max", "zero_fraction"):
        assert getattr(on_gpu.stats, k) == pytest.approx(getattr(on_cpu.stats, k), rel=1e-5, abs=1e-8)
    assert on_gpu.duplicates.exact_groups == on_cpu.duplicates.exact_groups == [[7, 100]]
    assert on_gpu.shape == on_cpu.shape


def test_a_model_on_the_gpu_audits_like_on_the_cpu():
    on_cpu = initaudit.audit(defective.build(), config=False)
    on_gpu = initaudit.audit(defective.build().cuda(), config=False, probe_device="cuda")
    assert on_gpu.probe is not None and on_gpu.probe.ran
    assert _keys(on_gpu) == _keys(on_cpu)
    assert {"IA101", "IA102", "IA103"} <= {f.rule for f in on_gpu.findings}
