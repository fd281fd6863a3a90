"""The probe's conduct: it never changes the model, finds or reads its inputs, reports a failing
forward in one line while the static audit still runs, keys sites by call site, and is
deterministic (same seed, same JSON, byte for byte)."""

from __future__ import annotations

import copy

import json
import textwrap

import numpy as np
import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.errors import ConfigError, TargetError
from initaudit.loaders.torch_module import graph_from_module
from initaudit.probe import ProbeOptions, run_probe


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def snapshot(model: nn.Module) -> dict:
    return {
        "params": {n: (id(p), _bits(p), p.requires_grad) for n, p in model.named_parameters()},
        "grads": {n: None if p.grad is None else (id(p.grad), _bits(p.grad)) for n, p in model.named_parameters()},
        "buffers": {n: (id(b), _bits(b)) for n, b in model.named_buffers()},
        "modes": {n: m.training for n, m in model.named_modules()},
        "hooks": sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
                     for m in model.modules()),
        "rng": _bits(torch.get_rng_state()),
    }


class Explodes(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom inside the model")


def bn_model(fail: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5),
              nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8, momentum=None), nn.ReLU()]
    if fail:
        layers.append(Explodes())
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    # a used model: running statistics updated, some gradients present, mixed modes
    model.train()
    with torch.no_grad():
        model[:3](torch.randn(4, 3, 32, 32))
    model[0].weight.grad = torch.full_like(model[0].weight, 0.5)
    model[9 if fail else 8].train(False)
    model[1].eval()
    return model


@pytest.mark.parametrize("fail", [False, True], ids=["forward-ok", "forward-raises"])
def test_model_is_bit_identical_after_the_probe(fail):
    model = bn_model(fail)
    before = snapshot(model)
    report = initaudit.audit(model)
    assert report.probe.ran is (not fail)
    assert snapshot(model) == before
    if fail:
        assert "boom inside the model" in report.probe.skipped_reason
        assert "7 (Explodes)" in report.probe.skipped_reason  # the module entered last
    else:
        # BatchNorm ran in train mode (batch statistics) during the probe: normalised outputs
        bn = next(s for s in report.probe.sites if s.name == "1")
        assert bn.kind == "norm" and bn.std == pytest.approx(1.0, abs=0.02)


class WritesItsWeights(nn.Module):
    """A forward that updates a parameter in place (weight-norm and EMA hacks do this)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        with torch.no_grad():
            self.fc.weight.mul_(2.0)
        return self.fc(x)


def test_parameters_written_in_place_by_forward_are_restored():
    torch.manual_seed(0)
    model = WritesItsWeights()
    before = snapshot(model)
    report = initaudit.audit(model)
    assert report.probe.ran
    assert snapshot(model) == before


class KeepsItsState(nn.Module):
    """A forward that keeps its recurrent state as a plain attribute (RecurrentGemma's RG-LRU,
    key/value caches): after a run with grad it would hold a tensor of the run's autograd graph."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)
        self.state = None
        self.steps = torch.zeros(1)

    def forward(self, x):
        self.state = torch.tanh(self.fc(x))
        self.steps = self.steps + 1
        self.extra = self.state.sum()
        return self.state


def test_tensors_a_forward_keeps_as_attributes_are_put_back(tmp_path):
    torch.manual_seed(0)
    model = KeepsItsState()
    steps = model.steps
    assert initaudit.audit(model).probe.ran
    assert model.state is None and model.steps is steps and not hasattr(model, "extra")
    copy.deepcopy(model)  # a tensor of the probe's autograd graph left behind cannot be copied
    path = tmp_path / "m.pt"
    torch.save(model.state_dict(), path)
    assert initaudit.audit(str(path), model=model).probe.ran  # the checkpoint goes into a copy


class InstallsHooksOnce(nn.Module):
    """Output capture as transformers 5 does it: the first forward registers hooks that collect
    the hidden states and sets a plain flag so later forwards do not register them again."""

    def __init__(self):
        super().__init__()
        self.blocks = nn.ModuleList(nn.Linear(8, 8) for _ in range(2))
        self.head = nn.Linear(16, 4)

    def forward(self, x):
        if not getattr(self, "_hooks_installed", False):
            for b in self.blocks:
                b.register_forward_hook(lambda m, i, out: self._seen.append(out))
            self._hooks_installed = True
        self._seen = []
        h = x
        for b in self.blocks:
            h = torch.relu(b(h))
        return self.head(torch.cat(self._seen, dim=-1))  # 16 wide only if each hook ran once


