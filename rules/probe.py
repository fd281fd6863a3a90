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

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

from initaudit.rules.backward import GradientExploding, GradientVanishing
from initaudit.rules.symmetry import IdenticalActivations
from initaudit.rules.unused import UnusedParameters
from initaudit.rules.probe_common import _is_zero, _param, _pct, _probe, _where
from initaudit.rules.depth import HEAD_NOTE, depth_severity, head_input_shrinks, reset_by_norm, static_text
from initaudit.rules.weights import _init_fix

from initaudit.graph import PASS_THROUGH, OpKind, _weightless_source, renormalised_downstream
from initaudit.roles import renormalised_params
from initaudit.rule import Finding, Rule, Severity, fmt

if TYPE_CHECKING:
    from initaudit.probe.profile import MeasuredLayer

_REGION = {"tanh": "|x| > 2.65, |tanh| > 0.99, tanh' < 0.02",
           "sigmoid": "|x| > 4.6, sigmoid < 0.01 or > 0.99, sigmoid' < 0.01",
           "hardtanh": "|x| >= 1, derivative exactly 0", "hardsigmoid": "|x| >= 3, derivative exactly 0",
           "softsign": "|x| > 99, |softsign| > 0.99"}


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

    Output layers (no learned layer after them) are judged apart: their sigmoid is read by a
    logits loss (BCE, focal) whose gradient p - y no derivative of the sigmoid multiplies, so
    saturation there is over-confidence (a warning at most); and pre-activations at a constant
    offset with a spread below 1 are a prior log-odds the bias sets on purpose,
    b = -log((1 - pi) / pi), pi = 0.01 (RetinaNet, FCOS: Lin et al. 2017), not reported.

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
            fed = _output_layer_sites(ctx, probe, s)
            output = fed is not None
            if output and fed and all(_bias_prior(f) for f in fed):
                continue  # a prior probability set by the bias (focal-loss pi = 0.01): by design
            subject = "pre-activations" if s.kind != "act" else "outputs"
            msg = (f"{_pct(frac)} of the {subject}{_where(s)} are in its flat region "
                   f"({_REGION.get(act, 'saturated')}); pre-activation std {fmt(s.std)}"
                   if s.kind != "act" else
                   f"{_pct(frac)} of the {act} outputs are saturated ({_REGION.get(act, 'saturated')})")
            yield self.finding(
                s.name, msg + (_OUTPUT_NOTE if output else ""),
                severity=Severity.ERROR if frac >= self.opts["error_fraction"] and not output
                else Severity.WARNING,
                evidence={"saturated_fraction": frac, "std": s.std, "mean": s.mean,
                          "activation": act, "samples": s.samples},
                fix=_init_fix(p) if p is not None and p.kind is not OpKind.NORM else
                "scale the layer feeding this activation down (init for the activation's gain) "
                "or normalise before it")


# An output layer's sigmoid/tanh is read by the loss, not by a learned layer: a logits loss
# (BCE or focal with logits) has gradient p - y, which sigmoid' never multiplies.
_OUTPUT_NOTE = (" (an output layer: a logits loss's gradient p - y does not pass through the "
                "activation's derivative, so this is over-confidence, not a gradient block)")


def _output_layer_sites(ctx, probe, site) -> list | None:
    """The probed sites of the output layers (no learned layer after them) whose output this
    activation reads, directly or through reshapes and concatenations (an ONNX export's
    per-level logits flattened and joined before one sigmoid); None unless every layer
    feeding it is an output layer. The list is empty when those layers were not probed."""
    if site.kind == "layer":
        p = _param(ctx, site)
        return [site] if p is not None and p.is_output else None
    nodes = {n.name: n for n in ctx.graph.nodes}
    node = nodes.get(site.module or site.name)
    if node is None:
        return None
    layers, stack, seen = [], list(node.inputs), set()
    while stack:
        n = nodes.get(stack.pop())
        if n is None or n.name in seen:
            continue  # a graph input or constant: carries no layer's output
        seen.add(n.name)
        if n.kind == "layer" and n.param:
            layers.append(n)
        elif n.kind in PASS_THROUGH:
            stack.extend(n.inputs)
        else:
            return None
    if not layers or not all(ctx.graph.params[n.param].is_output for n in layers if n.param in ctx.graph.params):
        return None
    named = {s.name: s for s in probe.sites if s.kind == "layer"}
    return [named[n.name] for n in layers if n.name in named]


def _bias_prior(site) -> bool:
    """Whether the pre-activations sit where a constant bias puts them, spread less than the
    activation's unit width around it: the output bias written as a prior log-odds,
    b = -log((1 - pi) / pi) (pi = 0.01 gives -4.6, Lin et al. 2017, RetinaNet/FCOS). The
    weights' scale saturates nothing there; the prior is the init's stated choice."""
    return site.std < 1.0 and abs(site.mean) > 3.0 * site.std


