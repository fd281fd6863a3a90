"""Published initialisation schemes (tests/papers.py) come out without false findings, in the
module form and the bare safetensors form, and the defect each guards against still fires."""

from __future__ import annotations

import torch
from safetensors.torch import save_file

import initaudit
import papers


def _bare(model: torch.nn.Module, tmp_path, name: str = "m") -> initaudit.Report:
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return initaudit.audit(path, config=False)


def _by_rule(report: initaudit.Report, rule: str) -> dict[str, str]:
    return {f.layer: f.severity.value for f in report.findings if f.rule == rule}


def test_fixup_zero_branch_ends_in_a_bare_checkpoint_are_not_errors(tmp_path):
    """Fixup zeroes each block's conv2; conv1 is no peer of conv2 (the 2 numbers a layer inside
    the block, not a block): the file cannot place the zero layers, a warning."""
    found = _by_rule(_bare(papers.fixup(), tmp_path), "IA102")
    assert {k: v for k, v in found.items() if "conv2" in k} == {f"layers.{i}.conv2.weight": "warning" for i in range(8)}


def test_a_zero_conv2_among_non_zero_conv2_peers_stays_an_error(tmp_path):
    model = papers.fixup()
    with torch.no_grad():
        for i, block in enumerate(model.layers):
            if i != 3:
                torch.nn.init.kaiming_normal_(block.conv2.weight)
    found = _by_rule(_bare(model, tmp_path), "IA102")
    assert found.get("layers.3.conv2.weight") == "error"


def _serious(report: initaudit.Report) -> list[tuple[str, str]]:
    return [(f.rule, f.layer) for f in report.findings if f.severity.value != "info"]


def test_ntk_and_equalised_lr_multipliers_are_read_from_the_forward():
    """N(0, 1) weights multiplied by gain / sqrt(fan_in) in forward (NTK; StyleGAN's equalised
    learning rate with lr_mul 0.01 stores N(0, 100)): the signal sees He-scaled weights
    (measured: pre-activations 1.1-2.1 through 8 layers), so no exploding prediction."""
    for name in ("ntk", "stylegan_mapping"):
        report = initaudit.audit(papers.SCHEMES[name](), inputs=papers.inputs(name), config=False)
        assert _serious(report) == [], name
    layer = next(r for r in report.to_json()["layers"] if r["param"] == "1.weight")
    assert abs(layer["runtime_scale"] - 0.01 * (2 / 64) ** 0.5) < 1e-6  # lr_mul * sqrt(2 / fan_in)
    assert layer["stats"]["std"] > 90  # the stored weight is reported as stored


def test_the_cli_model_form_probes_with_each_builder_s_own_inputs(tmp_path):
    """``initaudit file.safetensors --model tests/papers.py:ntk``: the builder's own
    ``example_inputs`` feed the probe, which measures the runtime multiplier; with no inputs the
    stored N(0, 1) weights were a false IA110 error."""
    import json
    from pathlib import Path

    from click.testing import CliRunner

    from initaudit.cli import main

    path = tmp_path / "ntk.safetensors"
    save_file({k: v.detach().contiguous() for k, v in papers.ntk().state_dict().items()}, str(path))
    factory = f"{Path(papers.__file__)}:ntk"
    result = CliRunner().invoke(main, [str(path), "--model", factory, "--isolated", "-q", "--format", "json"])
    doc = json.loads(result.stdout)
    assert doc["probe"]["ran"], result.output
    assert [f["rule"] for f in doc["findings"] if f["severity"] in ("warning", "error")] == []


def test_a_runtime_multiplier_too_large_still_explodes():
    torch.manual_seed(0)
    layers = [m for i in range(8) for m in (papers.ScaledLinear(32 if i == 0 else 64, 64, gain=4.0), torch.nn.ReLU())]
    model = torch.nn.Sequential(*layers, papers.ScaledLinear(64, 10))
    found = _by_rule(initaudit.audit(model, inputs=papers.inputs("ntk"), config=False), "IA110")
    assert "error" in found.values()


def test_mup_zero_query_is_legitimate():
    """muP zeroes the query: uniform attention at the start, and from the second Adam step each
    query unit gets its own gradient through the keys (measured: 128 distinct rows of 128)."""
    report = initaudit.audit(papers.mup(), inputs=papers.inputs("mup"), config=False)
    found = _by_rule(report, "IA102")
    assert {k: v for k, v in found.items() if "attn.q" in k} == {f"blocks.{i}.attn.q.weight": "info" for i in range(4)}
    assert _serious(report) == []


def test_zero_query_and_zero_key_stay_errors():
    """With the keys zero too, dL/dW_q = dL/dlogits K x = 0 and dL/dW_k = 0 at every step."""
    model = papers.mup()
    for block in model.blocks:
        torch.nn.init.zeros_(block.attn.k.weight)
    found = _by_rule(initaudit.audit(model, inputs=papers.inputs("mup"), config=False), "IA102")
    assert found.get("blocks.0.attn.q.weight") == "error" and found.get("blocks.0.attn.k.weight") == "error"


