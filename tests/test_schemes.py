"""Scheme identification (issue 9): tensors drawn by every torch.nn.init function and by torch's
module defaults, over random shapes (Linear, Conv, ConvTranspose, LSTM/GRU stacks, MHA
in_proj), are identified with their scheme and gain, and correct draws are never flagged."""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn as nn

import initaudit
from initaudit.analysis import analyze
from initaudit.engine import Settings
from initaudit.loaders.torch_module import graph_from_module
from initaudit.schemes import identify

G = {"linear": 1.0, "relu": math.sqrt(2), "tanh": 5 / 3, "selu": 0.75, "leaky_relu(0.2)": math.sqrt(2 / 1.04)}


def _module(kind: str, rng: random.Random) -> tuple[nn.Module, str]:
    """A module of ``kind`` with random sizes, and the name of the weight to draw."""
    a, b = rng.randint(8, 160), rng.randint(8, 160)
    if kind == "linear":
        return nn.Linear(a, b), "weight"
    if kind == "conv":
        return nn.Conv2d(a // 2 + 1, b // 2 + 1, rng.choice([1, 3, 5])), "weight"
    if kind == "conv-transpose":
        return nn.ConvTranspose2d(a // 2 + 1, b // 2 + 1, rng.choice([2, 3, 4]), stride=rng.choice([1, 2])), "weight"
    if kind == "lstm":
        return nn.LSTM(a, b // 2 + 4), rng.choice(["weight_ih_l0", "weight_hh_l0"])
    if kind == "gru":
        return nn.GRU(a, b // 2 + 4), rng.choice(["weight_ih_l0", "weight_hh_l0"])
    e = 8 * (a // 8 + 1)
    return nn.MultiheadAttention(e, 4), "in_proj_weight"


def _draw(w: torch.Tensor, fn: str, gain_name: str, mode: str) -> tuple[str, float]:
    """Draw ``w`` in place; the (scheme, gain) the identification must find."""
    g = G[gain_name]
    init = nn.init
    if fn == "xavier_uniform":
        init.xavier_uniform_(w, gain=g)
        return "xavier", g
    if fn == "xavier_normal":
        init.xavier_normal_(w, gain=g)
        return "xavier", g
    if fn in ("kaiming_uniform", "kaiming_normal"):
        nonlin, a = ("leaky_relu", 0.2) if gain_name == "leaky_relu(0.2)" else (gain_name, 0)
        (init.kaiming_uniform_ if fn == "kaiming_uniform" else init.kaiming_normal_)(
            w, a=a, mode=mode, nonlinearity=nonlin)
        if mode == "fan_out":
            return "he-fan-out", g
        return ("lecun", 1.0) if gain_name == "linear" else ("he", g)
    if fn == "orthogonal":
        init.orthogonal_(w, gain=g)
        return "orthogonal", g
    if fn == "normal_0.02":
        init.normal_(w, std=0.02)
        return "transformer-0.02", 1.0
    if fn == "trunc_normal_0.02":
        init.trunc_normal_(w, std=0.02)
        return "transformer-0.02", 1.0
    raise KeyError(fn)


def _identified(module: nn.Module, wname: str):
    graph = graph_from_module(module, "t")
    p = graph.params[wname]
    a = analyze(graph.load_tensor(wname), p)
    return identify(p, a.stats, a.orthogonal_gain, p.activation,
                    distribution=a.shape.distribution if a.shape else None)


def _cases(n: int, seed: int = 0):
    rng = random.Random(seed)
    fns = ["xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal", "orthogonal",
           "normal_0.02", "trunc_normal_0.02", "default"]
    kinds = ["linear", "conv", "conv-transpose", "lstm", "gru", "mha"]
    for i in range(n):
        kind, fn = kinds[i % len(kinds)], fns[(i // len(kinds)) % len(fns)]
        torch.manual_seed(seed * 100003 + i)
        module, wname = _module(kind, rng)
        w = dict(module.named_parameters())[wname]
        if fn == "default":
            truth = ("xavier", 1.0) if kind == "mha" else ("torch-default", 1.0)
        else:
            with torch.no_grad():
                truth = _draw(w, fn, rng.choice(list(G)), rng.choice(["fan_in", "fan_out"]))
        yield kind, fn, module, wname, truth


def _is(match, truth) -> bool:
    """Same scheme, same gain (leaky_relu(0.2)'s gain is 2% from relu's: one tensor cannot
    tell them apart, so gains within 3% are the same reading)."""
    scheme, gain = truth
    return match.scheme == scheme and abs(match.gain / gain - 1) < 0.03


def test_identification_over_every_init_function_and_module_default():
    listed = first = total = 0
    misses = []
    for kind, fn, module, wname, truth in _cases(336):
        matches = _identified(module, wname)
        total += 1
        hit = [m for m in matches if _is(m, truth)]
        if hit:
            listed += 1
            # ties: schemes that give the same std here (Xavier = LeCun when fan_in = fan_out)
            if _is(matches[0], truth) or abs(math.log(hit[0].std / matches[0].std)) < 1e-9:
                first += 1
        else:
            misses.append((kind, fn, truth, [m.label for m in matches][:4]))
    assert listed / total >= 0.99, misses[:10]
    assert first / total >= 0.95


@pytest.mark.parametrize("kind", ["mha", "lstm", "conv-transpose"])
def test_readings_torch_used_are_tried(kind):
    """MHA in_proj (3E, E) with torch's (E, 3E) fans, Xavier on a whole LSTM stack, and
    orthogonal on ConvTranspose's (shape[0], -1) flattening are identified."""
    torch.manual_seed(0)
    if kind == "mha":
        m, w = nn.MultiheadAttention(64, 4), "in_proj_weight"  # torch's own default
        truth = ("xavier", 1.0)
    elif kind == "lstm":
        m, w = nn.LSTM(48, 32), "weight_ih_l0"
        nn.init.xavier_normal_(m.weight_ih_l0, gain=5 / 3)
        truth = ("xavier", 5 / 3)
    else:
        m, w = nn.ConvTranspose2d(16, 8, 3, stride=2), "weight"
        nn.init.orthogonal_(m.weight)
        truth = ("orthogonal", 1.0)
    assert _is(_identified(m, w)[0], truth)


def test_whole_stack_orthogonal_recurrent_weight_is_orthogonal():
    torch.manual_seed(0)
    lstm = nn.LSTM(32, 32)
    nn.init.orthogonal_(lstm.weight_hh_l0)  # (128, 32): orthonormal columns, not blocks
    assert _identified(lstm, "weight_hh_l0")[0].scheme == "orthogonal"


def test_matches_carry_their_gain_in_the_json():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 4))
    nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    nn.init.xavier_normal_(model[2].weight, gain=5 / 3)
    rows = {r["param"]: r for r in initaudit.audit(model, settings=Settings(probe_enabled=False)).layers}
    labels0 = [m["label"] for m in rows["0.weight"]["matches"]]
    labels2 = [m["label"] for m in rows["2.weight"]["matches"]]
    assert "he(relu)" in labels0 and "xavier(tanh)" in labels2
    he = next(m for m in rows["0.weight"]["matches"] if m["label"] == "he(relu)")
    assert he["gain"] == pytest.approx(math.sqrt(2), rel=1e-4) and he["activation"] == "relu"
    assert rows["0.weight"]["matched_schemes"][0] in ("he", "xavier")  # the DESIGN names stay


@pytest.mark.parametrize("act", [nn.ReLU, nn.Tanh, nn.Sigmoid, nn.SELU])
@pytest.mark.parametrize("seed", range(4))
def test_correct_draws_of_small_tensors_are_never_flagged(act, seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 4), act(), nn.Linear(4, 4), act(), nn.Linear(4, 4))
    for m in model:
        if isinstance(m, nn.Linear):
            if act is nn.ReLU:
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif act is nn.SELU:
                nn.init.kaiming_normal_(m.weight, nonlinearity="linear")  # LeCun
            else:
                nn.init.xavier_normal_(m.weight, gain=5 / 3 if act is nn.Tanh else 1.0)
    model[-1].weight.data = nn.init.xavier_normal_(torch.empty(4, 4))
    report = initaudit.audit(model, settings=Settings(probe_enabled=False, select=["IA104"]))
    assert [f.message for f in report.findings] == []


def test_fans_of_recurrent_projection_relu_rnn_kdim_and_bilinear():
    lstm = graph_from_module(nn.LSTM(16, 32, proj_size=8), "t").params["weight_hr_l0"]
    assert (lstm.fan_in, lstm.fan_out, lstm.gates, str(lstm.activation)) == (32, 8, (), "identity")
    rnn = graph_from_module(nn.RNN(16, 32, nonlinearity="relu"), "t").params["weight_ih_l0"]
    assert str(rnn.activation) == "relu"
    mha = graph_from_module(nn.MultiheadAttention(16, 2, kdim=12, vdim=10), "t").params
    assert (mha["k_proj_weight"].fan_in, mha["v_proj_weight"].fan_in) == (12, 10)
    assert mha["k_proj_weight"].kind.value == "linear"
    bil = graph_from_module(nn.Bilinear(6, 5, 7), "t").params["weight"]
    assert (bil.fan_in, bil.fan_out) == (30, 7)
    ct = graph_from_module(nn.ConvTranspose1d(10, 4, 3, stride=2), "t").params["weight"]
    assert ct.fan_in == pytest.approx(10 * 3 / 2)  # (in / g) * K / prod(s)


def test_n01_key_projection_of_a_kdim_attention_is_judged():
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(32, 4, kdim=24, vdim=24)
    nn.init.normal_(mha.k_proj_weight, std=1.0)
    report = initaudit.audit(mha, settings=Settings(probe_enabled=False, select=["IA104"]))
    assert any(f.layer == "k_proj_weight" for f in report.findings)
