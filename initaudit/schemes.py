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
from dataclasses import dataclass, field, replace
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
    "sin": torch.sin,  # SIREN (Sitzmann et al. 2020): gain 1/sqrt(E[sin(z)^2]) = 1.52
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


def expected(act: Activation | None, fan_in: float, fan_out: float) -> Expectation:
    """The scheme the following activation calls for, with its std and the exact fix.

    ``fan_out`` is the number of outputs one input reaches: for a grouped convolution
    (``Param.group_fan_out``) the out / groups channels of its group times the kernel taps, so a
    depthwise conv with no activation expects Xavier's sqrt(2 / (k + k)) = 1 / sqrt(k), the
    variance-preserving spread, not sqrt(2 / (k + C k))."""
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


# --- identification -------------------------------------------------------------------------
#
# A tensor drawn by a torch.nn.init function has the std of that function for the fans torch
# read from the shape (_calculate_fan_in_and_fan_out), with the gain the caller passed. Each
# candidate below is one (scheme, gain, fan reading); a tensor matches every candidate within
# the sampling tolerance, best first, and each match carries its gain and the activation that
# gain belongs to (``he(relu)``, ``xavier(tanh)``, ``lecun``).

# The standard gains a caller passes (calculate_gain): label -> gain.
# leaky_relu(a) for small a (0.01, 0.2: within 2% of sqrt(2)) reads as relu unless it follows.
STANDARD_GAINS = {"linear": 1.0, "relu": math.sqrt(2.0), "tanh": 5.0 / 3, "selu": 0.75}
RELU_LIKE = {"relu", "relu6", "leaky_relu", "prelu", "gelu", "silu", "elu", "celu", "mish",
             "softplus", "hardswish"}


@dataclass(frozen=True)
class Match:
    """One scheme a tensor's spread fits."""

    scheme: str  # DESIGN name: xavier | he | he-fan-out | lecun | torch-default | orthogonal | identity | ...
    gain: float
    std: float  # the scheme's std for this tensor
    activation: str | None  # what the gain is for ("relu", "tanh", "linear"); None: no gain
    error: float = 0.0  # |log(std / scheme std)|

    @property
    def label(self) -> str:
        """``he(relu)``, ``xavier(tanh)``, ``xavier`` (gain 1), ``lecun``, ``orthogonal(1.41)``."""
        if self.activation in (None, "linear"):
            return self.scheme
        return f"{self.scheme}({self.activation})"

    def to_json(self) -> dict:
        return {"scheme": self.scheme, "gain": round(self.gain, 6), "activation": self.activation,
                "label": self.label, "std": self.std}


def _gain_label(g: float) -> str | None:
    for name, v in STANDARD_GAINS.items():
        if abs(g / v - 1) < 1e-6:
            return name
    return None


def candidates(param, act: Activation | None) -> list[Match]:
    """Every (scheme, gain, fans) a torch.nn.init call or a module default could have used."""
    from initaudit.graph import OpKind, torch_shape_fans

    shape_in, shape_out = torch_shape_fans(tuple(param.shape))
    init_in = param.init_fan_in or shape_in or param.fan_in
    init_out = param.init_fan_out or shape_out or param.fan_out
    readings = {(init_in, init_out), (param.fan_in, param.fan_out)}
    gains = dict(STANDARD_GAINS)
    if act is not None and act.name not in ("identity",):
        g = gain(act)
        if _gain_label(g) is None:
            gains[str(act)] = g
    out: list[Match] = []
    for fi, fo in readings:
        if not fi or not fo:
            continue
        for label, g in gains.items():
            out.append(Match("xavier", g, g * math.sqrt(2.0 / (fi + fo)), label))
            if label == "linear":
                out.append(Match("lecun", 1.0, 1.0 / math.sqrt(fi), None))
            else:
                out.append(Match("he", g, g / math.sqrt(fi), label))
            out.append(Match("he-fan-out", g, g / math.sqrt(fo), label))
    # PyTorch's module defaults: kaiming_uniform(a=sqrt(5)) on the shape fans (Linear, Conv,
    # ConvTranspose: 1 / sqrt(3 * fan_in)); Bilinear: uniform(+-1/sqrt(in1)); RNNs:
    # uniform(+-1/sqrt(hidden)).
    defaults = {init_in, param.fan_in}  # the true fan_in too: weights exported transposed
    if len(param.shape) == 3 and param.kind is OpKind.LINEAR:
        defaults.add(param.shape[1])
    if param.kind in (OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN):
        hidden = param.shape[0] // max(len(param.gates), 1)
        defaults |= {hidden, param.shape[1]}  # weight_hr (proj, hidden): 1/sqrt(hidden)
    for x in defaults:
        if x:
            out.append(Match("torch-default", 1.0, 1.0 / math.sqrt(3 * x), None))
    if param.kind is OpKind.EMBEDDING:
        out.append(Match("torch-default", 1.0, 1.0, None))
    out.append(Match("transformer-0.02", 1.0, 0.02, None))
    return out