class DeadUnits(Rule):
    """ReLU-family units that output zero for every probe sample.

    What it checks
    --------------
    For every relu, relu6 and hardswish, the fraction of units (features or channels) whose
    pre-activation is at or below the zero region (relu/relu6: x <= 0; hardswish: x <= -3) on
    every one of the probe's samples (batch x positions), read at the layer feeding it.
    Needs ``min_samples`` samples per unit. The finding says whether those units' weights got
    any gradient from the probe's backward pass. Layers whose segment crosses a BatchNorm an
    exporter folded into a layer (an eval-mode ONNX export with fresh statistics, where it
    computes the identity) are not judged, as in IA204: in training the batch statistics centre
    and rescale what they read, so a unit below zero on every sample of the export says nothing
    about training (StarNet's and S3D's ONNX exports: 52-54% "dead", none in the module).

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
        folded = renormalised_params(ctx.graph)  # in training, batch statistics centre what they read
        for s in probe.sites:
            frac = s.dead_fraction
            if frac is None or frac < self.opts["warn_fraction"] or s.samples < self.opts["min_samples"] \
                    or s.param in folded:
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


def _activation_profile(ctx) -> list[MeasuredLayer]:
    if not ctx.graph.has_architecture:
        return []
    return [m for m in ctx.measured_profile() if m.ratio is not None]


class _ActivationDepthRule(Rule):
    direction = ""
    applies_when_trained = False
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None:
            return
        vanishing = self.direction == "vanishing"
        folded = renormalised_params(ctx.graph)  # segments across a BatchNorm folded by an exporter
        if vanishing:
            yield from self._norms_below_eps(ctx, probe, folded)
        # Zero weights are IA102's subject; residual branches, gates and attention scores are
        # small by design (the trunk carries the signal past them), and so may an output head
        # be (small logits are a uniform start, like a zero head).
        params = ctx.graph.params
        reset = renormalised_downstream(ctx.graph)
        profile = [m for m in _activation_profile(ctx)
                   if m.signal.depth >= self.opts["min_depth"] and not _is_zero(ctx, params[m.signal.param])
                   and m.signal.param not in folded and not _reads_padding(params, probe, m.site)
                   and not (vanishing and (m.signal.side_branch or params[m.signal.param].residual_end
                                           or params[m.signal.param].is_output
                                           or reset_by_norm(params[m.signal.param], m.site.spread, reset)))]
        if not profile:
            return
        head = head_input_shrinks(ctx) if vanishing else {}  # only scales the logits: taken out
        worst = (min if vanishing else max)(profile, key=lambda m: m.ratio / head.get(m.signal.param, 1.0))
        sig = worst.signal
        r = worst.ratio / head.get(sig.param, 1.0)
        severity = depth_severity(r, vanishing, self.opts)
        if severity is None:
            return
        start = "the input" if sig.origin == "input" else sig.origin
        verb = "falls" if vanishing else "grows"
        yield self.finding(
            worst.site.name,
            f"measured activation spread {verb} to {fmt(r)}x its value at {start} after {sig.depth} "
            f"layers (std {fmt(worst.site.spread)}; {static_text(sig.ratio, sig)})"
            + (HEAD_NOTE.format(r=fmt(head[sig.param])) if sig.param in head else ""),
            severity=severity,
            evidence={"ratio": r, "depth": sig.depth, "std": worst.site.spread,
                      "head_input_shrink": head.get(sig.param),
                      "predicted_ratio": sig.ratio, "origin": sig.origin, "param": sig.param,
                      "profile": [[m.site.name, m.ratio] for m in profile][:64]},
            fix=_init_fix(params[sig.param]) + "  # and the layers before it, for their activations")

    def _norms_below_eps(self, ctx, probe, folded_layers: set[str]) -> Iterator[Finding]:
        """Normalisations whose measured output is below ``error_ratio`` of their gain: with
        y = gamma (x - mu) / sqrt(var + eps) + beta, an input with var << eps leaves
        std(y) = rms(gamma) * std(x) / sqrt(eps), so the norm cannot restore the scale and the
        signal reaching it has collapsed (one finding, at the worst norm)."""
        params = ctx.graph.params
        folded = _folded_inputs(ctx.graph, folded_layers)
        starved = []
        for site in probe.sites:
            p = params.get(site.param or "")
            if site.kind != "norm" or p is None or site.nonfinite or site.samples < 2 \
                    or site.constant_units >= site.units > 0 or (site.module or site.name) in folded:
                continue  # an empty call (a mask head with no detections), an exactly constant input
                # (DETR's zero decoder queries), an input a folded BatchNorm would renormalise
            s = ctx.analysis(p.name).stats
            gain = math.hypot(s.mean, s.std)
            if gain < 0.1 or not math.isfinite(gain):
                continue  # a small or (1 + w) scale: IA108's subject
            ratio = site.spread / gain
            if ratio < self.opts["error_ratio"]:
                starved.append((ratio, site, gain))
        if not starved:
            return
        ratio, site, gain = min(starved, key=lambda t: t[0])
        more = f" (and {len(starved) - 1} more normalisation call(s) below the line)" if len(starved) > 1 else ""
        # one starved norm whose output the next norm restores (a tiny embedding before ln0) is a
        # slow start; the same collapse at several norms is a stream that stays below eps
        persists = len(starved) > 1
        yield self.finding(
            site.name,
            f"measured output of this normalisation is {fmt(ratio)}x its gain (std {fmt(site.spread)}, rms "
            f"gamma {fmt(gain)}){more}: its input's variance is far below the norm's eps, so it cannot "
            "restore the scale (std(y) = rms(gamma) std(x) / sqrt(eps)); the signal collapsed before it"
            + ("" if persists else " (at this norm only: the norms after it restore the scale)"),
            severity=Severity.ERROR if persists else Severity.WARNING,
            evidence={"ratio": ratio, "std": site.spread, "gain": gain, "param": site.param,
                      "norms": [[s.name, r] for r, s, _ in starved][:64]},
            fix="re-initialise the layers that feed it (embeddings, patch embeddings, the trunk's "
                "first layers) at their scheme's std, e.g. trunc_normal_(std=0.02) or kaiming_normal_")


def _folded_inputs(graph, folded: set[str]) -> set[str]:
    """Norm nodes whose input comes (through pooling and shape-only ops) from a layer in
    ``folded`` (:func:`initaudit.roles.renormalised_params`: its segment crosses a BatchNorm an
    exporter folded into a layer): in training the batch statistics renormalise that input, so
    its eval-mode scale (fresh statistics: the identity) says nothing."""
    if not folded:
        return set()
    nodes = {n.name: n for n in graph.nodes}
    out = set()
    for node in graph.nodes:
        if node.kind == "norm" and node.inputs and node.inputs[0] in nodes:
            src = nodes[_weightless_source(nodes, node.inputs[0])]
            if src.kind == "layer" and src.param in folded:
                out.add(node.name)
    return out


def _reads_padding(params, probe, site) -> bool:
    """A convolution call whose output map has fewer positions per sample than its kernel has
    taps (an FPN's coarsest level on a small probe image: a 1x1 map under a 3x3 kernel), so
    most taps read zero padding: its spread measures the probe image's size, not the weights
    (the static prediction, IA109, still judges them at full fan-in)."""
    p = params.get(site.param) if site.param else None
    if p is None or len(p.shape) < 3 or not probe.batch_size:
        return False
    return site.samples / probe.batch_size < math.prod(p.shape[2:])


class ActivationVanishing(_ActivationDepthRule):
    """Measured activation spread collapsing through depth.

    What it checks
    --------------
    The spread of each weight layer's output on the probe batch (its std over units and
    samples, with the layer's own bias taken off: a bias moves units apart without carrying any
    signal, so a collapsed layer with random biases would otherwise look alive) divided by the
    spread where its segment starts - the input, an embedding or a normalisation, as in IA109 -
    once the segment spans ``min_depth`` layers. Reports the deepest collapse. Residual branch
    ends and output heads (small by design: a small or zero head starts from uniform logits),
    layers on a side branch of a trunk (inside a residual branch, a squeeze-excite gate, the
    query and key of attention: the trunk carries the signal past them, as in IA109) and
    all-zero layers (IA102) are not judged. A layer of an output head is judged with the head's
    own shrinks r < 1 taken out (ratio / prod r), as in IA109: they only scale the initial
    outputs. A layer whose output a normalisation resets (reached through only layers,
    ReLU-family activations and shape ops) is not judged while its measured std stays >= 0.01,
    far above the norm's eps, as in IA109.
    Layers whose segment crosses a BatchNorm an exporter folded into a layer (an eval-mode
    ONNX export with fresh running statistics, where it computes the identity) are not judged:
    in training the batch statistics renormalise the signal there.
    Nor are convolution calls on a map with fewer positions than the kernel has taps (an
    FPN's coarsest level on a small probe image, 1x1 under 3x3): most taps read padding.
    Also a normalisation whose measured output is below ``error_ratio`` of its gain rms(gamma)
    (gamma >= 0.1; a smaller one is IA108's): its input's variance is far below its eps, so it
    does not restore the scale, std(y) = rms(gamma) std(x) / sqrt(eps) (BLIP's vision tower at
    its config's initializer_range 1e-10: 4e-7 at every LayerNorm). One finding at the worst
    norm: an error where several norms are below the line (the stream stays below eps), a
    warning where one is (the norms after it restore the scale). Not judged: an exactly
    constant input (DETR's zero decoder queries), an empty call, an input from a layer behind
    a BatchNorm an exporter folded; a tiny embedding into a LayerNorm (RWKV's 1e-4: 0.02-0.03 of
    the gain, which the next norm restores) stays above the line.

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


PROBE_RULES = [NonFiniteActivations, Saturation, DeadUnits, ActivationVanishing, ActivationExploding,
               GradientVanishing, GradientExploding, IdenticalActivations, UnusedParameters]
