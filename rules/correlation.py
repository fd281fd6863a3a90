"""Rules on the correlation map: different inputs becoming indistinguishable through depth.

The static rule (IA111) reads the mean-field prediction (:mod:`initaudit.propagation`), the
measured one (IA210) the probe's per-layer correlation between samples
(:func:`initaudit.probe.stats.sample_correlation`). Both judge the spread that differs between
inputs, relative to where the segment starts (the input, an embedding or a normalisation):
sqrt((1 - c_l) / (1 - c_start)).
"""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.roles import renormalised_params

from initaudit.rule import Finding, Rule, Severity, fmt
from initaudit.rules.depth import GUESSED_NOTE, depth_severity, static_text, zero_scale_origins
from initaudit.rules.weights import _init_fix

_FIX = ("initialise each layer for the activation that follows it (IA104's fixes: Xavier before "
        "sigmoid/tanh, He before ReLU), keep biases small, or add normalisation")


def _judged(ctx, param: str, folded: set[str]) -> bool:
    """Not a residual end or an all-zero layer (IA102's), and not measured across a BatchNorm an
    eval-mode export folded into the layers (``folded``: in training its batch statistics
    subtract the mean the samples share, which is what the correlation measures)."""
    p = ctx.graph.params[param]
    return not (p.residual_end or param in folded or ctx.analysis(param).stats.all_zero)


def measured_distinct(ctx) -> list[tuple]:
    """(measured layer, D, c) for every static entry whose call site and segment start the probe
    measured: c the mean correlation between two samples' activations there, D =
    sqrt((1 - c) / (1 - c0)) against its start's c0. Empty without a probe."""
    probe = ctx.probe
    if probe is None or not getattr(probe, "ran", False) or not ctx.graph.has_architecture:
        return []
    rows = []
    for m in ctx.measured_profile():
        c, c0 = m.site.correlation, m.origin.correlation if m.origin else None
        if c is None or c0 is None or c0 >= 1:
            continue
        rows.append((m, max(1 - c, 0.0) ** 0.5 / (1 - c0) ** 0.5, c))
    return rows


def _after_constant(ctx) -> set[tuple[str, int]]:
    """(origin, depth) of layers downstream of a constant layer in their segment: inputs merge
    there because of that layer, which IA102 reports."""
    first: dict[str, int] = {}
    for s in ctx.signal:
        st = ctx.analysis(s.param).stats
        if st.numel > 1 and st.max == st.min:
            first[s.origin] = min(first.get(s.origin, s.depth), s.depth)
    zero = zero_scale_origins(ctx)  # a zero-gamma norm's output is constant: the same reason
    return {(s.origin, s.depth) for s in ctx.signal
            if s.origin in zero or (s.origin in first and s.depth >= first[s.origin])}


class PredictedCorrelationCollapse(Rule):
    """Different inputs predicted to become indistinguishable through depth (ordered phase).

    What it checks
    --------------
    The correlation map of mean-field theory (Poole et al. 2016; Schoenholz et al. 2017),
    with means: two inputs whose pre-activations h_a, h_b have correlation c over the units
    give the next layer

        q' c' = n sigma_w^2 E[phi(h_a) phi(h_b)] + sigma_b^2,   (h_a, h_b) ~ N(m, q [[1, c], [c, 1]])

    and the spread that differs between them, q (1 - c), is multiplied per layer by
    n sigma_w^2 E[(phi(h_a) - phi(h_b))^2] / (2 q (1 - c)), which tends to
    chi_1 = n sigma_w^2 E[phi'(h)^2] as c -> 1. chi_1 < 1 is the ordered phase: c -> 1 and
    every input maps to the same output. Integrated by Gauss-Hermite quadrature for the actual
    activation (sigmoid's mean 0.5 alone puts a Xavier sigmoid stack there). Reports the
    deepest collapse of D = sqrt((1 - c_l) / (1 - c_start)) along a segment (from the input, an
    embedding or a normalisation, with independent inputs c_start = 0), graded a warning below
    ``warn_ratio`` and an error below ``error_ratio``; at most info when the dataflow was
    guessed from module order. Residual branch ends and all-zero layers are not judged, nor
    layers behind a BatchNorm an eval-mode export folded into the convolutions (in training its
    batch statistics subtract the shared mean again at every layer, as the module form shows).
    Where the probe ran and measured the same call site (IA210's D), a prediction that
    measurement refutes (D inside the lines: the samples stay apart) is at most info, the
    measured D in its message: the map reads the stored weights, and a layer that transforms
    them at run time (NF-ResNet's weight-standardised convs, whose centred rows pass on no
    shared offset) is not what it predicts.

    Why it matters
    --------------
    When the outputs of different inputs coincide, the network computes nearly the same
    function of every input: the loss gradient is the same for all samples and the first
    layers cannot learn to tell inputs apart. A 5-layer Xavier sigmoid MLP keeps an element
    std near 0.5 while the part that differs between inputs shrinks to 0.5% of its start; at
    depth 20 it is 1e-12 (measured: IA210).

    Example
    -------
    ```python
    layers = []
    for _ in range(20):
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
    model = nn.Sequential(*[nn.Sequential(nn.Linear(100, 100), nn.Tanh()) for _ in range(20)])
    for m in model.modules():
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_normal_(m.weight, gain=torch.nn.init.calculate_gain("tanh"))
            torch.nn.init.zeros_(m.bias)
    ```
    (or zero-centred activations, or a normalisation layer every few layers).

    Options
    -------
    warn_ratio (float, default 0.02): D below which to warn.
    error_ratio (float, default 0.001): D below which the finding is an error.
    min_depth (int, default 2): layers a segment must span before it is judged.
    """

    code = "IA111"
    name = "predicted-correlation-collapse"
    category = "vanishing"
    severity = Severity.WARNING
    options = {"warn_ratio": 0.02, "error_ratio": 0.001, "min_depth": 2}
    applies_when_trained = False
    scope = "model"

    def check(self, ctx) -> Iterator[Finding]:
        skip, folded = _after_constant(ctx), renormalised_params(ctx.graph)
        profile = [s for s in ctx.signal if s.depth >= self.opts["min_depth"] and (s.origin, s.depth) not in skip
                   and s.distinct_ratio == s.distinct_ratio and _judged(ctx, s.param, folded)]
        if not profile:
            return
        worst = min(profile, key=lambda s: s.distinct_ratio)
        d = worst.distinct_ratio
        severity = depth_severity(d, True, self.opts)
        if severity is None:
            return
        # the probe measured the same call site: a prediction its forward pass refutes (the
        # samples stay apart, D inside the lines) is no defect, at most info
        seen = next((r for r in measured_distinct(ctx) if r[0].signal is worst), None)
        refuted = seen is not None and depth_severity(seen[1], True, self.opts) is None
        guessed = ctx.graph.capture == "module-order"
        start = "the input" if worst.origin == "input" else worst.origin
        yield self.finding(
            worst.layer, f"predicted correlation between different inputs reaches {worst.correlation:.6g} "
                         f"after {worst.depth} layers: the part of the signal that differs between inputs "
                         f"falls to {fmt(d)}x its value at {start} (ordered phase; mean-field correlation "
                         f"map, std {fmt(worst.predicted_std)})" + GUESSED_NOTE * guessed
                         + (f"; the probe measured {fmt(seen[1])}x there (correlation {seen[2]:.4g}), so the "
                            "prediction does not hold: at most info" if refuted else ""),
            severity=Severity.INFO if guessed or refuted else severity,
            evidence={"ratio": d, "correlation": worst.correlation, "depth": worst.depth,
                      "predicted_std": worst.predicted_std, "origin": worst.origin, "param": worst.param,
                      "measured_ratio": seen[1] if seen is not None else None},
            fix=_FIX)


