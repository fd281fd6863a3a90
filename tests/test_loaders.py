"""Every target form: factory specs, state_dict pickles, safetensors (single and sharded), with and
without --model; the same weights give the same findings whichever way they arrive."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import initaudit
from initaudit.engine import Settings
from initaudit.errors import TargetError, UnsafeCheckpointError
from initaudit.graph import OpKind

TESTS = Path(__file__).resolve().parent
FACTORY = f"{TESTS / 'defective.py'}:build"


def categories_by_layer(report):
    return sorted({(f.category, f.layer, f.severity.value) for f in report.findings})


@pytest.fixture()
def defective_state(tmp_path):
    import defective

    model = defective.build()
    return model, {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_factory_pt_and_safetensors_with_model_give_the_same_findings(tmp_path, defective_state):
    model, sd = defective_state
    pt, st = tmp_path / "ckpt.pt", tmp_path / "ckpt.safetensors"
    torch.save(sd, pt)
    save_file(sd, st)
    via_factory = initaudit.audit(FACTORY)
    via_pt = initaudit.audit(str(pt), model=FACTORY)
    via_st = initaudit.audit(str(st), model=FACTORY)
    expected = categories_by_layer(via_factory)
    assert {c for c, _, _ in expected} >= {"constant", "scale", "symmetry", "nonfinite"}
    assert categories_by_layer(via_pt) == expected
    assert categories_by_layer(via_st) == expected
    assert (via_factory.format, via_pt.format, via_st.format) == ("torch-module", "state-dict", "safetensors")


def test_bare_checkpoint_reports_what_names_and_shapes_allow(tmp_path, defective_state):
    _, sd = defective_state
    st = tmp_path / "bare.safetensors"
    save_file(sd, st)
    report = initaudit.audit(str(st))
    cats = {f.category for f in report.findings}
    assert {"constant", "symmetry", "nonfinite"} <= cats
    assert any("no architecture" in n for n in report.notes)
    assert report.signal == []  # no propagation estimate without an architecture
    assert all(r["activation"] is None for r in report.layers)


def test_bare_checkpoint_infers_roles_from_names_and_shapes(tmp_path):
    import models

    gpt = models.GPT2()
    sd = {k: v.detach().clone() for k, v in gpt.state_dict().items() if k != "lm_head.weight"}
    path = tmp_path / "gpt.safetensors"
    save_file(sd, path)
    from initaudit.loaders.target import load_target

    graph, _ = load_target(str(path))
    p = graph.params
    assert p["h.0.attn.c_attn.weight"].kind is OpKind.LINEAR and p["h.0.attn.c_attn.weight"].units_dim == 1
    assert p["h.0.attn.c_attn.weight"].fan_in == 64 and p["h.0.attn.c_attn.weight"].fan_out == 192
    assert p["wte.weight"].kind is OpKind.EMBEDDING and p["h.0.ln_1.weight"].kind is OpKind.NORM
    report = initaudit.audit(str(path))
    assert [f for f in report.findings if f.severity.value != "info"] == []
    assert report.stage == "init" and "no evidence of training" in report.stage_reason


def test_sharded_safetensors_index(tmp_path, defective_state):
    _, sd = defective_state
    names = sorted(sd)
    half = len(names) // 2
    save_file({k: sd[k] for k in names[:half]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: sd[k] for k in names[half:]}, tmp_path / "model-00002-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {k: ("model-00001-of-00002.safetensors" if i < half else
                                                "model-00002-of-00002.safetensors") for i, k in enumerate(names)}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    sharded = initaudit.audit(str(tmp_path / "model.safetensors.index.json"), model=FACTORY)
    assert categories_by_layer(sharded) == categories_by_layer(initaudit.audit(FACTORY))


def test_sharded_index_that_escapes_its_folder_is_refused(tmp_path):
    (tmp_path / "m.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "../evil.safetensors"}}))
    with pytest.raises(TargetError, match="outside"):
        initaudit.audit(str(tmp_path / "m.safetensors.index.json"))


@pytest.mark.parametrize("wrapper", ["lightning", "model", "dataparallel"])
def test_checkpoint_wrappers_and_training_evidence(tmp_path, wrapper, defective_state):
    model, sd = defective_state
    if wrapper == "lightning":
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        obj = {"state_dict": {f"model.{k}": v for k, v in sd.items()}, "epoch": 3, "global_step": 120,
               "optimizer_states": [opt.state_dict()], "pytorch-lightning_version": "2.4.0"}
    elif wrapper == "model":
        obj = {"model": sd, "step": 0}
    else:
        obj = {f"module.{k}": v for k, v in sd.items()}
    path = tmp_path / "c.ckpt"
    torch.save(obj, path)
    report = initaudit.audit(str(path), model=FACTORY)
    assert {f.category for f in report.findings} >= {"constant", "nonfinite"}
    if wrapper == "lightning":
        assert report.stage == "trained" and "epoch" in report.stage_reason
        assert "scale" not in {f.category for f in report.findings}  # init-scale rules skipped
    else:
        assert report.stage == "init"


def test_fp16_and_bf16_checkpoints_are_judged_in_fp32(tmp_path):
    import models

    m = models.mlp(5, 100, "tanh", "normal001")
    ref = categories_by_layer(initaudit.audit(m))
    for dtype in (torch.float16, torch.bfloat16):
        path = tmp_path / f"{dtype}.safetensors"
        save_file({k: v.to(dtype) for k, v in m.state_dict().items()}, path)
        report = initaudit.audit(str(path), model=f"{TESTS / 'models.py'}:mlp")
        assert report.layers[0]["dtype"] == "float32"  # values copied into the fp32 architecture
        bare = initaudit.audit(str(path))
        assert bare.layers[0]["dtype"] in ("float16", "bfloat16", "f16", "bf16")
        assert abs(bare.layers[0]["stats"]["std"] - 0.01) < 1e-3
    assert ref


def test_checkpoint_missing_tensors_are_listed_not_judged(tmp_path, defective_state):
    _, sd = defective_state
    sd.pop("2.weight")
    path = tmp_path / "partial.pt"
    torch.save(sd, path)
    report = initaudit.audit(str(path), model=FACTORY)
    assert ("2.weight", "not in the checkpoint (the factory's value is not judged)") in report.skipped
    assert all(f.layer != "2.weight" for f in report.findings)


class Untraceable(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(32, 32)
        self.act = nn.Tanh()  # the fallback reads registration order
        self.b = nn.Linear(32, 4)

    def forward(self, x):
        if x.sum() > 0:  # data-dependent control flow: torch.fx cannot trace this
            x = -x
        return self.b(self.act(self.a(x)))


def test_untraceable_model_is_captured_from_a_forward_pass():
    report = initaudit.audit(Untraceable())
    assert report.capture == "trace" and not any("could not trace" in n for n in report.notes)
    row = next(r for r in report.layers if r["param"] == "a.weight")
    assert row["activation"] == "tanh" and row["activation_source"] == "trace"


class UntraceableTwoInputs(Untraceable):
    def forward(self, x, y):  # two required inputs: no synthetic inputs, so no forward pass
        if x.sum() > 0:
            x = -x
        return self.b(self.act(self.a(x + y)))


def test_model_without_inputs_falls_back_to_module_order_and_says_so():
    report = initaudit.audit(UntraceableTwoInputs())
    assert report.capture == "module-order" and report.to_json()["capture"] == "module-order"
    assert any("could not trace" in n for n in report.notes)
    assert any("no inputs to record a forward pass" in n for n in report.notes)
    row = next(r for r in report.layers if r["param"] == "a.weight")
    assert row["activation"] == "tanh" and row["activation_source"] == "module-order"


def test_functional_activation_found_by_tracing():
    import models

    report = initaudit.audit(models.FunctionalMLP("tanh", "he"))
    row = next(r for r in report.layers if r["param"] == "fc1.weight")
    assert row["activation"] == "tanh" and row["activation_source"] == "trace"


def test_true_fans_for_grouped_transposed_conv1d_attention_and_lstm():
    from initaudit.loaders.torch_module import graph_from_module
    import models

    m = nn.ModuleDict({
        "dw": nn.Conv2d(32, 32, 3, groups=32), "g": nn.Conv2d(32, 64, 3, groups=4),
        "tconv": nn.ConvTranspose2d(16, 8, 4, stride=2), "c1d": models.Conv1D(96, 32),
        "mha": nn.MultiheadAttention(32, 4), "lstm": nn.LSTM(10, 20)})
    p = graph_from_module(m, "m").params
    assert (p["dw.weight"].fan_in, p["dw.weight"].fan_out) == (9, 288)  # DESIGN §5: out * prod(k)
    assert (p["g.weight"].fan_in, p["g.weight"].fan_out) == (72, 576)
    t = p["tconv.weight"]
    assert t.kind is OpKind.CONV_TRANSPOSE and t.units_dim == 1 and (t.fan_in, t.fan_out) == (64, 128)
    assert (t.init_fan_in, t.init_fan_out) == (128, 256)  # what torch's shape-only rule reads
    c = p["c1d.weight"]
    assert (c.fan_in, c.fan_out, c.units_dim) == (32, 96, 1)
    assert p["mha.in_proj_weight"].gates == ("q", "k", "v") and p["mha.in_proj_weight"].fan_in == 32
    hh = p["lstm.weight_hh_l0"]
    assert hh.kind is OpKind.RECURRENT_HIDDEN and hh.gates == ("i", "f", "g", "o") and hh.fan_in == 20


def test_full_pickled_module_is_refused(tmp_path):
    path = tmp_path / "whole.pt"
    torch.save(nn.Linear(3, 3), path)
    with pytest.raises(UnsafeCheckpointError, match="state_dict"):
        initaudit.audit(str(path))


def test_crafted_checkpoint_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(2), "x": Payload()}, path)
    with pytest.raises(UnsafeCheckpointError):
        initaudit.audit(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("content, suffix, cause", [
    (b"", ".pt", ""), (b"\x00garbage" * 10, ".safetensors", "safetensors"),
    (b"{}", ".bin", ""), (b"abc", ".h5", "unsupported file type"),
])
def test_bad_files_raise_one_line_target_errors(tmp_path, content, suffix, cause):
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(content)
    with pytest.raises(TargetError) as err:
        initaudit.audit(str(path))
    assert "\n" not in str(err.value) and str(path) in str(err.value) and cause in str(err.value)


def test_checkpoint_with_nothing_to_analyse_is_an_error(tmp_path):
    path = tmp_path / "ints.pt"
    torch.save({"ids": torch.arange(10)}, path)
    with pytest.raises(TargetError, match="nothing could be analysed"):
        initaudit.audit(str(path))


@pytest.mark.parametrize("spec, cause", [
    ("no_such_pkg_xyz.mod:build", "importing"), (f"{TESTS / 'models.py'}:nope", "no attribute"),
    (f"{TESTS / 'models.py'}:ACTS", "not callable"), (f"{TESTS / 'defective.py'}:not_a_module", "not a torch.nn.Module"),
])
def test_factory_errors(spec, cause):
    with pytest.raises(TargetError, match=cause):
        initaudit.audit(spec)


def test_audit_never_modifies_the_checkpoint(tmp_path, defective_state):
    _, sd = defective_state
    path = tmp_path / "c.safetensors"
    save_file(sd, path)
    before = path.read_bytes(), path.stat().st_mtime_ns
    initaudit.audit(str(path), model=FACTORY)
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before


def test_settings_overrides_by_keyword():
    import defective

    report = initaudit.audit(defective.build(), ignore=["constant", "IA10"], select=["ALL"])
    assert all(not f.rule.startswith("IA10") for f in report.findings)
    with pytest.raises(TypeError):
        initaudit.audit(defective.build(), no_such_setting=1)
    assert Settings().fail_on == "error"


def test_meta_device_tensors_are_listed_not_analysed_and_the_probe_says_why():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.device("meta"):
        model[2] = nn.Linear(8, 2)
    report = initaudit.audit(model)
    assert {n for n, _ in report.skipped} == {"2.weight", "2.bias"}
    assert "meta device" in report.skipped[0][1]
    assert not report.probe.ran and "meta device" in report.probe.skipped_reason
    with torch.device("meta"):
        ghost = nn.Linear(8, 8)
    with pytest.raises(TargetError, match="nothing could be analysed.*meta device"):
        initaudit.audit(ghost)


def test_integer_tensors_in_a_bare_checkpoint_are_listed(tmp_path):
    path = tmp_path / "mixed.safetensors"
    save_file({"fc.weight": torch.randn(16, 16) * 0.1, "ids": torch.arange(4),
               "q.weight": torch.randint(-128, 127, (16, 16), dtype=torch.int8)}, path)
    report = initaudit.audit(str(path))
    assert {n for n, _ in report.skipped} == {"ids", "q.weight"}
    assert [r["param"] for r in report.layers] == ["fc.weight"]


def test_tensor_valued_training_counters_are_evidence(tmp_path):
    path = tmp_path / "c.pt"
    torch.save({"model": {"w": torch.randn(4, 4)}, "epoch": torch.tensor(3), "step": torch.tensor(0)}, path)
    report = initaudit.audit(str(path))
    assert report.stage == "trained" and "'epoch' (3)" in report.stage_reason and "step" not in report.stage_reason


def test_a_severity_override_never_raises_a_legitimate_case():
    import models

    zero_head = models.classifier_with_zero_head()
    lowered = initaudit.audit(zero_head, severity={"IA102": "warning"}, probe_enabled=False)
    assert [f.severity.value for f in lowered.findings if f.rule == "IA102"] == ["info"]
    dead = models.mlp(3, 16, "relu", "he")
    nn.init.zeros_(dead[2].weight)
    assert [f.severity.value for f in initaudit.audit(dead, severity={"IA102": "warning"}, probe_enabled=False)
            .findings if f.rule == "IA102"] == ["warning"]
