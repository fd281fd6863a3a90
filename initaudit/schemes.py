"""Reference initialisation schemes: gains, expected standard deviations, scheme matching.

Formulas (DESIGN.md section 5; torch.nn.init):

- Xavier/Glorot:           std = gain * sqrt(2 / (fan_in + fan_out))
- He/Kaiming (fan_in):     std = gain / sqrt(fan_in)      (fan_out mode: gain / sqrt(fan_out))
- LeCun:                   std = 1 / sqrt(fan_in)
- PyTorch default:         kaiming_uniform(a=sqrt(5)) -> std = 1 / sqrt(3 * fan_in)
- transformer convention:  std = 0.02; residual output projections 0.02 / sqrt(2 * n_layer)

For activations torch has no gain for, the variance-preserving gain is 1 / sqrt(E[phi(z)^2]),
z ~ N(0, 1), computed by Gauss-Hermite quadrature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from initaudit.graph import Activation

# Gauss-Hermite (probabilists') nodes and weights for E[f(z)], z ~ N(0, 1).
_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(96)
_GH_WEIGHTS = _GH_WEIGHTS / math.sqrt(2 * math.pi)

_ELEMENTWISE = {
    "identity": lambda x: x,
    "relu": F.relu,
    "relu6": F.relu6,
    "leaky_relu": None,  # needs its slope
    "prelu": None,
    "elu": F.elu,
    "selu": F.selu,
    "celu": F.celu,
    "gelu": F.gelu,
    "silu": F.silu,
    "mish": F.mish,
    "softplus": F.softplus,
    "hardswish": F.hardswish,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hardtanh": F.hardtanh,
    "hardsigmoid": F.hardsigmoid,
    "softsign": F.softsign,
}

# Activations that pile up at their bounds (saturation) when pre-activations are large.
BOUNDED = {"tanh", "sigmoid", "hardtanh", "hardsigmoid", "softsign"}
# Activations that output exactly zero on a half-line (dead units possible).
RELU_FAMILY = {"relu", "relu6", "hardswish"}
# torch.nn.init.calculate_gain knows these; its values are what users' code actually uses.
_TORCH_GAIN = {"identity": 1.0, "sigmoid": 1.0, "tanh": 5.0 / 3, "relu": math.sqrt(2.0), "selu": 0.75}


def activation_fn(act: Activation):
    """The elementwise function for ``act`` as a torch callable."""
    if act.name in ("leaky_relu", "prelu"):
        slope = 0.01 if act.param is None else act.param
        return lambda x: F.leaky_relu(x, slope)
    fn = _ELEMENTWISE.get(act.name)
    if fn is None:
        raise KeyError(act.name)
    return fn


@lru_cache(maxsize=512)
def second_moment(act: Activation, variance: float) -> float:
    """E[phi(z)^2] for z ~ N(0, variance): what a layer with this activation passes on."""
    if variance <= 0:
        return float(activation_fn(act)(torch.zeros(1, dtype=torch.float64))[0] ** 2)
    z = torch.from_numpy(_GH_NODES * math.sqrt(variance))
    y = activation_fn(act)(z)
    return float((torch.from_numpy(_GH_WEIGHTS) * y * y).sum())


def variance_preserving_gain(act: Activation) -> float:
    """1 / sqrt(E[phi(z)^2]), z ~ N(0, 1): relu 1.414, gelu 1.534, silu 1.677, tanh 1.593."""
    return 1.0 / math.sqrt(second_moment(act, 1.0))


def gain(act: Activation | None) -> float:
    """torch.nn.init.calculate_gain where torch defines one, else the variance-preserving gain."""
    if act is None:
        return 1.0
    if act.name in ("leaky_relu", "prelu"):
        slope = 0.01 if act.param is None else act.param
        return math.sqrt(2.0 / (1 + slope**2))
    if act.name in _TORCH_GAIN:
        return _TORCH_GAIN[act.name]
    return variance_preserving_gain(act)


def gain_call(act: Activation | None) -> str:
    """Source text of the gain argument for a fix suggestion."""
    if act is None or act.name == "identity":
        return "1.0"
    if act.name in ("leaky_relu", "prelu"):
        return f"torch.nn.init.calculate_gain('leaky_relu', {0.01 if act.param is None else act.param:g})"
    if act.name in _TORCH_GAIN:
        return f"torch.nn.init.calculate_gain('{act.name}')"
    return f"{gain(act):.3f}  # 1/sqrt(E[{act.name}(z)^2]), z~N(0,1)"


@dataclass(frozen=True)
class Expectation:
    """The scheme a weight should follow given what comes after it."""

    scheme: str  # xavier | he | lecun
    std: float
    gain: float
    reason: str
    fix: str


def expected(act: Activation | None, fan_in: int, fan_out: int) -> Expectation:
    """The scheme the following activation calls for, with its std and the exact fix."""
    name = act.name if act else "identity"
    g = gain(act)
    if name in ("selu",):
        return Expectation("lecun", 1 / math.sqrt(fan_in), 1.0, "before selu (self-normalising)",
                           "torch.nn.init.normal_(w, std=1 / math.sqrt(fan_in))  # LeCun normal")
    if name in ("identity", "tanh", "sigmoid", "hardtanh", "hardsigmoid", "softsign"):
        where = "with no activation after it" if name == "identity" else f"before {name}"
        return Expectation("xavier", g * math.sqrt(2.0 / (fan_in + fan_out)), g, where,
                           f"torch.nn.init.xavier_normal_(w, gain={gain_call(act)})")
    nonlin = "leaky_relu" if name in ("leaky_relu", "prelu") else "relu"
    if name in ("relu", "leaky_relu", "prelu", "relu6"):
        extra = f", a={act.param:g}" if act and act.param is not None else ""
        fix = f"torch.nn.init.kaiming_normal_(w{extra}, nonlinearity='{nonlin}')"
    else:
        fix = f"torch.nn.init.normal_(w, std={g:.3f} / math.sqrt(fan_in))  # He with the {name} gain"
    return Expectation("he", g / math.sqrt(fan_in), g, f"before {act}", fix)


def candidate_stds(act: Activation | None, fan_in: int, fan_out: int,
                   init_fan_in: int, init_fan_out: int) -> dict[str, tuple[float, float]]:
    """std of every known scheme for this tensor: name -> (std, gain).

    torch's init functions read the shape only, so for tensors stored (in, out) the scheme a user
    actually called used ``init_fan_*``; both readings are tried.
    """
    g = gain(act)
    out: dict[str, tuple[float, float]] = {}
    for fi, fo in {(fan_in, fan_out), (init_fan_in, init_fan_out)}:
        for gg in {g, 1.0, math.sqrt(2.0), 5.0 / 3}:
            out.setdefault(f"xavier@{gg:.3f}/{fi}", (gg * math.sqrt(2.0 / (fi + fo)), gg))
            out.setdefault(f"he@{gg:.3f}/{fi}", (gg / math.sqrt(fi), gg))
            out.setdefault(f"he-fan-out@{gg:.3f}/{fo}", (gg / math.sqrt(fo), gg))
        out.setdefault(f"lecun@/{fi}", (1 / math.sqrt(fi), 1.0))
        out.setdefault(f"torch-default@/{fi}", (1 / math.sqrt(3 * fi), 1.0))
    return out


def match_schemes(std: float, n: int, act: Activation | None, fan_in: int, fan_out: int,
                  init_fan_in: int, init_fan_out: int, *, tolerance: float = 1.15,
                  residual_end: bool = False) -> list[tuple[str, float, float]]:
    """Schemes whose std is within tolerance of ``std``, best first: (scheme, std, gain).

    The tolerance widens by three sampling standard errors of a std estimate, 1/sqrt(2n).
    """
    tol = math.log(tolerance) + 3.0 / math.sqrt(max(2 * n, 1))
    scored: dict[str, tuple[float, float, float]] = {}
    cands = candidate_stds(act, fan_in, fan_out, init_fan_in, init_fan_out)
    cands["transformer-0.02@"] = (0.02, 1.0)
    for key, (s, g) in cands.items():
        scheme = key.split("@")[0]
        err = abs(math.log(std / s)) if std > 0 and s > 0 else math.inf
        if err <= tol and (scheme not in scored or err < scored[scheme][0]):
            scored[scheme] = (err, s, g)
    # GPT-2 scales residual output projections by 1/sqrt(2 * n_layer): accept up to 128 layers.
    if residual_end and "transformer-0.02" not in scored and 0.02 / math.sqrt(256) <= std < 0.02:
        n_layer = max(1, round((0.02 / std) ** 2 / 2))
        scored["transformer-0.02"] = (tol, 0.02 / math.sqrt(2 * n_layer), 1.0)
    return [(k, v[1], v[2]) for k, v in sorted(scored.items(), key=lambda kv: kv[1][0])]


@dataclass
class ScaleAssessment:
    """How a weight's spread compares with the scheme its context calls for."""

    expected: Expectation | None  # None when the following activation is unknown
    matched: list[str]  # every scheme within tolerance, best first ("none" when nothing fits)
    ratio: float | None  # std / expected std
    accepted_by: str | None  # the scheme or convention that makes this spread legitimate