def identify(param, stats, orthogonal: float | None = None, act: Activation | None = None,
             *, tolerance: float = 1.15, distribution: str | None = None,
             identity: float | None = None) -> list[Match]:
    """Every scheme whose std is within ``tolerance`` of the tensor's std (widened by three
    sampling standard errors of a std estimate, 3 / sqrt(2n)), best first; one entry per
    (scheme, activation) label. ``distribution`` ("normal", "uniform", "truncated-normal")
    drops candidates that cannot have drawn it (PyTorch's defaults are uniform)."""
    std, n = stats.std, max(stats.numel, 1)
    if not (std > 0 and math.isfinite(std)):
        return []
    tol = math.log(tolerance) + 3.0 / math.sqrt(2 * n)
    best: dict[str, Match] = {}
    if identity is not None:  # c x a partial identity (eye_, dirac_): judged by c, not by its std
        best["identity"] = Match("identity", identity, std, None, 0.0)
    if orthogonal is not None:
        label = _gain_label(orthogonal)
        best["orthogonal"] = Match("orthogonal", orthogonal, std, label or f"{orthogonal:.3g}", 0.0)
    for c in candidates(param, act):
        if c.scheme == "torch-default" and distribution == "normal" and c.std != 1.0:
            continue
        err = abs(math.log(std / c.std))
        if err <= tol and (c.label not in best or err < best[c.label].error):
            best[c.label] = replace(c, error=err)
    return sorted(best.values(), key=lambda m: m.error)


def scheme_names(matches: list[Match]) -> list[str]:
    """The DESIGN scheme names of ``matches``, best first, each once (``matched_schemes``)."""
    names: list[str] = []
    for m in matches:
        if m.scheme not in names:
            names.append(m.scheme)
    return names or ["none"]


def fits_activation(m: Match, act: Activation | None) -> bool:
    """Whether a matched scheme is what the following activation calls for:

    - ReLU family (relu, leaky_relu, gelu, silu, elu, mish, ...): He, fan_in or fan_out mode,
      with a ReLU-family gain (sqrt(2), leaky_relu's, or the activation's own);
      orthogonal with such a gain;
    - tanh: Xavier with gain 1 or 5/3, LeCun, orthogonal with gain 1 or 5/3;
    - sigmoid and other bounded activations: Xavier (gain 1), LeCun, orthogonal (gain 1);
    - selu: LeCun (He with gain 1), orthogonal (gain 1);
    - no activation (a linear map, an output, attention projections): Xavier (gain 1), LeCun,
      orthogonal (gain 1);
    - any activation: a partial identity c I (eye_, dirac_) with c within 1.15 of 1: it copies
      its inputs, relu(I relu(x)) = relu(x), so the signal keeps its scale whatever follows.
    """
    name = act.name if act else "identity"
    if m.scheme == "identity":
        return abs(math.log(m.gain)) <= math.log(1.15)
    relu_gain = m.activation not in (None, "linear", "tanh", "selu") and m.gain > 1.2
    if name in RELU_LIKE:
        return m.scheme in ("he", "he-fan-out", "orthogonal") and relu_gain
    if name == "tanh":
        return (m.scheme in ("xavier", "orthogonal") and m.activation in ("linear", "tanh")) or m.scheme == "lecun"
    if name == "selu":
        return m.scheme == "lecun" or (m.scheme == "orthogonal" and m.activation == "linear")
    return (m.scheme in ("xavier", "orthogonal") and m.activation == "linear") or m.scheme == "lecun"


