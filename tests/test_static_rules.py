"""Each static rule on a model that really has the defect (measured), and healthy controls."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.engine import Settings
from models import GPT2, LSTMTagger, ResNetish, classifier_with_zero_head, healthy_controls, mlp


def codes(report, severity=None):
    return {f.rule for f in report.findings if severity is None or f.severity.value == severity}


def findings_of(report, code):
    return [f for f in report.findings if f.rule == code]


def static(model, **kw):
    return initaudit.audit(model, settings=Settings(probe_enabled=False, **kw))


@pytest.mark.parametrize("probe", [False, True], ids=["static", "probe"])
@pytest.mark.parametrize("name", sorted(healthy_controls()))
def test_healthy_controls_have_no_error_or_warning(name, probe):
    report = initaudit.audit(healthy_controls()[name], probe_enabled=probe)
    assert report.probe.ran is probe
    loud = [(f.rule, f.layer, f.message) for f in report.findings if f.severity.value != "info"]
    assert loud == []
    assert report.exit_code == 0


# --- IA101 nonfinite --------------------------------------------------------------------------

def test_nan_weight_is_an_error_and_really_poisons_the_forward():
    model = mlp(3, 16, "relu", "he")
    with torch.no_grad():
        model[2].weight[3, 4] = float("nan")
    assert torch.isnan(model(torch.randn(4, 16))).any()  # the defect is real
    report = static(model)
    (f,) = findings_of(report, "IA101")
    assert f.layer == "2.weight" and f.severity.value == "error" and f.evidence["nonfinite"] == 1
    assert report.exit_code == 1


# --- IA102 constant ---------------------------------------------------------------------------

def _grad_of_hidden(model, idx):
    model.zero_grad()
    out = model(torch.randn(32, model[0].in_features))
    (out - torch.randn_like(out)).pow(2).sum().backward()  # a loss whose gradient is not zero at 0
    return model[idx].weight.grad


def test_zero_hidden_layer_before_relu_is_an_error_and_gets_no_gradient():
    model = mlp(3, 32, "relu", "he")
    nn.init.zeros_(model[2].weight)
    assert _grad_of_hidden(model, 2).abs().max() == 0  # measured: dead forever
    (f,) = findings_of(static(model), "IA102")
    assert f.layer == "2.weight" and f.severity.value == "error"
    assert "stays dead" in f.message and "kaiming_normal_" in f.fix


def test_zero_hidden_layer_before_tanh_is_an_error_without_the_dead_claim():
    model = mlp(3, 32, "tanh", "xavier")
    nn.init.zeros_(model[2].weight)
    assert _grad_of_hidden(model, 2).abs().max() > 0  # tanh'(0) = 1: gradients do flow
    (f,) = findings_of(static(model), "IA102")
    assert f.severity.value == "error" and "stays dead" not in f.message
    assert "xavier_normal_" in f.fix


def test_constant_nonzero_weight_makes_units_identical():
    model = mlp(3, 16, "tanh", "xavier")
    nn.init.constant_(model[0].weight, 0.1)
    out = model[1](model[0](torch.randn(8, 16)))
    assert torch.allclose(out[:, 0:1].expand_as(out), out)  # every unit the same
    (f,) = findings_of(static(model), "IA102")
    assert f.layer == "0.weight" and "0.100" in f.message


def test_zero_output_head_is_info_only():
    report = static(classifier_with_zero_head())
    (f,) = findings_of(report, "IA102")
    assert f.severity.value == "info" and "output layer" in f.message
    assert report.exit_code == 0


class ResidualMLP(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(16, 32)
        self.fc1, self.fc2 = nn.Linear(32, 32), nn.Linear(32, 32)
        self.modulation = nn.Linear(32, 32)
        self.out = nn.Linear(32, 4)
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.modulation.weight)

    def forward(self, x):
        h = self.inp(x)
        h = h + self.fc2(torch.relu(self.fc1(h)))
        h = h * (1 + self.modulation(h))
        return self.out(h)


def test_zero_last_layer_of_residual_branch_and_adaln_modulation_are_info():
    report = static(ResidualMLP())
    by_layer = {f.layer: f for f in findings_of(report, "IA102")}
    assert by_layer["fc2.weight"].severity.value == "info" and "residual" in by_layer["fc2.weight"].message
    assert by_layer["modulation.weight"].severity.value == "info"
    assert "IA102" not in codes(report, "error")


# --- IA103 symmetry ---------------------------------------------------------------------------

def test_exact_duplicate_units_produce_identical_activations():
    model = mlp(3, 64, "relu", "he", d_in=32)
    with torch.no_grad():
        model[0].weight[32:] = model[0].weight[:32]
        model[0].bias[32:] = model[0].bias[:32]
    act = model[1](model[0](torch.randn(16, 32)))
    assert torch.equal(act[:, 32:], act[:, :32])  # the defect is real
    (f,) = findings_of(static(model), "IA103")
    assert f.evidence["duplicate_rows"] == 32 and f.severity.value == "error"  # half the layer


def test_near_duplicate_units_found_by_cosine():
    model = mlp(3, 64, "relu", "he")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model[2].weight[10] = model[2].weight[20] + 1e-4 * torch.randn(64, generator=g)
    (f,) = findings_of(static(model), "IA103")
    assert f.evidence["near_duplicate_rows"] == 1 and f.evidence["min_cosine"] > 0.999
    assert f.severity.value == "warning"


def test_duplicate_search_on_a_large_embedding_finds_planted_pairs():
    g = torch.Generator().manual_seed(0)
    emb = nn.Embedding(20000, 256)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(20000, 256, generator=g) + 3.0 * torch.randn(256, generator=g))
        emb.weight[123] = emb.weight[19999]
        emb.weight[500] = emb.weight[7] * 1.0001 + 1e-3 * torch.randn(256, generator=g)
    model = nn.Sequential(emb, nn.LayerNorm(256))
    f = {x.evidence.get("duplicate_rows", 0) + x.evidence.get("near_duplicate_rows", 0)
         for x in findings_of(static(model), "IA103")}
    assert f == {1}  # one exact pair, one near pair: no flood from the shared direction


# --- IA104 scale ------------------------------------------------------------------------------

def test_small_init_before_tanh_is_flagged_with_ratio_and_exact_fix():
    model = mlp(5, 100, "tanh", "normal001")
    report = static(model)
    f = next(f for f in findings_of(report, "IA104") if f.layer == "0.weight")
    assert f.evidence["scheme"] == "xavier" and f.evidence["expected_std"] == pytest.approx(5 / 3 * 0.1, rel=1e-3)
    assert f.evidence["ratio"] == pytest.approx(0.06, abs=0.005)
    assert f.fix == "torch.nn.init.xavier_normal_(w, gain=torch.nn.init.calculate_gain('tanh'))"
    row = next(r for r in report.layers if r["param"] == "0.weight")
    assert row["matched_schemes"] == ["none"] and row["expected"]["scheme"] == "xavier"


def test_layer_followed_by_normalisation_is_downgraded_to_info():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Linear(64, 10))
    nn.init.normal_(model[0].weight, std=0.001)
    (f,) = [f for f in findings_of(static(model), "IA104") if f.layer == "0.weight"]
    assert f.severity.value == "info" and "normalisation follows" in f.message


def test_scheme_matching_lists_every_scheme_within_tolerance():
    torch.manual_seed(0)
    lin = nn.Linear(200, 200)
    nn.init.xavier_normal_(lin.weight)  # xavier == lecun when fan_in == fan_out
    model = nn.Sequential(lin, nn.Tanh(), nn.Linear(200, 10))
    row = next(r for r in static(model).layers if r["param"] == "0.weight")
    assert {"xavier", "lecun"} <= set(row["matched_schemes"])


def test_orthogonal_and_he_fan_out_are_recognised():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(), nn.Linear(64, 4))
    nn.init.orthogonal_(model[0].weight, gain=math.sqrt(2))
    nn.init.kaiming_normal_(model[2].weight, mode="fan_out", nonlinearity="relu")
    rows = {r["param"]: r for r in static(model).layers}
    assert rows["0.weight"]["matched_schemes"][0] == "orthogonal"
    assert "he-fan-out" in rows["2.weight"]["matched_schemes"]


# --- IA105 mean shift -------------------------------------------------------------------------

def test_torch_rand_weights_are_mean_shifted():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.rand(64, 64) * 0.2)
    with torch.no_grad():
        pre = model[0](torch.randn(256, 64))
    corr = torch.corrcoef(pre.T)
    assert (corr.sum() - corr.trace()) / (64 * 63) > 0.5  # every unit moves with the others
    (f,) = findings_of(static(model), "IA105")
    assert f.evidence["ratio"] == pytest.approx(math.sqrt(3), rel=0.1)


# --- IA106 uninitialised memory ---------------------------------------------------------------

def _leftover_memory(shape, seed=0):
    """What to_empty() hands back when the allocator reuses memory that held int64 ids."""
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    ids = torch.randint(0, 50257, (n // 2,), generator=g, dtype=torch.int64)
    return ids.view(torch.float32).reshape(shape).clone()


def test_leftover_memory_is_flagged_as_uninitialized():
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight.copy_(_leftover_memory((64, 64)))
    w = model[0].weight
    assert torch.isfinite(w).all() and (w != 0).any()  # finite, non-zero: no other rule sees it
    (f,) = findings_of(static(model), "IA106")
    assert f.layer == "0.weight" and f.severity.value == "error" and f.evidence["tiny_fraction"] > 0.4


def test_half_precision_bytes_read_as_float32_are_flagged():
    g = torch.Generator().manual_seed(0)
    halves = (torch.randn(64 * 64 * 2, generator=g) * 0.05).half()
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight.copy_(halves.view(torch.float32).view(64, 64))
    assert "IA106" in codes(static(model))


@pytest.mark.parametrize("init", ["normal", "uniform", "trunc_normal", "int8", "bf16"])
def test_real_initialisations_are_not_called_uninitialized(init):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    w = model[0].weight
    with torch.no_grad():
        if init == "normal":
            nn.init.normal_(w, std=1e-3)
        elif init == "uniform":
            nn.init.uniform_(w, -0.1, 0.1)
        elif init == "trunc_normal":
            nn.init.trunc_normal_(w, std=0.02)
        elif init == "int8":
            w.copy_((w / 0.002).round().clamp(-128, 127) * 0.002)  # int8 weights, dequantised
        else:
            model.to(torch.bfloat16)
    assert "IA106" not in codes(static(model))


# --- IA107 recurrent --------------------------------------------------------------------------

def test_exploding_recurrence_measured_and_flagged():
    torch.manual_seed(0)
    rnn = nn.RNN(16, 64, batch_first=True, nonlinearity="relu")
    nn.init.normal_(rnn.weight_hh_l0, std=0.5)
    rho = torch.linalg.eigvals(rnn.weight_hh_l0.detach().double()).abs().max().item()
    out, _ = rnn(torch.randn(2, 30, 16))
    assert out[:, -1].abs().mean() > 1e3 * out[:, 0].abs().mean()  # the state blows up
    (f,) = findings_of(static(rnn), "IA107")
    assert f.evidence["spectral_radius"] == pytest.approx(rho, rel=1e-6) and f.severity.value == "error"


def test_orthogonal_lstm_is_clean_and_per_gate_radius_is_one():
    model = LSTMTagger()
    report = static(model)
    assert "IA107" not in codes(report)


# --- IA108 normalization ----------------------------------------------------------------------

def test_zero_gamma_outside_residual_is_warning_inside_is_info():
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    nn.init.zeros_(plain[1].weight)
    (f,) = findings_of(static(plain), "IA108")
    # BN's output is beta = 0 on every sample and relu'(0) = 0: gamma gets no gradient either
    assert f.severity.value == "error" and f.evidence["gamma_gradient_zero"] is True
    nn.init.constant_(plain[1].bias, 0.5)  # relu'(0.5) = 1: gamma gets a gradient and recovers
    (f,) = findings_of(static(plain), "IA108")
    assert f.severity.value == "warning" and f.evidence["gamma_gradient_zero"] is False
    infos = findings_of(static(ResNetish()), "IA108")
    assert infos and {f.severity.value for f in infos} == {"info"}


def test_negative_running_var_is_an_error():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    model[1].running_var[2] = -0.5
    (f,) = findings_of(static(model), "IA108")
    assert f.severity.value == "error" and f.layer == "1.running_var"


# --- IA109 / IA110 signal propagation ---------------------------------------------------------

def _measured_ratio(model, d_in=100):
    x = torch.randn(512, d_in, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return (model(x).std() / x.std()).item()


def test_vanishing_predicted_statically_and_true_in_a_forward_pass():
    model = mlp(10, 100, "relu", "xavier")  # Xavier before ReLU: chi = 1/2 per layer
    # the output head is not judged (small logits are a uniform start), and the layer feeding
    # only it is judged with its own shrink taken out (it only scales the logits): the signal
    # entering it is what the layers below made of it
    measured = _measured_ratio(model[:-4])
    report = static(model)
    (f,) = findings_of(report, "IA109")
    assert f.evidence["param"] in ("14.weight", "16.weight")
    assert measured < 0.1 and f.evidence["ratio"] == pytest.approx(measured, rel=0.5)


def test_exploding_predicted_statically_and_true_in_a_forward_pass():
    model = mlp(5, 100, "relu", "normal1")
    measured = _measured_ratio(model)
    (f,) = findings_of(static(model), "IA110")
    assert measured > 1e3 and f.severity.value == "error"
    assert f.evidence["ratio"] == pytest.approx(measured, rel=0.5)


def test_he_relu_20_layers_predicts_unit_gain():
    report = static(mlp(20, 100, "relu", "he"))
    ratios = [s["ratio"] for s in report.signal]
    assert len(ratios) == 20 and all(0.5 < r < 2 for r in ratios)


# --- stage ------------------------------------------------------------------------------------

def test_stage_trained_skips_init_scale_but_keeps_nonfinite():
    model = mlp(5, 100, "tanh", "normal001")
    with torch.no_grad():
        model[0].weight[0, 0] = float("inf")
    report = static(model, stage="trained")
    assert "IA104" not in codes(report) and "IA109" not in codes(report)
    assert "IA101" in codes(report)
    assert report.stage == "trained" and "user" in report.stage_reason


def test_classic_table_static_verdicts():
    """The classic 5-layer, 100-unit experiment: what the static audit alone says."""
    verdict, info = {}, {}
    for init in ("normal1", "normal001", "xavier", "he"):
        for act in ("sigmoid", "tanh", "relu"):
            report = static(mlp(5, 100, act, init))
            verdict[init, act] = {f.rule for f in report.findings if f.severity.value != "info"}
            info[init, act] = codes(report, "info")
    for act in ("sigmoid", "tanh", "relu"):
        assert "IA104" in verdict["normal1", act] and "IA104" in verdict["normal001", act]
        # the sigmoid stack is in the ordered phase: inputs merge (IA111) at a healthy std
        assert verdict["xavier", act] == ({"IA111"} if act == "sigmoid" else set())
        assert verdict["he", act] == ({"IA111"} if act == "sigmoid" else set())
    # Xavier before ReLU and He before sigmoid are named, at info over 4 hidden layers
    assert info["xavier", "relu"] == {"IA104"} and info["he", "sigmoid"] == {"IA104"}
    assert info["he", "relu"] == info["xavier", "tanh"] == set()
    assert "IA110" in verdict["normal1", "relu"] and "IA109" in verdict["normal001", "tanh"]


def test_gpt2_tied_embedding_reported_once_and_parameters_not_double_counted():
    model = GPT2()
    report = static(model)
    params = [r["param"] for r in report.layers]
    assert "wte.weight" in params and "lm_head.weight" not in params
    row = next(r for r in report.layers if r["param"] == "wte.weight")
    assert row["tied_with"] == ["lm_head.weight"]
    assert report.parameter_count == sum(p.numel() for p in model.parameters())


def test_each_gate_block_is_judged_on_its_own():
    torch.manual_seed(0)
    lstm = nn.LSTM(16, 32)
    with torch.no_grad():
        lstm.weight_ih_l0[32:64].mul_(20)  # only the forget gate is mis-scaled
    (f,) = findings_of(static(lstm), "IA104")
    assert f.layer == "weight_ih_l0" and f.message.startswith("gate f: ")
    whole = nn.LSTM(16, 32)
    nn.init.xavier_uniform_(whole.weight_ih_l0)  # torch's init reads the stacked (4h, in) shape
    assert "IA104" not in codes(static(whole))