def test_bookkeeping_a_forward_sets_stays_while_its_hooks_stay():
    torch.manual_seed(0)
    model = InstallsHooksOnce()
    report = initaudit.audit(model, inputs=torch.randn(4, 8))
    assert report.probe.ran, report.probe.skipped_reason
    assert model._hooks_installed and not torch.is_tensor(getattr(model, "_seen", None))


def test_checkpoint_values_go_into_a_copy_of_a_live_model(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    other = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
    torch.save(other, tmp_path / "zeros.pt")
    before = snapshot(model)
    report = initaudit.audit(str(tmp_path / "zeros.pt"), model=model)
    assert any(f.rule == "IA102" for f in report.findings)  # the checkpoint's zeros were judged
    assert snapshot(model) == before  # the caller's module is untouched


def test_forward_failure_names_layer_and_shape_and_static_audit_still_reports():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 25 * 25, 10))
    nn.init.zeros_(model[0].weight)
    report = initaudit.audit(model)  # no common image size fits a 27x27 classifier
    reason = report.probe.skipped_reason
    assert not report.probe.ran
    assert reason.startswith("forward pass failed in 3 (Linear) on input shape (64, 3600): RuntimeError")
    assert "(64, 1, 32, 32)" in reason and "--input-shape" in reason
    assert any(f.rule == "IA102" for f in report.findings)
    assert json.loads(report.to_json_str())["probe"]["skipped_reason"] == reason
    fixed = initaudit.audit(model, probe_input_shape=["8,1,27,27"])
    assert fixed.probe.ran and fixed.probe.batch_size == 8
    assert fixed.probe.input_shapes == [[8, 1, 27, 27]]


def test_synthetic_inputs_per_first_layer():
    torch.manual_seed(0)
    conv = initaudit.audit(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), probe_batch_size=5)
    assert conv.probe.input_shapes == [[5, 3, 32, 32]] and conv.probe.inputs == "synthetic"
    emb = initaudit.audit(nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 2)))
    assert emb.probe.input_shapes == [[64, 16]] and "token ids uniform on [0, 50)" in emb.probe.inputs_source
    lstm = initaudit.audit(nn.LSTM(6, 8, batch_first=True))
    assert lstm.probe.input_shapes == [[64, 16, 6]]
    conv1d = initaudit.audit(nn.Sequential(nn.Conv1d(2, 4, 3)))
    assert conv1d.probe.input_shapes == [[64, 2, 64]]


def test_nothing_to_infer_is_said_and_static_audit_runs():
    class TwoInputs(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x, mask):
            return self.fc(x) * mask

    report = initaudit.audit(TwoInputs())
    assert not report.probe.ran
    assert "forward() takes 2 required inputs (x, mask)" in report.probe.skipped_reason
    assert report.layers and report.layers[0]["probe"] is None
    given = initaudit.audit(TwoInputs(), inputs={"x": torch.randn(3, 4), "mask": torch.ones(3, 4)})
    assert given.probe.ran and given.probe.inputs == "file" and given.probe.batch_size == 3


class _Payload:
    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        import os

        return (os.system, (self.command,))


def test_inputs_files(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 2))
    x = torch.randn(7, 6)
    torch.save(x, tmp_path / "x.pt")
    torch.save((x,), tmp_path / "t.pt")
    torch.save({"input": x}, tmp_path / "d.pt")
    np.save(tmp_path / "x.npy", x.numpy())
    np.savez(tmp_path / "x.npz", x.numpy())
    stds = set()
    for name in ("x.pt", "t.pt", "d.pt", "x.npy", "x.npz"):
        report = initaudit.audit(model, probe_inputs=str(tmp_path / name))
        assert report.probe.ran, (name, report.probe.skipped_reason)
        assert report.probe.inputs == "file" and report.probe.batch_size == 7
        stds.add(round(report.probe.sites[1].std, 6))
    assert len(stds) == 1  # the same data, whichever container
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TargetError, match="bad.pt: --inputs: "):
        initaudit.audit(model, probe_inputs=str(tmp_path / "bad.pt"))
    with pytest.raises(TargetError, match="no such file"):
        initaudit.audit(model, probe_inputs=str(tmp_path / "missing.pt"))
    marker = tmp_path / "ran"
    torch.save({"x": x, "payload": _Payload(f"touch {marker}")}, tmp_path / "evil.pt")
    with pytest.raises(TargetError, match="evil.pt: --inputs: refusing to load"):
        initaudit.audit(model, probe_inputs=str(tmp_path / "evil.pt"))
    assert not marker.exists()  # the allow-list scan runs before torch.load
    with pytest.raises(ConfigError, match="--input-shape"):
        initaudit.audit(model, probe_input_shape=["6,x"])