class MeasuredCorrelationCollapse(Rule):
    """Different inputs measured to become indistinguishable through depth.

    What it checks
    --------------
    For every weight layer's output on the probe batch, the mean correlation between two
    samples' activations, c = mean over pairs a != b of <x_a - m, x_b - m> /
    (|x_a - m| |x_b - m|) (x_a: all units and positions of sample a, m the grand mean), and
    the same at the start of the layer's segment (the input, an embedding or a normalisation).
    Reports the deepest collapse of D = sqrt((1 - c_l) / (1 - c_start)) once the segment spans
    ``min_depth`` layers: the measured counterpart of IA111, with the same grading. Residual
    branch ends, all-zero layers and layers behind a BatchNorm folded by an exporter are not
    judged (as for IA111).

    Why it matters
    --------------
    The std of a layer can stay healthy while the inputs have merged: a Xavier sigmoid stack
    keeps its std near 0.5 while 1 - c falls geometrically. Then every sample gets the same
    output and the same gradient; training has nothing to separate them with.

    Example
    -------
    ```python
    layers = []
    for _ in range(20):
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
    model = nn.Sequential(*[nn.Sequential(nn.Linear(100, 100), nn.Tanh()) for _ in range(20)])
    for m in model.modules():  # a zero-centred activation with its Xavier gain
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_normal_(m.weight, gain=torch.nn.init.calculate_gain("tanh"))
            torch.nn.init.zeros_(m.bias)
    ```

    Options
    -------
    warn_ratio (float, default 0.02): D below which to warn.
    error_ratio (float, default 0.001): D below which the finding is an error.
    min_depth (int, default 2): layers a segment must span before it is judged.
    """

    code = "IA210"
    name = "activation-correlation-collapse"
    category = "vanishing"
    severity = Severity.WARNING
    options = {"warn_ratio": 0.02, "error_ratio": 0.001, "min_depth": 2}
    applies_when_trained = False
    needs_probe = True
    scope = "model"

    def check(self, ctx) -> Iterator[Finding]:
        probe = ctx.probe
        if probe is None or not getattr(probe, "ran", False) or not ctx.graph.has_architecture:
            return
        skip, folded = _after_constant(ctx), renormalised_params(ctx.graph)
        rows = [r for r in measured_distinct(ctx) if (r[0].signal.origin, r[0].signal.depth) not in skip
                and r[0].signal.depth >= self.opts["min_depth"] and _judged(ctx, r[0].signal.param, folded)]
        if not rows:
            return
        worst, d, c = min(rows, key=lambda r: r[1])
        severity = depth_severity(d, True, self.opts)
        if severity is None:
            return
        sig = worst.signal
        start = "the input" if sig.origin == "input" else sig.origin
        yield self.finding(
            worst.site.name,
            f"measured correlation between different samples reaches {c:.6g} after {sig.depth} layers: "
            f"the part of the activations that differs between inputs falls to {fmt(d)}x its value "
            f"at {start} (std {fmt(worst.site.std)}; {static_text(sig.distinct_ratio, sig)})",
            severity=severity,
            evidence={"ratio": d, "correlation": c, "depth": sig.depth, "std": worst.site.std,
                      "predicted_ratio": sig.distinct_ratio, "origin": sig.origin, "param": sig.param},
            fix=_init_fix(ctx.graph.params[sig.param]) + "  # and the layers before it; or add normalisation")