def _weightnormed_too_large() -> torch.nn.Module:
    model = papers.weightnorm_mlp()
    with torch.no_grad():
        for m in model:
            if hasattr(m, "parametrizations"):
                m.parametrizations.weight.original0.mul_(4.0)  # g four times the data-dependent init's
    return model


def test_parametrised_weights_are_judged_as_applied():
    """weight_norm (Salimans & Kingma's data-dependent init) and the TCN's weight-normed N(0, 0.01)
    convs: the layer's weight is g v / |v| as computed, with the layer's fans; before, the layers
    were missing from the table and the TCN's prediction grew 10.5x where the probe measured 0.35x."""
    report = initaudit.audit(papers.weightnorm_mlp(), inputs=papers.inputs("weightnorm_mlp"), config=False)
    layer = next(r for r in report.to_json()["layers"] if r["param"] == "2.weight")
    assert layer["op"].endswith("Linear") and layer["fan_in"] == 64 and layer["expected"] is not None
    assert _serious(report) == []
    assert _serious(initaudit.audit(papers.tcn(), inputs=papers.inputs("tcn"), config=False)) == []


def test_a_weight_normed_stack_with_too_large_gains_explodes():
    found = _by_rule(initaudit.audit(_weightnormed_too_large(), inputs=papers.inputs("weightnorm_mlp"),
                                     config=False), "IA110")
    assert found and set(found.values()) <= {"warning", "error"}


DEFECT_FINDS = {  # defect -> (rule, category, layer or None for any) that must fire as an error
    "xavier_relu20": ("IA109", "vanishing", None),
    "zero_hidden": ("IA102", "constant", "4.weight"),
    "equal_rows": ("IA103", "symmetry", "4.weight"),
    "lstm_zero": ("IA102", "constant", "rnn.weight_hh_l0"),
    "normal1_mlp12": ("IA110", "exploding", None),
    "highway_closed": ("IA210", "vanishing", None),
}


def test_the_defects_the_schemes_guard_against_still_fire():
    for name, (rule, category, layer) in DEFECT_FINDS.items():
        report = initaudit.audit(papers.DEFECTS[name](), inputs=papers.inputs(name), config=False)
        hits = [f for f in report.findings if f.rule == rule and f.severity.value == "error"
                and f.category == category and (layer is None or f.layer == layer)]
        assert hits, (name, [(f.rule, f.severity.value, f.layer) for f in report.findings])


def _with_model(model: torch.nn.Module, tmp_path, name: str) -> initaudit.Report:
    """``ckpt.safetensors --model factory``: the stored tensors placed in the factory's module."""
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(path))
    return initaudit.audit(path, model=papers.SCHEMES[name](), inputs=papers.inputs(name), config=False)


def test_parametrised_weights_from_a_checkpoint_with_model_are_judged_as_computed(tmp_path):
    """The checkpoint stores weight_norm's g and v, never the computed weight: it is computed from
    them (was: dropped as 'not in the checkpoint', so the layers were judged from nothing)."""
    report = _with_model(papers.weightnorm_mlp(), tmp_path, "weightnorm_mlp")
    layer = next(r for r in report.to_json()["layers"] if r["param"] == "2.weight")
    assert layer["fan_in"] == 64 and layer["expected"] is not None
    assert _serious(report) == []
    found = _by_rule(_with_model(_weightnormed_too_large(), tmp_path, "weightnorm_mlp"), "IA110")
    assert found and set(found.values()) <= {"warning", "error"}


def test_siren_hidden_layers_are_judged_with_w0_applied():
    """SIREN: sin(w0 (W x + b)) with W ~ U(+-sqrt(6/n) / w0): the sine sees w0 W, He-like (measured:
    sin outputs 0.70-0.72 through 5 layers, w0 times each layer's output 1.7-2.0). Before, sin
    was an unknown op and w0 not applied: 5 IA104 warnings and an IA204 on the probe's
    pre-multiplier output (0.057x). The first layer's U(+-1/n) x 30 is the paper's frequency
    choice on raw coordinates and stays a warning (not measured false)."""
    for form in ("module", "onnx"):
        report = _siren_report(papers.siren(), form)
        assert [r for r in _serious(report) if r[1] != "0.weight"] == [], form
    layer = next(r for r in report.to_json()["layers"] if r["param"] == "2.weight")
    assert layer["runtime_scale"] == 30.0 and layer["expected"]["gain"] > 1.5  # 1/sqrt(E[sin(z)^2])


def test_siren_hidden_layers_without_the_w0_division_still_fire():
    model = papers.siren()
    with torch.no_grad():
        for lin in list(model)[2:-1:2]:
            lin.weight.mul_(30.0)  # U(+-sqrt(6/n)), forgetting / w0: the sine sees 30x He
    found = _by_rule(_siren_report(model, "module"), "IA104")
    assert found.get("2.weight") in ("warning", "error")


def _siren_report(model: torch.nn.Module, form: str) -> initaudit.Report:
    return _report_of(model, "siren", form)


