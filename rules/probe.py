"""Probe rules: what the weights do to a real batch, forward and backward (IA2xx).

They read ``ctx.probe`` (:class:`initaudit.probe.result.ProbeResult`), filled by the torch or
the ONNX probe, and set ``needs_probe``: the engine skips them when the probe did not run.
Sites are call sites of the forward pass: ``layer`` (a weight layer's output, the
pre-activation of what follows), ``norm``, ``act`` (an activation module's output) and
``output``. Depth profiles take each layer's segment (where it starts: the input, an embedding
or a normalisation, and how many layers it spans) from the static prediction (``ctx.signal``),
so the measured and the predicted figures are compared on the same footing.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from initaudit.graph import OpKind, Param
from initaudit.rule import Finding, Rule, Severity, fmt
from initaudit.rules.structure import depth_severity
from initaudit.lazy import lazy_function
from initaudit.rules.weights import ConstantWeights, _init_fix

if TYPE_CHECKING:
    from initaudit.probe.profile import MeasuredLayer

# the profile module imports torch: load it when a probe rule runs, not when rules are listed
measured_profile = lazy_function("initaudit.probe.profile", "measured_profile")

_REGION = {"tanh": "|x| > 2.65, |tanh| > 0.99, tanh' < 0.02",
           "sigmoid": "|x| > 4.6, sigmoid < 0.01 or > 0.99, sigmoid' < 0.01",
           "hardtanh": "|x| >= 1, derivative exactly 0", "hardsigmoid": "|x| >= 3, derivative exactly 0",
           "softsign": "|x| > 99, |softsign| > 0.99"}


def _probe(ctx):
    probe = ctx.probe
    return probe if probe is not None and getattr(probe, "ran", False) else None


def _param(ctx, site) -> Param | None:
    return ctx.graph.params.get(site.param) if site.param else None


def _is_zero(ctx, p: Param | None) -> bool:
    return p is not None and ctx.analysis(p.name).stats.all_zero


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"


def _where(site) -> str:
    return f" before {site.activation}" if site.kind in ("layer", "norm") and site.activation else (
        f" ({site.activation} output)" if site.kind == "act" and site.activation else "")


class NonFiniteActivations(Rule):
    """NaN or Inf appearing in the forward pass or in the gradients.

    What it checks
    --------------
    Every recorded call site of the probe's forward pass (layer outputs, normalisation and
    activation outputs, the model's outputs) for NaN or +/-Inf, and every parameter's gradient
    from the probe's backward pass. Reports the first site in forward order where non-finite
    values appear (everything after it inherits them) and the parameters whose gradients are
    non-finite while the forward pass was finite.

    Why it matters
    --------------
    Finite weights can still overflow: float32 tops out at 3.4e38, and a signal that grows by a
    factor c per layer reaches it after 38 / log10(c) layers; inf - inf and 0 * inf then give
    NaN. One non-finite activation makes the loss and every gradient non-finite.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for layer in (model[0], model[2], model[4]):
            layer.weight.normal_(std=1e15)
    ```

    Fix
    ---
    ```python
    for layer in (model[0], model[2]):
        torch.nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
    torch.nn.init.xavier_normal_(model[4].weight)
    ```

    Options
    -------
    None.
    """

    code = "IA201"
    name = "nonfinite-activations"
    category = "nonfinite"
    severity = Severity.ERROR
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None:
            return
        bad = [s for s in probe.sites if s.nonfinite]
        if bad:
            first = bad[0]
            total = first.units * first.samples or first.nonfinite
            what = "the probe inputs hold" if first.kind == "input" else f"{first.name}{_where(first)} outputs"
            yield self.finding(
                first.name, f"{what} {first.nonfinite} NaN/Inf of {total} values: the first place they "
                            f"appear in the forward pass ({len(bad) - 1} later site(s) inherit them)",
                evidence={"nonfinite": first.nonfinite, "values": total, "sites_affected": len(bad),
                          "first_site": first.name},
                fix=(_init_fix(p) if (p := _param(ctx, first)) else
                     "find the operation that overflows (log/sqrt/division of a non-positive value, "
                     "fp16 overflow) or the layer whose weights are far too large"))
            return
        for name, g in (probe.grads or {}).items():
            if g.nonfinite:
                yield self.finding(name, f"gradient holds {g.nonfinite} NaN/Inf values although the "
                                         "forward pass is finite",
                                   evidence={"nonfinite": g.nonfinite},
                                   fix="look for an operation with an unbounded derivative at the "
                                       "values it sees (sqrt or pow at 0, log near 0)")


class Saturation(Rule):
    """Pre-activations in the flat region of a bounded activation.

    What it checks
    --------------
    For every sigmoid, tanh, hardtanh, hardsigmoid and softsign, the fraction of its probe
    pre-activations in the flat region:

    - tanh: |x| > atanh(0.99) = 2.65, i.e. |tanh(x)| > 0.99, tanh'(x) < 0.02;
    - sigmoid: |x| > logit(0.99) = 4.6, i.e. sigmoid(x) < 0.01 or > 0.99, sigmoid'(x) < 0.01;
    - hardtanh(-1, 1): |x| >= 1, hardsigmoid: |x| >= 3 (derivative exactly 0 there);
    - softsign: |x| > 99, i.e. |softsign(x)| > 0.99.

    Warns from ``warn_fraction``, an error from ``error_fraction``.

    Why it matters
    --------------
    In the flat region the derivative is ~0: the unit passes almost no gradient and its output
    carries one bit (which side it is on). N(0, 1) weights with fan_in 100 give pre-activations
    of std 10: 79% of them lie beyond 2.65, and the tanh units act as sign functions
    (Glorot & Bengio, 2010). Xavier with gain 5/3 on unit-variance inputs gives a std of 1.67
    and 11% beyond 2.65 in the first layer (less above it): a sound init, below the default
    ``warn_fraction``.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 100), nn.Tanh(), nn.Linear(100, 10))
    for layer in (model[0], model[2]):
        torch.nn.init.normal_(layer.weight, std=1.0)
    ```

    Fix
    ---
    ```python
    for layer in (model[0], model[2]):
        torch.nn.init.xavier_normal_(layer.weight, gain=torch.nn.init.calculate_gain("tanh"))
    ```

    Options
    -------
    warn_fraction (float, default 0.2): saturated fraction from which to warn.
    error_fraction (float, default 0.5): saturated fraction from which the finding is an error.
    """

    code = "IA202"
    name = "saturation"
    category = "saturation"
    severity = Severity.WARNING
    options = {"warn_fraction": 0.2, "error_fraction": 0.5}
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None:
            return
        for s in probe.sites:
            frac = s.saturated_fraction
            if frac is None or frac < self.opts["warn_fraction"]:
                continue
            act = s.activation.name if s.activation else "?"
            p = _param(ctx, s)
            subject = "pre-activations" if s.kind != "act" else "outputs"
            yield self.finding(
                s.name, f"{_pct(frac)} of the {subject}{_where(s)} are in its flat region "
                        f"({_REGION.get(act, 'saturated')}); pre-activation std {fmt(s.std)}"
                if s.kind != "act" else
                f"{_pct(frac)} of the {act} outputs are saturated ({_REGION.get(act, 'saturated')})",
                severity=Severity.ERROR if frac >= self.opts["error_fraction"] else Severity.WARNING,
                evidence={"saturated_fraction": frac, "std": s.std, "mean": s.mean,
                          "activation": act, "samples": s.samples},
                fix=_init_fix(p) if p is not None and p.kind is not OpKind.NORM else
                "scale the layer feeding this activation down (init for the activation's gain) "
                "or normalise before it")


class DeadUnits(Rule):
    """ReLU-family units that output zero for every probe sample.

    What it checks
    --------------
    For every relu, relu6 and hardswish, the fraction of units (features or channels) whose
    pre-activation is at or below the zero region (relu/relu6: x <= 0; hardswish: x <= -3) on
    every one of the probe's samples (batch x positions), read at the layer feeding it.
    Needs ``min_samples`` samples per unit. The finding says whether those units' weights got
    any gradient from the probe's backward pass.

    Why it matters
    --------------
    relu'(x) = 0 for x < 0: a unit that is negative on every input passes no gradient to its
    weights, so nothing moves it back: it is dead for good. Typical causes: a large negative
    bias, a zero-initialised layer with zero bias (relu'(0) = 0 too), or a learning-rate spike.
    Deep ReLU stacks at He initialisation also lose units slowly with depth as inputs become
    correlated (about 20-35% after 20 layers of 100 units): below ``warn_fraction`` that is
    not reported.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.nn.init.constant_(model[0].bias, -5.0)
    ```

    Fix
    ---
    ```python
    torch.nn.init.zeros_(model[0].bias)
    ```

    Options
    -------
    warn_fraction (float, default 0.5): dead fraction from which to warn.
    error_fraction (float, default 0.9): dead fraction from which the finding is an error.
    min_samples (int, default 16): samples per unit needed to call a unit dead.
    """

    code = "IA203"
    name = "dead-units"
    category = "dead-units"
    severity = Severity.WARNING
    options = {"warn_fraction": 0.5, "error_fraction": 0.9, "min_samples": 16}
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None:
            return
        for s in probe.sites:
            frac = s.dead_fraction
            if frac is None or frac < self.opts["warn_fraction"] or s.samples < self.opts["min_samples"]:
                continue
            dead = round(frac * s.units)
            g = (probe.grads or {}).get(s.param) if s.param else None
            tail = ""
            if g is not None and g.received and g.rows == s.units:
                tail = (f"; {g.zero_rows} of their layer's {g.rows} weight rows got exactly zero "
                        "gradient, so they cannot recover" if g.zero_rows >= dead else "")
            yield self.finding(
                s.name, f"{dead} of {s.units} units ({_pct(frac)}){_where(s)} output zero for all "
                        f"{s.samples} probe samples (mean pre-activation {fmt(s.mean)}, std {fmt(s.std)})"
                        + tail,
                severity=Severity.ERROR if frac >= self.opts["error_fraction"] else Severity.WARNING,
                evidence={"dead_fraction": frac, "dead_units": dead, "units": s.units,
                          "samples": s.samples, "mean": s.mean, "std": s.std,
                          "zero_gradient_rows": g.zero_rows if g is not None else None},
                fix="check the bias of the layer feeding it (a negative or zero-with-zero-weights bias "
                    "kills ReLUs); initialise weights with kaiming_normal_(nonlinearity='relu')")


def _activation_profile(ctx, probe) -> list[MeasuredLayer]:
    if not ctx.graph.has_architecture:
        return []
    return [m for m in measured_profile(ctx.signal, probe) if m.ratio is not None]


class _ActivationDepthRule(Rule):
    direction = ""
    applies_when_trained = False
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None:
            return
        vanishing = self.direction == "vanishing"
        # Zero weights are IA102's subject; a residual branch's last layer is small by design,
        # and so may an output head be (small logits are a uniform start, like a zero head).
        params = ctx.graph.params
        profile = [m for m in _activation_profile(ctx, probe)
                   if m.signal.depth >= self.opts["min_depth"] and not _is_zero(ctx, params[m.signal.param])
                   and not (vanishing and (params[m.signal.param].residual_end
                                           or params[m.signal.param].is_output))]
        if not profile:
            return
        worst = (min if vanishing else max)(profile, key=lambda m: m.ratio)
        r, sig = worst.ratio, worst.signal
        severity = depth_severity(r, vanishing, self.opts)
        if severity is None:
            return
        start = "the input" if sig.origin == "input" else sig.origin
        verb = "falls" if vanishing else "grows"
        yield self.finding(
            worst.site.name,
            f"measured activation spread {verb} to {fmt(r)}x its value at {start} after {sig.depth} "
            f"layers (std {fmt(worst.site.spread)}; static prediction {fmt(sig.ratio)}x)",
            severity=severity,
            evidence={"ratio": r, "depth": sig.depth, "std": worst.site.spread,
                      "predicted_ratio": sig.ratio, "origin": sig.origin, "param": sig.param,
                      "profile": [[m.site.name, m.ratio] for m in profile][:64]},
            fix=_init_fix(params[sig.param]) + "  # and the layers before it, for their activations")


class ActivationVanishing(_ActivationDepthRule):
    """Measured activation spread collapsing through depth.

    What it checks
    --------------
    The spread of each weight layer's output on the probe batch (its std over units and
    samples, with the layer's own bias taken off: a bias moves units apart without carrying any
    signal, so a collapsed layer with random biases would otherwise look alive) divided by the
    spread where its segment starts - the input, an embedding or a normalisation, as in IA109 -
    once the segment spans ``min_depth`` layers. Reports the deepest collapse. Residual branch
    ends and output heads (small by design: a small or zero head starts from uniform logits)
    and all-zero layers (IA102) are not judged.

    Why it matters
    --------------
    A signal that shrinks by a factor per layer leaves the top layers an input-independent
    constant (its bias): N(0, 0.01^2) weights in a 500-wide tanh stack multiply the std by
    0.01 * sqrt(500) = 0.22 per layer, 3e-7 after 10 layers. Backpropagated gradients shrink
    the same way, and in fp16 the signal underflows. Xavier before ReLU halves the variance
    per layer: 0.7x per layer, 4% after 10.

    Example
    -------
    ```python
    layers = []
    for _ in range(10):
        layers += [nn.Linear(500, 500), nn.Tanh()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.01)
            torch.nn.init.zeros_(m.bias)
    ```

    Fix
    ---
    ```python
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_normal_(m.weight, gain=torch.nn.init.calculate_gain("tanh"))
    ```

    Options
    -------
    warn_ratio (float, default 0.2): measured spread ratio below which to warn.
    error_ratio (float, default 0.01): ratio below which the finding is an error.
    min_depth (int, default 2): layers a segment must span before it is judged.
    """

    code = "IA204"
    name = "activation-vanishing"
    category = "vanishing"
    severity = Severity.WARNING
    options = {"warn_ratio": 0.2, "error_ratio": 0.01, "min_depth": 2}
    direction = "vanishing"


class ActivationExploding(_ActivationDepthRule):
    """Measured activation spread growing through depth.

    What it checks
    --------------
    The same measured ratio as IA204 (std of a layer's output on the probe batch, its own bias
    taken off, over the spread where its segment starts), reporting the largest growth over a segment of
    ``min_depth`` layers or more.

    Why it matters
    --------------
    N(0, 1) weights in a 100-wide ReLU stack multiply the std by sqrt(100 / 2) = 7 per layer:
    five layers give 1.7e4x, bounded units downstream saturate, fp16 overflows (65504) and the
    first gradient step is huge.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 100), nn.ReLU(), nn.Linear(100, 10))
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.normal_(m.weight, std=1.0)
    ```

    Fix
    ---
    ```python
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    ```

    Options
    -------
    warn_ratio (float, default 5.0): measured spread ratio above which to warn.
    error_ratio (float, default 100.0): ratio above which the finding is an error.
    min_depth (int, default 2): layers a segment must span before it is judged.
    """

    code = "IA205"
    name = "activation-exploding"
    category = "exploding"
    severity = Severity.WARNING
    options = {"warn_ratio": 5.0, "error_ratio": 100.0, "min_depth": 2}
    direction = "exploding"


def _gradient_profile(ctx, probe) -> list[tuple[Param, int, float]]:
    """(param, position, gradient-to-weight ratio) of weight layers in forward order.

    Position = order of the layer's first call in the forward pass. Left out: embeddings (only
    the rows of tokens seen get a gradient), normalisation, parameters with no, zero or
    non-finite gradient (blocked below a zero-initialised layer: IA203/IA208's subject) and
    all-zero weights (ratio undefined).
    """
    first_call: dict[str, int] = {}
    for s in probe.sites:
        if s.kind == "layer" and s.module is not None and s.module not in first_call:
            first_call[s.module] = len(first_call)
    out = []
    for name, g in (probe.grads or {}).items():
        p = ctx.graph.params.get(name)
        if p is None or not p.is_weight or p.kind in (OpKind.EMBEDDING, OpKind.NORM):
            continue
        owners = [p.layer, *(a.rpartition(".")[0] for a in p.aliases)]
        pos = min((first_call[o] for o in owners if o in first_call), default=None)
        if pos is None or not g.received or g.nonfinite or not g.norm > 0 or not g.weight_norm > 0:
            continue
        out.append((p, pos, g.ratio))
    out.sort(key=lambda t: t[1])
    return out


class _GradientDepthRule(Rule):
    direction = ""
    applies_when_trained = False
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None or not probe.grads:
            return
        profile = _gradient_profile(ctx, probe)
        if len(profile) < 2:
            return
        top_p, _, top_ratio = profile[-1]
        # Distance in layers; weights sharing a module (an LSTM's) count as one layer.
        index = {layer: i for i, layer in enumerate(dict.fromkeys(p.layer for p, _, _ in profile))}
        last = len(index) - 1
        judged = [(p, r / top_ratio, last - index[p.layer]) for p, _, r in profile
                  if last - index[p.layer] >= self.opts["min_depth"]]
        if not judged:
            return
        vanishing = self.direction == "vanishing"
        p, rel, distance = (min if vanishing else max)(judged, key=lambda t: t[1])
        severity = depth_severity(rel, vanishing, self.opts)
        if severity is None:
            return
        g = probe.grads[p.name]
        effect = "early layers barely learn" if vanishing else "early layers take far larger steps"
        yield self.finding(
            p.name, f"gradient-to-weight ratio |dL/dW|/|W| = {fmt(g.ratio)} is {fmt(rel)}x that of "
                    f"{top_p.name} ({fmt(top_ratio)}), {distance} layers closer to the output: {effect}",
            severity=severity,
            evidence={"ratio": rel, "grad_norm": g.norm, "weight_norm": g.weight_norm,
                      "reference": top_p.name, "reference_ratio": top_ratio, "loss": probe.loss,
                      "profile": [[q.name, r / top_ratio] for q, _, r in profile][:64]},
            fix="initialise each layer for the activation that follows it; prefer ReLU-family or "
                "tanh with Xavier gain over deep sigmoid stacks; add normalisation or residual paths")


class GradientVanishing(_GradientDepthRule):
    """Gradients collapsing towards the input.

    What it checks
    --------------
    One backward pass of the probe's synthetic loss, L = sum_o <r_o, y_o> / batch over the
    model's outputs y_o with r_o ~ N(0, 1) fixed by the seed (its gradient at every output is
    r_o / batch, whatever the output's value). For every weight layer, in forward order, the
    gradient-to-weight ratio |dL/dW| / |W| (the relative step a gradient update takes),
    divided by that of the layer closest to the output. Reports the smallest, for layers at
    least ``min_depth`` layers below it. Embeddings, normalisation and parameters with no or
    exactly zero gradient (see IA203, IA208) are not judged by the ratio; a weight layer whose
    gradient is exactly zero while its own weights are not, below an all-zero layer that gets no
    gradient either (a zero-initialised layer before ReLU with zero bias), is an error of its
    own: neither ever changes, so it never learns. (A zero head or a zero layer before tanh
    gets a gradient and unblocks the layers below after the first step: not reported.)

    Why it matters
    --------------
    Backpropagation multiplies the error by W^T and by phi'(x) at every layer; sigmoid' <= 0.25,
    so a 10-layer sigmoid stack at Xavier scale hands its first layer about 1e-5 of the last
    layer's relative gradient (Hochreiter, 1991): the first layers do not learn. The ratio
    |dW| / |W| stays flat through depth in healthy networks (He-initialised ReLU, Xavier tanh,
    GPT-2 and ResNet conventions: within about 10x).

    Example
    -------
    ```python
    layers = []
    for _ in range(10):
        layers += [nn.Linear(100, 100), nn.Sigmoid()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_normal_(m.weight)
            torch.nn.init.zeros_(m.bias)
    ```

    Fix
    ---
    ```python
    for i in range(1, len(model), 2):
        model[i] = nn.ReLU()
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    ```

    Options
    -------
    warn_ratio (float, default 0.01): relative gradient-to-weight ratio below which to warn.
    error_ratio (float, default 1e-4): ratio below which the finding is an error.
    min_depth (int, default 2): layers between the judged layer and the reference.
    """

    code = "IA206"
    name = "gradient-vanishing"
    category = "vanishing"
    severity = Severity.WARNING
    options = {"warn_ratio": 0.01, "error_ratio": 1e-4, "min_depth": 2}
    direction = "vanishing"

    def check(self, ctx) -> Iterator[Finding]:
        yield from super().check(ctx)
        probe = _probe(ctx)
        if probe is not None and probe.grads:
            yield from self._blocked(ctx, probe)

    def _blocked(self, ctx, probe) -> Iterator[Finding]:
        """Weights with exactly zero gradient below a layer whose weights are all zero."""
        order = [s.param for s in probe.sites if s.kind == "layer" and s.param]
        order = list(dict.fromkeys(order))
        # all-zero layers that get no gradient themselves stay zero: what they block stays blocked
        # (a zero head or a zero layer before tanh gets a gradient, changes at the first step and
        # unblocks the layers below: legitimate, not reported)
        zero = [n for n in order if n in ctx.graph.params and ctx.analysis(n).stats.all_zero
                and (g := probe.grads.get(n)) is not None and g.received and g.norm == 0]
        for i, name in enumerate(order):
            g, p = probe.grads.get(name), ctx.graph.params.get(name)
            if g is None or p is None or p.kind in (OpKind.EMBEDDING, OpKind.NORM) or name in zero:
                continue
            if not g.received or g.nonfinite or g.norm != 0 or not g.weight_norm > 0:
                continue
            above = next((z for z in zero if order.index(z) > i), None)
            if above is None:  # e.g. a zero input from the layer below: not a blocked backward pass
                continue
            yield self.finding(
                name, f"receives exactly zero gradient: the backward pass is blocked at {above} (all "
                      "zeros, and no gradient of its own), so this layer never learns",
                severity=Severity.ERROR, key="blocked",
                evidence={"grad_norm": 0.0, "weight_norm": g.weight_norm, "blocked_at": above,
                          "loss": probe.loss},
                fix=f"initialise {above} (see IA102's fix)")


class GradientExploding(_GradientDepthRule):
    """Gradients growing towards the input.

    What it checks
    --------------
    The same backward pass and gradient-to-weight ratio |dL/dW| / |W| as IA206, relative to the
    layer closest to the output; reports the largest, for layers at least ``min_depth`` layers
    below it.

    Why it matters
    --------------
    Each layer multiplies the backpropagated error by W^T and phi'(x). With N(0, 1) weights in
    a 100-wide tanh stack the units saturate, but the ones that do not pass the error on
    multiplied by |W| ~ 10: the error grows about 2.5x per layer towards the input, so the first
    layers take steps thousands of times larger (relative to their weights) than the last
    ones, and any learning rate is wrong for one end of the network.

    Example
    -------
    ```python
    layers = []
    for _ in range(10):
        layers += [nn.Linear(100, 100), nn.Tanh()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.normal_(m.weight, std=1.0)
            torch.nn.init.zeros_(m.bias)
    ```

    Fix
    ---
    ```python
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_normal_(m.weight, gain=torch.nn.init.calculate_gain("tanh"))
    ```

    Options
    -------
    warn_ratio (float, default 100.0): relative gradient-to-weight ratio above which to warn.
    error_ratio (float, default 1e4): ratio above which the finding is an error.
    min_depth (int, default 2): layers between the judged layer and the reference.
    """

    code = "IA207"
    name = "gradient-exploding"
    category = "exploding"
    severity = Severity.WARNING
    options = {"warn_ratio": 100.0, "error_ratio": 1e4, "min_depth": 2}
    direction = "exploding"


class IdenticalActivations(Rule):
    """Units that produce identical activations, and whether training can separate them.

    What it checks
    --------------
    At every weight layer's output, units whose values on all probe samples are copies of each
    other (within a relative 1e-5, found by random-projection fingerprints and then checked),
    and, from the probe's backward pass, the gradient rows their weights receive:

    - no gradient at all (every row exactly zero): nothing can ever separate them, an error.
      A zero-initialised hidden layer with zero bias before ReLU: relu'(0) = 0 blocks it;
    - identical gradient rows: every update keeps them copies, an error;
    - distinct gradient rows: the first update breaks the symmetry (a zero-initialised layer
      before tanh: the layer above sends each unit its own error), a warning; info where a
      zero initialisation is legitimate (output head, residual branch end, adaLN-zero).

    Why it matters
    --------------
    Copies add nothing: a layer of k identical units has the capacity of one. Whether it stays
    that way depends on the gradient: tanh'(0) = 1 lets the layer above break the tie, relu'(0)
    = 0 does not, and identical units below identical weights above get identical gradients.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.nn.init.zeros_(model[0].weight)
    torch.nn.init.zeros_(model[0].bias)
    ```

    Fix
    ---
    ```python
    torch.nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    ```

    Options
    -------
    min_fraction (float, default 0.0): fraction of a layer's units that must be copies before
    it is reported.
    """

    code = "IA208"
    name = "identical-activations"
    category = "symmetry"
    severity = Severity.ERROR
    options = {"min_fraction": 0.0}
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None:
            return
        reported = set()
        for s in probe.sites:
            if s.kind != "layer" or not s.identical_units or s.param in reported:
                continue
            if s.identical_units / max(1, s.units) <= self.opts["min_fraction"]:
                continue
            reported.add(s.param)
            p = _param(ctx, s)
            head = (f"{s.identical_units} of {s.units} units{_where(s)} copy another unit's "
                    f"activations on all {s.samples} probe samples ({len(s.identical_groups)} group(s)"
                    + (", constant over the batch" if s.constant_units == s.units else "") + ")")
            g = (probe.grads or {}).get(s.param) if s.param else None
            evidence = {"identical_units": s.identical_units, "units": s.units,
                        "groups": len(s.identical_groups), "example": s.identical_groups[0][:4]}
            fix = _init_fix(p) if p is not None else "re-initialise the layer with independent random rows"
            legit = ConstantWeights._legitimate(p) if p is not None and _is_zero(ctx, p) else None
            if g is None or not g.group_count:  # e.g. ONNX: forward only
                yield self.finding(s.name, head + "; no gradient information to tell whether training "
                                   "separates them" + (f" ({legit})" if legit else ""), evidence=evidence,
                                   fix=None if legit else fix,
                                   severity=Severity.INFO if legit else Severity.WARNING)
                continue
            evidence.update(group_rows=g.group_rows, zero_gradient_rows=g.group_zero_rows,
                            distinct_gradient_rows=g.distinct_rows)
            if g.group_zero_rows == g.group_rows:
                why = (f"; their weights receive no gradient at all (all {g.group_rows} rows exactly 0"
                       + (f": {s.activation}'(x) = 0 where they sit" if s.activation else "")
                       + "), so training can never separate them")
                yield self.finding(s.name, head + why, evidence=evidence, fix=fix)
            elif g.distinct_rows is not None and g.distinct_rows <= g.group_count:
                yield self.finding(s.name, head + "; their weights receive identical gradients, so "
                                   "every update keeps them copies", evidence=evidence, fix=fix)
            else:
                yield self.finding(
                    s.name, head + f"; their gradients differ ({g.distinct_rows} distinct rows among "
                                   f"{g.group_rows}), so the first update breaks the symmetry"
                            + (f" ({legit})" if legit else ""),
                    evidence=evidence, fix=None if legit else fix,
                    severity=Severity.INFO if legit else Severity.WARNING)


class UnusedParameters(Rule):
    """Parameters that receive no gradient from the probe loss.

    What it checks
    --------------
    After the probe's backward pass, every trainable parameter (``requires_grad=True``) whose
    gradient is ``None``: autograd never reached it from the model's outputs - a module that
    is registered but not called in ``forward``, or whose output does not reach the outputs.
    Reported once per owning module. Frozen parameters and parameters that got an exactly zero
    gradient (blocked, not unused: IA203/IA208) are not reported.

    Why it matters
    --------------
    The optimizer will never update them; they cost memory and checkpoint space, and
    DistributedDataParallel fails on them unless ``find_unused_parameters=True`` (which costs
    an extra graph traversal every step). Often the sign of a wiring bug: a layer built but
    forgotten in ``forward``. Layers used only in some modes (an auxiliary head used in
    training only, an MoE expert not routed for this batch) also show up here.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    model[2].projection = nn.Linear(32, 32)  # registered, never called in forward
    ```

    Fix
    ---
    ```python
    del model[2].projection
    ```

    Options
    -------
    None.
    """

    code = "IA209"
    name = "unused-parameters"
    category = "unused"
    severity = Severity.WARNING
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None or probe.grads is None:
            return
        by_module: dict[str, list[str]] = {}
        for name, g in probe.grads.items():
            if not g.received:
                p = ctx.graph.params.get(name)
                by_module.setdefault(p.layer if p is not None else name.rpartition(".")[0], []).append(name)
        for module, names in by_module.items():
            count = sum(ctx.graph.params[n].numel for n in names if n in ctx.graph.params)
            yield self.finding(
                module or names[0], f"{len(names)} parameter(s) ({count:,} values: "
                                    f"{', '.join(n.rpartition('.')[2] for n in names[:4])}"
                                    f"{', ...' if len(names) > 4 else ''}) receive no gradient: "
                                    "not reached from the model's outputs in this forward pass",
                evidence={"params": names, "values": count},
                fix="call the module in forward(), or remove it (or set requires_grad_(False) if it "
                    "is meant to be frozen)")


PROBE_RULES = [NonFiniteActivations, Saturation, DeadUnits, ActivationVanishing, ActivationExploding,
               GradientVanishing, GradientExploding, IdenticalActivations, UnusedParameters]
