"""Static (mean-field) prediction of signal spread and input correlation through depth.

Every node of the dataflow carries a :class:`Moments` record of the signal over units and
inputs (Poole et al. 2016; Schoenholz et al. 2017, with means carried explicitly):

- ``mean``: the grand mean m of the elements;
- ``common``: the variance over inputs of a per-input mode shared by all units (a weight matrix
  with mean mu adds mu * sum_j phi_j(x) to every unit: the same for all units, not for all inputs);
- ``unit``: the variance v of the unit-specific part;
- ``distinct``: the fraction d = 1 - c of ``unit`` that differs between two inputs (c is the
  correlation of two inputs' unit-specific parts; d = 1 for independent inputs, d -> 0 in the
  ordered phase, where different inputs become indistinguishable).

A weight layer with n = fan_in inputs, weights of mean mu and variance sigma^2 and a bias b maps
an input signal phi (grand mean E[phi], common mode a) to

    mean'   = mu * n * E[phi] + E[b]
    common' = mu^2 * (n^2 * common_phi + n * v_phi * d_phi)
    unit'   = n * sigma^2 * E[phi^2] + Var(b)
    unit' * d' = n * sigma^2 * (common_phi + v_phi * d_phi)

so the second moment is q = (mu n E[phi] + E[b])^2 + n sigma^2 E[phi^2] + Var(b) (+ common).
An activation's moments are integrated under the Gaussian pre-activation N(a + m, v) by
Gauss-Hermite quadrature; its distinct part is (1/2) E[(phi(s + t) - phi(s - t))^2] with
s ~ N(m, v (1 - d/2)), t ~ N(0, v d / 2) (for d -> 0 this is v d E[phi'(s)^2]: Schoenholz's
chi_1). Gated products x * y of independent branches: E[(xy)^2] = E[x^2] E[y^2] (SwiGLU:
E[silu(g)^2] E[u^2]); a gate computed from the signal it scales (x * sigmoid(g(x)), see
graph.merge_trunks) continues that signal's segment one step deeper. ``cat`` mixes its branches; average pooling over k elements keeps the part
common to all inputs and divides the distinct part by k; max pooling takes the moments of the
maximum of k draws (order-statistic density k F^(k-1) f); attention averages its value input
over the tokens (``attrs["tokens"]``, harmonic for causal masks); a residual ``add`` sums the
branch moments, means included (``relu(bn(x) + x)`` sees a non-zero-mean input). LayerNorm and
RMSNorm reset the spread to E[gamma^2] + Var(beta) and keep d; batch-statistics norms remove the
part common to all inputs (d' = 1). An ``unknown`` op makes everything after it unknown until a
normalisation or an embedding resets the signal; the profile says so (``unknown_after``).
Inputs are assumed standardised and independent (mean 0, variance 1, d = 1), and so is the
input of a layer the capture could not trace back (a segment of its own). A layer's reported
ratio leaves its own bias out, as the probe's measured spread does.
A segment that starts from a constant signal (an all-zero table or norm scale: spread 0) has
no reference: its ratios are nan, not judged (x / 0).

Finite width (``_energy_fluctuation``): a dense layer of fan_in n reads the energy
(1/n) sum_i phi_i^2 of one input, an average over n units, which fluctuates around E[phi^2] with
relative variance (K - 1) / n (K = E[phi^4] / E[phi^2]^2; 2 / n for the standardised input, a
chi-square). The part two inputs do not share is carried through the mixture over inputs (a
three-point Gamma rule per component), so where the map q -> f(q) is convex the batch's spread
is E[f(q)] ~ f(q) + f''(q) Var(q) / 2 above mean field; the shared part moves the whole batch
and is taken at its median. n -> infinity gives the mean-field map.

The weights in hand (:mod:`initaudit.unitwise`): the shared part is no noise but the draw, so
where a dense chain starts at the input and its weights are at hand (``predict(weights=...)``),
its layers' spread is carried unit by unit, M' = W E[phi] + b and V' = (W o W) Var[phi], and
the per-tensor moments serve every other layer (and the correlation map).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch

from initaudit import unitwise
from initaudit.analysis import TensorStats
from initaudit.graph import ModelGraph, Node, OpKind, ParamRole, input_prefix, merge_trunks, side_branch_nodes
from initaudit.quadrature import activation_numpy, gamma_rule
from initaudit.signal_moments import (Moments, activation_moments, average, max_moments, mixture, product,
                                      residual_sum, weighted)

_GH2_X, _GH2_W = np.polynomial.hermite_e.hermegauss(20)  # per axis of two-dimensional integrals
_GH2_W = _GH2_W / _GH2_W.sum()


@dataclass
class LayerSignal:
    param: str
    layer: str
    predicted_std: float  # std of this layer's pre-activation output (nan when unknown)
    # spread without the layer's own bias / std where the segment started (input, embedding, norm)
    ratio: float
    depth: int  # weight layers since the segment started
    origin: str  # where the segment started
    predicted_mean: float = 0.0
    # sqrt(d_l / d_start): the spread that differs between inputs, relative to the segment start
    distinct_ratio: float = 1.0
    correlation: float = 0.0  # predicted correlation between two inputs' pre-activations
    unknown_after: str | None = None  # the unknown op the prediction could not see through
    # the layer's output reaches the model's output only through a residual branch, a gate or
    # attention scores (graph.side_branch_nodes): small there is a start by design
    side_branch: bool = False
    # std, ratio and mean carried unit by unit through the actual weights (initaudit.unitwise)
    per_unit: bool = False
    # constant factors between ``origin`` and the segment's first layer (an embedding times
    # sqrt(d_model)): the ratio is taken from the signal that layer reads, origin's times this
    start_gain: float = 1.0


@dataclass
class _State:
    m: Moments
    origin_var: float
    origin_distinct: float
    depth: int
    origin: str
    unknown: str | None = None  # op name when the signal passed an unknown op
    bias_var: float = 0.0  # spread of the last layer's own bias, which carries no signal
    # units drawn independently given the input (a dense layer's output, an elementwise function
    # of one, the standardised input): its per-input energy fluctuates at finite width
    fluct: bool = False
    # the signal unit by unit (initaudit.unitwise) on a dense chain from the input whose
    # weights are at hand; width 0: the standardised input, its width read at the first layer
    unit: unitwise.UnitMoments | None = None
    start_gain: float = 1.0  # LayerSignal.start_gain


def _stat_moments(stats: TensorStats | None) -> tuple[float, float]:
    if stats is None:
        return 0.0, 0.0
    if not math.isfinite(stats.std):
        return math.inf, math.inf
    return stats.mean, stats.std**2


def _batch_norm(graph: ModelGraph, node: Node) -> bool:
    op = (node.op or "").lower()
    if "batch" in op or "instance" in op:
        return True
    layers = {graph.params[n].layer for n in node.norm_params if n in graph.params}
    return any(p.role is ParamRole.RUNNING_VAR and p.layer in layers for p in graph.params.values())


def _norm(graph: ModelGraph, node: Node, x: Moments, stats) -> Moments:
    roles = {n: graph.params[n].role for n in node.norm_params if n in graph.params}
    scale = next((n for n, r in roles.items() if r is ParamRole.NORM_SCALE), None)
    shift = next((n for n, r in roles.items() if r is ParamRole.NORM_SHIFT), None)
    gm, gv = _stat_moments(stats(scale)) if scale else (1.0, 0.0)
    gm += float(node.attrs.get("offset", 0.0))  # x * (1 + w) parametrisations
    bm, bv = _stat_moments(stats(shift)) if shift else (0.0, 0.0)
    g2 = gm * gm + gv
    if "rms" in (node.op or "").lower() and x.second > 0:  # no centring: x / rms(x)
        f = g2 / x.second
        unit = f * x.unit + bv
        r = gm / math.sqrt(x.second)
        return Moments(x.w, tuple(r * np.asarray(x.a) + bm), tuple(f * np.asarray(x.v) + bv),
                       f * x.unit * x.distinct / unit if unit > 0 else 0.0)
    if _batch_norm(graph, node):
        # per unit over the batch: the per-unit offsets shared by all inputs are removed; the
        # per-input common mode and the distinct part are scaled to unit variance together
        tot = x.distinct_var
        cf = x.common / tot if tot > 0 else 0.0
        unit = g2 * (1 - cf) + bv
        return Moments.gaussian(bm, unit, g2 * cf, g2 * (1 - cf) / unit if unit > 0 else 0.0)
    # LayerNorm / GroupNorm: per input over units: the common mode and the grand mean go
    unit = g2 + bv
    return Moments.gaussian(bm, unit, 0.0, g2 * x.distinct / unit if unit > 0 else 0.0)


def _tokens_effective(node: Node) -> float | None:
    t = node.attrs.get("tokens")
    if not t:
        return None
    t = int(t)
    if node.attrs.get("causal"):  # position i averages over i + 1 tokens: E[1/(i+1)] = H_T / T
        return t / sum(1.0 / i for i in range(1, t + 1))
    return float(t)


def predict(graph: ModelGraph, stats: Callable[[str], TensorStats],
            weights: Callable[[str], torch.Tensor | None] | None = None) -> list[LayerSignal]:
    """Predicted pre-activation moments of each weight layer, in forward order. With ``weights``
    (a tensor by name, None where it is not at hand) a dense chain from the input is carried unit
    by unit through its actual weights (:mod:`initaudit.unitwise`), up to
    ``unitwise.UNITWISE_MAX_ELEMENTS`` weight elements; elsewhere the per-tensor moments."""
    state: dict[str, _State] = {}
    budget = [unitwise.UNITWISE_MAX_ELEMENTS if weights is not None else 0]
    profile: list[LayerSignal] = []
    params = graph.params
    trunks = merge_trunks(graph.nodes)
    side = side_branch_nodes(graph.nodes)

    def pstats(name: str | None) -> TensorStats | None:
        return stats(name) if name and name in params else None

    prefix = {n.name for n in input_prefix(graph.nodes)}

    def fresh(m: Moments, origin: str) -> _State:
        return _State(m, m.var, m.distinct_var / m.var if m.var > 0 else 1.0, 0, origin)

    for node in graph.nodes:
        ins = [state[i] for i in node.inputs if i in state]
        if ins:
            first = ins[0]
        elif node.kind == "layer" and not node.inputs:
            # the capture did not trace what feeds it (a table computed from an input by ops it
            # does not record, e.g. a sinusoidal timestep embedding): a segment of its own,
            # from an assumed standardised input that no probe site observed
            first = fresh(Moments(), f"{node.name} (untraced input)")
        else:
            first = replace(fresh(Moments(), "input"), fluct=True)
        kind = node.kind
        if kind == "input":  # one the probe does not read as "the input" starts a segment of its own
            origin = node.name if node.attrs.get("own_segment") else "input"
            state[node.name] = replace(fresh(Moments(), origin), fluct=True, unit=unitwise.STANDARD)
        elif node.param and node.param not in params:  # not analysable (e.g. not in checkpoint)
            state[node.name] = replace(first, unit=None)
        elif kind == "embedding" and node.param:
            mean, var = _stat_moments(stats(node.param))
            state[node.name] = fresh(Moments.gaussian(mean, var), node.name)
        elif kind == "layer" and node.param:
            p = params[node.param]
            if p.kind in (OpKind.RECURRENT_INPUT, OpKind.RECURRENT_HIDDEN) or not p.fan_in:
                state[node.name] = replace(first, unknown=first.unknown or p.op, unit=None)
                continue
            dense = p.kind in (OpKind.LINEAR, OpKind.ATTENTION)
            st = _layer(first, p.fan_in, stats(node.param), pstats(node.bias),
                        p.fan_out if dense else None)
            st.unit = unitwise.chain_layer(first.unit, p, node.param, node.bias, weights, budget)
            state[node.name] = st
            profile.append(replace(_signal(node.param, p.layer, st), side_branch=node.name in side))
        elif kind == "act" and node.activation:
            x = first.m
            try:
                m = activation_moments(node.activation, x) if x.finite else x
            except KeyError:  # an activation nothing can integrate
                state[node.name] = replace(first, unknown=first.unknown or str(node.activation), unit=None)
                continue
            unit = first.unit
            if unit is not None and unit.width:
                unit = unitwise.activation(node.activation, unit)
            state[node.name] = replace(first, m=m, unit=unit)
        elif kind == "norm":
            m = _norm(graph, node, first.m, pstats)
            state[node.name] = fresh(m, node.name)
        elif kind == "add" and ins:
            # The dominant path (usually the skip connection) carries the segment on.
            main = max(ins, key=lambda s: s.m.var if math.isfinite(s.m.var) else math.inf)
            m = residual_sum([s.m for s in ins])
            state[node.name] = replace(main, m=m, unknown=next((s.unknown for s in ins if s.unknown), None),
                                       fluct=False)
        elif kind == "mul" and ins:
            ms = [s.m for s in ins]
            if node.param and node.param in params:
                gm, gv = _stat_moments(stats(node.param))
                gm += float(node.attrs.get("offset", 0.0))
                ms.append(Moments.gaussian(gm, gv, 0.0, 0.0))
            if "scale" in node.attrs and node.name not in prefix:
                # before the first layer a constant (x / 255) is the data's own scale: the
                # unit-variance input stands where the first layer reads it (probe.profile.input_gain)
                s = float(node.attrs["scale"])
                ms.append(Moments.gaussian(s, 0.0, 0.0, 0.0))
            unknown = next((s.unknown for s in ins if s.unknown), None)
            m = product(ms)
            if "shift" in node.attrs:  # c - x (graph.constant_sub): the mean moves by c
                m = replace(m, a=tuple(x + float(node.attrs["shift"]) for x in m.a))
            if "scale" in node.attrs and len(ins) == 1 and not node.param and first.depth == 0 \
                    and node.name not in prefix and first.origin_var > 0:
                # a constant before the segment's first layer (Vaswani's, Gemma's, fairseq's
                # embedding times sqrt(d_model)) sets the scale of what that layer reads, by
                # design: the segment's reference moves with it
                s = abs(float(node.attrs["scale"]))
                state[node.name] = replace(first, m=m, origin_var=first.origin_var * s * s,
                                           start_gain=first.start_gain * s, unknown=unknown, fluct=False)
            elif trunks.get(node.name) in state:  # a gate scales the trunk: one more step on the trunk's segment
                main = state[trunks[node.name]]
                state[node.name] = replace(main, m=m, depth=main.depth + 1, unknown=unknown, fluct=False)
            else:
                main = max(ins, key=lambda s: s.depth)
                state[node.name] = replace(main, m=m, unknown=unknown, fluct=False)
        elif kind == "cat" and ins:
            sizes = node.attrs.get("sizes") or [1.0] * len(ins)
            main = max(ins, key=lambda s: s.depth)
            state[node.name] = replace(main, m=weighted([s.m for s in ins], list(sizes)[:len(ins)]), fluct=False)
        elif kind in ("pool-avg", "pool-max"):
            k = node.attrs.get("window")
            if not k:
                state[node.name] = replace(first, unknown=first.unknown or f"{kind} (window unknown)")
            elif kind == "pool-avg":
                state[node.name] = replace(first, m=average(first.m, float(k)), fluct=False)
            else:
                state[node.name] = replace(first, m=max_moments(first.m, int(k)) if first.m.finite else first.m,
                                           fluct=False)
        elif kind == "attention" and ins:
            v = ins[-1]
            t = _tokens_effective(node)
            if t is None:
                state[node.name] = replace(v, unknown=v.unknown or "attention (tokens unknown)")
            else:
                state[node.name] = replace(v, m=average(v.m, t), fluct=False)
        elif kind == "unknown":
            state[node.name] = replace(first, unknown=first.unknown or node.op or node.name)
        else:  # transparent, output, other (a known op with no modelled effect)
            state[node.name] = first
        if kind not in ("act", "transparent", "layer", "input") and state[node.name].unit is not None:
            state[node.name] = replace(state[node.name], unit=None)  # the chain ends here
    return profile



def _energy_statistics(x: Moments) -> tuple[np.ndarray, np.ndarray]:
    """Per component k, for the units of one input, phi(h) with h ~ N(a_k, v_k) (phi the identity
    when the signal is no activation):

        K_k - 1 = Var(phi^2) / E[phi^2]^2,   r_k = Cov(phi(h)^2, phi(h')^2) / Var(phi^2)

    where h and h' are one unit's pre-activations for two inputs, which share the part
    v_k (1 - d) of the variance (d the distinct fraction): h = a + s + t, h' = a + s + t', s ~
    N(0, v (1 - d)), t, t' ~ N(0, v d); r = (1 - d)^2 for Gaussian units, 0 for independent inputs.
    Two-dimensional Gauss-Hermite quadrature over (s, t)."""
    if x.act is not None and x.pre is not None:
        pre, phi = x.pre, activation_numpy(x.act)
    else:
        pre, phi = x, (lambda h: h)
    a, v = np.asarray(pre.a), np.maximum(pre.v, 0.0)
    d = min(max(pre.distinct, 0.0), 1.0)
    h = (a[:, None, None] + np.sqrt(v * (1 - d))[:, None, None] * _GH2_X[None, :, None]
         + np.sqrt(v * d)[:, None, None] * _GH2_X[None, None, :])
    y = phi(h) ** 2  # (K, s, t)
    g = y @ _GH2_W  # E_t[phi^2 | s]
    m2 = g @ _GH2_W
    with np.errstate(all="ignore"):  # m2 * m2 underflows for a collapsed signal
        var = np.maximum(((y * y) @ _GH2_W) @ _GH2_W - m2 * m2, 0.0)
        cov = np.maximum((g * g) @ _GH2_W - m2 * m2, 0.0)
        k1 = var / (m2 * m2)
        r = np.where(var > 0, np.minimum(cov / var, 1.0), 1.0)
    ok = np.isfinite(k1) & (m2 > 0)
    return np.where(ok, k1, 2.0), np.where(ok & np.isfinite(r), r, 1.0)


def _energy_fluctuation(x: _State, n: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Finite width: the per-input energy P = (1/n) sum_i phi_i^2 that a dense layer of fan_in n
    reads averages n units drawn given that input's pre-activation variance, so it fluctuates
    around E[phi^2] with relative variance eps_k = (K_k - 1) / n (:func:`_energy_statistics`),
    and the next pre-activation variance s' = n sigma^2 P inherits it. Each input follows a
    Markov chain with E[s' | s] = f(s), the mean-field map, so E[f(s)] ~ f(s) + f''(s) Var(s) / 2:
    above mean field where f is convex (GELU and SiLU at He gain, whose map contracts q ever
    faster as q shrinks). Two inputs share the fraction r_k of the fluctuation (the same weights
    act on both):

    - the independent part (1 - r_k) eps_k averages over a batch: each component is split by a
      three-point Gauss rule for Gamma(1 / eps, eps) and carried through later layers;
    - the shared part r_k eps_k moves the whole batch together, which then sees its median: a
      factor exp(-r_k eps_k / 2) on the energy (E[log X] = -Var(X) / 2).

    Returns flat arrays over the split components: weights, independent factors, index of the
    parent component, shared factor. n -> infinity gives the mean-field map. Only a signal whose
    units are drawn independently given the input (a dense layer's output, an activation of
    one, the standardised input) fluctuates so; after a norm, pool, sum or product it is left
    as it is."""
    pw = np.asarray(x.m.w)
    idx = np.arange(len(pw))
    if not x.fluct or n < 1:
        return pw, np.ones(len(pw)), idx, np.ones(len(pw))
    k1, r = _energy_statistics(x.m)
    eps = k1 / n
    shared = np.exp(-r * eps / 2)
    ind = (1 - r) * eps
    split = ind > 1e-6  # below a 0.1% relative std the split changes nothing
    nodes, weights = gamma_rule(np.where(split, ind, 0.5))
    nodes[~split], weights[~split] = 1.0, np.array([0.0, 1.0, 0.0])
    keep = weights.ravel() > 0
    src = np.repeat(idx, 3)[keep]
    return (pw[:, None] * weights).ravel()[keep], nodes.ravel()[keep], src, shared[src]


def _layer(x: _State, fan_in: float, w: TensorStats, b: TensorStats | None,
           units: int | None = None) -> _State:
    """One weight layer (module docstring), with the per-input fluctuation of the energy it
    reads at finite width (:func:`_energy_fluctuation`, dense layers only: ``units`` given)."""
    mu, var = _stat_moments(w)
    bm, bv = _stat_moments(b)
    phi = x.m
    n = float(fan_in)
    # a convolution's sites overlap and share their inputs: only the standardised input's
    # chi-square is modelled for it
    pw, factor, src, shared = _energy_fluctuation(x if units or x.depth == 0 else replace(x, fluct=False), n)
    pa, pv = np.asarray(phi.a)[src], np.asarray(phi.v)[src]
    # what the rows' sums carry of the part shared by a row's inputs (mean, common mode):
    # n sigma^2 for i.i.d. rows, none for rows that sum to zero (weight standardisation)
    rs = w.row_sums if w is not None and math.isfinite(w.row_sums) else 1.0
    with np.errstate(all="ignore"):
        a = mu * n * pa + bm
        v = n * var * (pv + rs * pa * pa) * factor * shared + bv
        # mu * sum_j phi_j is the same for every unit; its input-dependent part spreads inputs
        spread = mu * mu * n * pv * phi.distinct
        unit = float(np.dot(pw, v))
        dist = n * var * (rs * phi.common + phi.unit * phi.distinct)
        d = min(dist / unit, 1.0) if unit > 0 and math.isfinite(unit) else 0.0
        m = mixture(pw, a, v, spread, d)
    own = bv if math.isfinite(bv) else 0.0
    return _State(m, x.origin_var, x.origin_distinct, x.depth + 1, x.origin, x.unknown, own,
                  fluct=units is not None, start_gain=x.start_gain)


def _signal(param: str, layer: str, st: _State) -> LayerSignal:
    m = st.m
    if st.unknown:
        return LayerSignal(param, layer, math.nan, math.nan, st.depth, st.origin, math.nan,
                           math.nan, math.nan, st.unknown)
    var = m.var
    std = math.sqrt(var) if math.isfinite(var) and var >= 0 else math.inf
    if st.origin_var == 0:  # a constant start (an all-zero table or norm scale): no reference, x / 0
        return LayerSignal(param, layer, std, math.nan, st.depth, st.origin, m.mean, math.nan, math.nan)
    if math.isfinite(var):
        # the layer's own bias taken off, as the probe measures it: a collapsed layer with
        # random biases (torch's default at a small fan_in) is not alive
        ratio = math.sqrt(max(var - st.bias_var, 0.0) / st.origin_var)
    else:
        ratio = math.inf if var > 0 else math.nan
    frac = m.distinct_var / var if var > 0 and math.isfinite(var) else 1.0
    d0 = st.origin_distinct
    distinct_ratio = math.sqrt(frac / d0) if d0 > 0 else 1.0
    corr = 1.0 - frac
    mean, per_unit = m.mean, st.unit is not None and bool(st.unit.width)
    if per_unit:  # the spread through the actual weights
        mean, var = st.unit.spread()
        _, own = st.unit.spread(st.unit.offset)
        std = math.sqrt(var) if math.isfinite(var) else math.inf
        ratio = math.sqrt(own / st.origin_var) if math.isfinite(own) else math.inf
    return LayerSignal(param, layer, std, ratio, st.depth, st.origin, mean, distinct_ratio, corr,
                       per_unit=per_unit, start_gain=st.start_gain)