def test_highway_carry_gate_is_predicted_as_measured():
    """y = H(x) T + x (1 - T), T = sigmoid(W x - 2): the carry 1 - T is near 0.88, not T's 0.12
    (``1 - t`` was read as a shape-only op). Before: predicted 0.0032x at 16 layers (IA109
    error) and an ordered-phase IA111 error; measured 0.040x at 21 layers. Now predicted 0.040x
    in the module and ONNX forms: IA109/IA204 warnings, true (the signal does fall)."""
    for form in ("module", "onnx"):
        report = _report_of(papers.highway(), "highway", form)
        assert not [f for f in report.findings if f.severity.value == "error"], form
        pred = next(f for f in report.findings if f.rule == "IA109").evidence["ratio"]
        meas = next(f for f in report.findings if f.rule == "IA204").evidence["ratio"]
        assert 0.67 < pred / meas < 1.5, (form, pred, meas)


def _report_of(model: torch.nn.Module, name: str, form: str) -> initaudit.Report:
    import tempfile
    from pathlib import Path

    x = papers.inputs(name)
    if form == "module":
        return initaudit.audit(model, inputs=x, config=False)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{name}.onnx"
        torch.onnx.export(model.eval(), (x,), str(path), dynamo=False, opset_version=17)
        return initaudit.audit(path, inputs=x, config=False)


def _hidden_std(model: torch.nn.Sequential, x: torch.Tensor) -> list[float]:
    """The std of every ReLU output of a Linear/ReLU stack."""
    out = []
    with torch.no_grad():
        for m in model:
            x = m(x)
            if isinstance(m, torch.nn.ReLU):
                out.append(float(x.std()))
    return out


def test_zero_init_identity_layers_and_hadamard_widening_are_clean():
    """ZerO (Zhao et al. 2022): identity layers keep the signal exactly (measured: every ReLU
    output has the std of the first), which a std-based He comparison read as 0.70x per layer
    (9 IA104 warnings); the 32 -> 64 Hadamard widening copies rows i and i + 32 but keeps rank 32
    and is read by an identity, whose columns tell the copies apart (was an IA103 error; measured:
    no longer copies after 5 SGD steps); the identity layers copy those copies on (10 IA208
    warnings)."""
    model, x = papers.zero_init(), papers.inputs("zero_init")
    stds = _hidden_std(model, x)
    assert max(stds) / min(stds) < 1.0 + 1e-6  # the identity stack is an exact isometry here
    report = initaudit.audit(model, inputs=x, config=False)
    assert _serious(report) == []
    layers = {r["param"]: r for r in report.to_json()["layers"]}
    assert layers["2.weight"]["matched_schemes"][0] == "identity"
    copies = next(f for f in report.findings if f.rule == "IA103")
    assert copies.evidence["rank_kept"] and copies.evidence["duplicate_rows"] == 32
    w = _trained(model, x)[0].weight  # the identity reading them tells the copies apart
    assert not torch.equal(w[:32], w[32:])


def _trained(model: torch.nn.Sequential, x: torch.Tensor, steps: int = 5) -> torch.nn.Sequential:
    """``steps`` SGD steps on a fixed random regression target."""
    target = torch.randn(x.shape[0], 10, generator=torch.Generator().manual_seed(1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), target).backward()
        opt.step()
    return model


def test_widening_copies_read_through_equal_columns_stay_a_warning():
    """ZerO's Hadamard widening read through equal columns of the next layer: the symmetry is a
    fixed point of gradient descent (measured: still copies after 5 SGD steps), so the copies
    are a warning, not info; copies of random rows (a copy bug) stay an error."""
    model, x = papers.zero_init(), papers.inputs("zero_init")
    with torch.no_grad():
        model[2].weight[:, 32:] = model[2].weight[:, :32]
    assert _by_rule(initaudit.audit(model, inputs=x, config=False), "IA103")["0.weight"] == "warning"
    w = _trained(model, x)[0].weight
    assert torch.equal(w[:32], w[32:])
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(32, 32).repeat(2, 1))
    assert _by_rule(initaudit.audit(model, inputs=x, config=False), "IA103")["0.weight"] == "error"


def test_a_shrinking_identity_and_rank_losing_copies_still_fire():
    """Controls: 0.5 I before ReLU halves the signal every layer (measured 0.5^9 over the
    stack): IA104 stays; a widening layer whose 64 rows are 16 distinct random rows has rank
    16 < 32 inputs: IA103 stays an error."""
    model, x = papers.zero_init(), papers.inputs("zero_init")
    with torch.no_grad():
        for i in range(2, 20, 2):
            model[i].weight.mul_(0.5)
    stds = _hidden_std(model, x)
    assert abs(stds[-1] / stds[0] - 0.5 ** 9) < 1e-6
    assert set(_by_rule(initaudit.audit(model, inputs=x, config=False), "IA104")) >= {"2.weight", "18.weight"}
    model = papers.zero_init()
    with torch.no_grad():
        w = model[0].weight
        w.copy_(torch.randn(16, 32).repeat(4, 1))
    assert int(torch.linalg.matrix_rank(w)) == 16
    assert _by_rule(initaudit.audit(model, inputs=x, config=False), "IA103") == {"0.weight": "error"}