@dataclass
class ScaleAssessment:
    """How a weight's spread compares with the scheme its context calls for."""

    expected: Expectation | None  # None when the following activation is unknown
    matched: list[str]  # every scheme within tolerance, best first ("none" when nothing fits)
    ratio: float | None  # std / expected std
    accepted_by: str | None  # the scheme or convention that makes this spread legitimate
    matches: list[Match] = field(default_factory=list)
    convention: str | None = None  # a documented convention the spread follows (not accepted)


def assess(param, stats, orthogonal: float | None, family: str | None, has_architecture: bool,
           tolerance: float = 1.2, *, distribution: str | None = None,
           fixed_std: float | None = None, identity: float | None = None) -> ScaleAssessment | None:
    """Compare one weight's std with the reference schemes (None when not applicable).

    ``param`` is a graph.Param, ``stats`` an analysis.TensorStats. Accepted (``accepted_by``):
    a scheme the following activation calls for (:func:`fits_activation`), or within
    ``tolerance`` of its std; orthogonal recurrent weights and PyTorch's RNN default; N(0, 1)
    and other usual embedding scales. A spread that follows a convention of the model
    (``fixed_std``: one std shared by layers of different fans, as normal(0.02)) is not
    accepted by name: ``convention`` says which, and the rules let the predicted signal decide.
    With no architecture, or before an op nobody models (``param.follows_unknown``), the
    activation is unknown: no scheme is expected and any known one is a plausible choice.
    """
    from initaudit.graph import OpKind

    if not param.is_weight or not param.fan_in or not param.fan_out or not math.isfinite(stats.std):
        return None
    if param.kind not in (OpKind.LINEAR, OpKind.CONV, OpKind.CONV_TRANSPOSE, OpKind.ATTENTION,
                          OpKind.EMBEDDING, OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN):
        return None
    if stats.std == 0:
        return ScaleAssessment(None, ["zeros" if stats.max == 0 else "constant"], None, None)
    act = param.activation if has_architecture or param.activation_source else None
    # no architecture, or an op nobody models follows: the activation is unknown, not "none"
    unknown_act = act is None and (not has_architecture or bool(getattr(param, "follows_unknown", None))
                                   or bool(getattr(param, "split_functions", ())))
    matches = identify(param, stats, orthogonal, act, distribution=distribution, identity=identity)
    # GPT-2 scales residual output projections by 1/sqrt(2 * n_layer) (up to 128 layers)
    if (param.residual_end or unknown_act) and 0.02 / math.sqrt(256) <= stats.std < 0.02 / 1.15 \
            and not any(m.scheme == "transformer-0.02" for m in matches):
        n_layer = max(1, round((0.02 / stats.std) ** 2 / 2))
        matches.append(Match("transformer-0.02", 1.0, 0.02 / math.sqrt(2 * n_layer), None,
                             abs(math.log(stats.std * math.sqrt(2 * n_layer) / 0.02))))
    names = scheme_names(matches)
    recurrent = param.kind in (OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN)
    if param.kind is OpKind.EMBEDDING:
        exp = Expectation("torch-default", 1.0, 1.0, "for an embedding (PyTorch default N(0, 1))",
                          "torch.nn.init.normal_(w, std=1.0)  # or std=0.02 in transformer models")
        # An embedding's scale is the input's scale: N(0, 1), 0.02, uniform(+-0.1) are all usual.
        ok = 0.005 <= stats.std <= 2.0
        return ScaleAssessment(exp, names, stats.std, "embedding" if ok else None, matches)
    exp = expected(Activation("tanh") if recurrent and act is None else act, param.fan_in,
                   param.group_fan_out) if not unknown_act else None
    ratio = stats.std / exp.std if exp else None
    accepted = None
    fit = next((m for m in matches if fits_activation(m, exp and act)), None) if exp else None
    if fit is not None:
        accepted = fit.label
    elif ratio is not None and 1 / tolerance <= ratio <= tolerance:
        accepted = exp.scheme
    elif param.is_output and "torch-default" in names:
        accepted = "torch-default"  # a head's scale does not compound; PyTorch's default head
    elif ratio is not None and param.is_output and fit is None and any(
            m.scheme in ("xavier", "he", "he-fan-out", "lecun", "orthogonal") for m in matches) \
            and 1 / tolerance**2 <= ratio <= tolerance**2:
        accepted = matches[0].label  # a head's scale does not compound: any scheme within 1.44x
    elif recurrent and ("orthogonal" in names or "torch-default" in names):
        accepted = names[0]
    elif unknown_act:  # activation unknown: any known scheme is a plausible choice
        accepted = next((m.label for m in matches if m.scheme != "transformer-0.02" or m.std < 0.02), None)
    convention = None
    if accepted is None and fixed_std is not None:
        convention = f"fixed-std {fixed_std:.3g}"
    elif accepted is None and "transformer-0.02" in names and family == "transformer":
        convention = "transformer-0.02"
    if convention and not names[0].startswith("transformer") and "transformer-0.02" not in names:
        names = ["fixed-std"] + [n for n in names if n != "none"]
    return ScaleAssessment(exp, names, ratio, accepted, matches, convention)