def assess(param, stats, orthogonal: float | None, family: str | None, has_architecture: bool,
           tolerance: float = 1.5) -> ScaleAssessment | None:
    """Compare one weight's std with the reference schemes (None when not applicable).

    ``param`` is a graph.Param, ``stats`` an analysis.TensorStats. Accepted: within ``tolerance``
    of the expected scheme; orthogonal; PyTorch's own default (depth is judged by the signal
    propagation rules); the transformer 0.02 convention in transformer-family models; an
    embedding with N(0, 1) (PyTorch default).
    """
    from initaudit.graph import OpKind

    if not param.is_weight or not param.fan_in or not param.fan_out or not math.isfinite(stats.std):
        return None
    if param.kind not in (OpKind.LINEAR, OpKind.CONV, OpKind.CONV_TRANSPOSE, OpKind.ATTENTION,
                          OpKind.EMBEDDING, OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN):
        return None
    if stats.std == 0:
        return ScaleAssessment(None, ["zeros" if stats.max == 0 else "constant"], None, None)
    fan_in, fan_out = param.fan_in, param.fan_out
    # torch's init functions read the whole stored shape (all gates together, (in, out) layouts).
    init_in, init_out = param.init_fan_in or fan_in, param.init_fan_out or fan_out
    act = param.activation if has_architecture or param.activation_source else None
    unknown_act = act is None and not has_architecture
    matches = match_schemes(stats.std, max(stats.numel, 1), act, fan_in, fan_out, init_in, init_out,
                            residual_end=param.residual_end or not has_architecture)
    names = [m[0] for m in matches]
    if orthogonal is not None:
        names.insert(0, "orthogonal")
    if param.kind is OpKind.EMBEDDING:
        exp = Expectation("torch-default", 1.0, 1.0, "for an embedding (PyTorch default N(0, 1))",
                          "torch.nn.init.normal_(w, std=1.0)  # or std=0.02 in transformer models")
        if abs(math.log(stats.std)) < math.log(tolerance):
            names = ["torch-default"] + [n for n in names if n != "torch-default"]
    elif param.kind in (OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN):
        # torch's RNN default: uniform(-1/sqrt(hidden), 1/sqrt(hidden)) -> std 1/sqrt(3 * hidden)
        rnn_default = 1 / math.sqrt(3 * fan_out)
        if abs(math.log(stats.std / rnn_default)) < math.log(1.15) + 3 / math.sqrt(2 * stats.numel):
            names = ["torch-default"] + [n for n in names if n != "torch-default"]
        exp = expected(Activation("tanh") if act is None else act, fan_in, fan_out)
    else:
        exp = None if unknown_act else expected(act, fan_in, fan_out)
    ratio = stats.std / exp.std if exp else None
    accepted = None
    if ratio is not None and 1 / tolerance <= ratio <= tolerance:
        accepted = exp.scheme
    elif exp is not None and exp.scheme in names:  # the right scheme with another standard gain
        accepted = exp.scheme
    elif "orthogonal" in names or "torch-default" in names:  # deliberate; depth is IA109/IA110's
        accepted = "orthogonal" if "orthogonal" in names else "torch-default"
    elif "transformer-0.02" in names and (family == "transformer" or param.kind is OpKind.EMBEDDING):
        accepted = "transformer-0.02"
    elif unknown_act:  # no architecture: any known scheme is a plausible choice
        accepted = next((n for n in names if n != "transformer-0.02"), None)
    return ScaleAssessment(exp, names or ["none"], ratio, accepted)