def test_example_inputs_next_to_the_factory(tmp_path):
    src = tmp_path / "mymodel.py"
    src.write_text(textwrap.dedent("""
        import torch, torch.nn as nn

        class Net(nn.Module):
            def __init__(self):
                super().__init__()
                self.fc = nn.Linear(4, 3)

            def forward(self, x, scale):
                return self.fc(x) * scale

        def make():
            torch.manual_seed(0)
            return Net()

        def example_inputs():
            return (torch.ones(5, 4), torch.tensor(2.0))
    """))
    report = initaudit.audit(f"{src}:make")
    assert report.probe.ran, report.probe.skipped_reason
    assert report.probe.batch_size == 5 and "example_inputs()" in report.probe.inputs_source


def test_sites_are_keyed_by_call_site_and_mapped_to_params():
    class Reuse(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(8, 8), nn.Linear(8, 8)
            self.act = nn.Tanh()
            self.shared = nn.Linear(8, 8)

        def forward(self, x):
            x = self.act(self.fc1(x) + 1)  # the act's input is not a layer output
            x = self.act(self.fc2(x) + 1)
            return self.shared(self.shared(x))

    torch.manual_seed(0)
    report = initaudit.audit(Reuse())
    names = [s.name for s in report.probe.sites]
    assert names == ["input", "fc1", "act", "fc2", "act#1", "shared", "shared#1", "output"]
    assert report.probe.site_for_param("shared.weight").name == "shared"
    row = next(r for r in report.layers if r["param"] == "fc2.weight")
    assert row["probe"]["std"] == report.probe.sites[3].std and row["probe"]["grad_to_weight"] > 0


def test_same_seed_same_json_bytes_and_seed_matters():
    def build():
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Dropout(0.3), nn.Linear(30, 30),
                             nn.BatchNorm1d(30), nn.Tanh(), nn.Linear(30, 5))

    a = initaudit.audit(build(), probe_seed=3, probe_histograms=True).to_json_str()
    b = initaudit.audit(build(), probe_seed=3, probe_histograms=True).to_json_str()
    c = initaudit.audit(build(), probe_seed=4, probe_histograms=True).to_json_str()
    assert a == b and a != c
    doc = json.loads(a)
    assert doc["probe"]["ran"] and doc["probe"]["seed"] == 3 and doc["probe"]["inputs"] == "synthetic"
    assert doc["probe"]["sites"][1]["histogram"]["counts"]
    assert doc["probe"]["loss"].startswith("L = sum over outputs")
    assert doc["layers"][0]["probe"]["saturated_fraction"] is None


def test_device_that_is_not_there_skips_the_probe():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    from initaudit.engine import Settings
    from initaudit.errors import ProbeRequestError

    # a device from settings (a config file's default) skips the probe with a reason ...
    report = initaudit.audit(nn.Linear(3, 3), settings=Settings(probe_device="cuda"))
    assert not report.probe.ran and "CUDA is not available" in report.probe.skipped_reason
    # ... while an explicit request that cannot be honoured stops the audit (exit 2 on the CLI)
    with pytest.raises(ProbeRequestError, match="CUDA is not available"):
        initaudit.audit(nn.Linear(3, 3), probe_device="cuda")


def test_run_probe_on_a_graph_without_module_says_static_only():
    graph = graph_from_module(nn.Linear(3, 3), "x")
    graph.module = None
    graph.format = "safetensors"
    result = run_probe(graph, ProbeOptions())
    assert not result.ran and "static only" in result.skipped_reason


def test_a_failing_backward_keeps_the_forward_picture():
    class NoBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            raise RuntimeError("no gradient here")

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return NoBackward.apply(self.fc(x))

    model = Net()
    before = snapshot(model)
    report = initaudit.audit(model)
    assert report.probe.ran and report.probe.grads is None
    assert any("backward pass failed (RuntimeError: no gradient here)" in n for n in report.probe.notes)
    assert snapshot(model) == before