def fixed_std_conventions(weights, stats, rel: float = 0.1) -> dict[str, float]:
    """Layers drawn at one std shared by layers of different fans (normal(0.02) of Hugging Face
    ``initializer_range``, timm's trunc_normal(0.02), VGG's N(0, 0.01) linears): a std that no
    fan-dependent scheme gives twice. Returns param name -> the shared std, for groups of at
    least two layers whose stds agree within ``rel`` (plus the sampling error) and that no
    fan-dependent scheme gives agreeing stds (:func:`_fans_explain`)."""
    rows = [(p, stats(p.name)) for p in weights if p.fan_in and p.kind.value in
            ("linear", "conv", "conv-transpose", "attention")]
    rows = [(p, s) for p, s in rows if s.std > 0 and math.isfinite(s.std)]
    rows.sort(key=lambda r: r[1].std)
    out: dict[str, float] = {}
    i = 0
    while i < len(rows):
        j = i
        base = rows[i][1].std
        while j + 1 < len(rows) and rows[j + 1][1].std <= base * (1 + rel + 3 / math.sqrt(2 * rows[j + 1][1].numel)):
            j += 1
        group = rows[i:j + 1]
        if len(group) >= 2 and not _fans_explain([p for p, _ in group], rel):
            shared = math.exp(sum(math.log(s.std) for _, s in group) / len(group))
            out.update({p.name: shared for p, _ in group})
        i = j + 1
    return out


def _fans_explain(params, rel: float) -> bool:
    """Whether one fan of every layer in ``params`` lies within (1 + 2 rel)^2 of the others, so
    that a 1 / sqrt(fan) scheme gives them agreeing stds: the true fan_in (the Nature DQN's 512
    and 576 at PyTorch's default), the fans torch's shape rule reads (a ConvTranspose2d(32, 16,
    3) drawn at the fan_in 144 of the Conv2d(16, 32, 3) it mirrors) or fan_out (torchvision's He
    fan-out). Not the sum of the two: layers of alternating widths (64 -> 128 -> 64) share it, and
    a 0.02 drawn there is still a std shared across fans."""
    fans = (lambda p: p.fan_in, lambda p: p.init_fan_in or p.fan_in, lambda p: p.fan_out,
            lambda p: p.init_fan_out or p.fan_out)
    for fan in fans:
        values = [fan(p) for p in params]
        if all(values) and math.sqrt(max(values) / min(values)) <= 1 + 2 * rel:
            return True
    return False
