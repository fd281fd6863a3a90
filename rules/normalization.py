"""IA108: degenerate normalisation parameters and running statistics."""

from __future__ import annotations

import re
from collections.abc import Iterator

from initaudit.branches import act_slopes
from initaudit.graph import _SHAPE_ONLY, OpKind, ParamRole, _consumers, _following
from initaudit.lazy import lazy_function
from initaudit.rule import Finding, Rule, Severity, fmt
from initaudit.rules.probe_common import measured_no_gradient

measured_gain = lazy_function("initaudit.normgain", "measured_gain")  # imports torch


class DegenerateNormalization(Rule):
    """Normalisation layers with degenerate parameters or running statistics.

    What it checks
    --------------
    - a scale (gamma) that is all zero: info at the end of a residual branch (zero_init_residual,
      Goyal et al.); elsewhere an error when gamma itself gets no gradient, a warning when it
      gets one. With gamma = 0 the norm outputs its shift beta on every sample, so
      dL/dgamma_j = sum_n dL/dy_nj xhat_nj with dL/dy_nj = dL/da_nj phi'(beta_j) for the
      activation phi that follows: the backward probe measures ||dL/dgamma||; where no backward
      pass runs (ONNX, ``--no-probe``) it is derived, zero when phi'(beta_j) = 0 on every unit
      and phi is the norm's only consumer (ReLU with beta <= 0: the layer can never recover;
      tanh, GELU, ReLU with beta > 0: the first steps move gamma off 0). Where the live
      module is available the gain the layer really applies is measured (y(x) - y(-x) on a
      normalised +/-1 probe, which cancels the shift): a zero parameter in a ``x * (1 + w)``
      norm (Gemma) has gain 1 and is not reported. In a bare checkpoint the position is
      unknown: zeros at the same place in every repeated block (``layer#.#.bn2``, timm's
      ``stages.#.#.conv3_1x1.bn``: zero-init residual), or in every norm of the model (a
      (1 + w) parametrisation), are info; zeros in some instances of a block and not the others, a
      warning;
    - a scale drawn small instead of near one (rms sqrt(mean^2 + std^2) below ``small_gain``,
      e.g. ``normal_(std=0.02)`` applied to every parameter, BatchNorm included) outside
      residual branch ends: a warning naming the cause;
    - running_var <= 0 anywhere: an error;
    - at ``--stage trained``, BatchNorm running statistics still at their initial values
      (mean 0, var 1): the statistics were never updated, a warning.

    Why it matters
    --------------
    BatchNorm computes y = gamma * (x - mu) / sqrt(var + eps) + beta. gamma = 0 outside a
    residual branch cuts the signal and the gradient to everything below (dL/dx is proportional
    to gamma), and before a ReLU with beta <= 0 gamma's own gradient is 0 too; gamma ~ N(0, 0.02)
    multiplies the signal's std by rms(gamma) ~ 0.02 at every such layer, so two in a row leave
    4e-4 of it. In eval mode it divides by sqrt(running_var + eps): running_var <= 0 amplifies by
    up to 1/sqrt(eps) ~ 316 or yields NaN. Untouched statistics in a trained model normalise with
    the wrong moments at inference.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(16, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 4))
    torch.nn.init.zeros_(model[1].weight)
    ```

    Fix
    ---
    ```python
    torch.nn.init.ones_(model[1].weight)
    ```

    Options
    -------
    small_gain (float, default 0.1): rms scale (or measured gain) below which a non-zero scale
    is reported.
    """

    code = "IA108"
    name = "degenerate-normalization"
    category = "normalization"
    severity = Severity.WARNING
    options = {"small_gain": 0.1}

    def check(self, ctx) -> Iterator[Finding]:
        params = ctx.graph.params
        zero_patterns = _zero_scale_patterns(ctx) if not ctx.graph.has_architecture else {}
        small: list[tuple] = []
        for p in params.values():
            if p.kind is not OpKind.NORM:
                continue
            s = ctx.analysis(p.name).stats
            if s.nonfinite:
                continue
            if p.role is ParamRole.NORM_SCALE:
                yield from self._scale(ctx, p, s, zero_patterns, small)
            elif p.role is ParamRole.RUNNING_VAR and s.min <= 0:
                yield self.finding(p.name, f"running_var has {fmt(s.min)} <= 0: eval-mode normalisation "
                                   "divides by sqrt(var + eps) and amplifies or yields NaN",
                                   severity=Severity.ERROR, evidence={"min": s.min},
                                   fix="recompute the running statistics (a few training-mode forward passes)")
            elif p.role is ParamRole.RUNNING_VAR and ctx.trained and s.min == s.max == 1.0:
                mean = params.get(p.name[: -len("running_var")] + "running_mean")
                if mean is None or ctx.analysis(mean.name).stats.all_zero:
                    yield self.finding(p.layer, "running statistics are still mean 0, var 1 in a trained "
                                       "model: they were never updated",
                                       fix="run training-mode forward passes over data (or model.train() during training)")
        if small:
            yield self._small_scales(small)

    def _small_scales(self, small: list[tuple]) -> Finding:
        """One finding for every scale drawn small (one cause, usually a blanket init)."""
        p, rms, s, gain = small[0]
        gains = [g if g is not None else r for _, r, _, g in small]
        names = [q.name for q, _, _, _ in small]
        more = f" and {len(small) - 1} more normalisation layer(s)" if len(small) > 1 else ""
        measured = " (measured on the live module)" if gain is not None else ""
        return self.finding(
            p.name, f"scale (gamma) drawn small, not near 1: rms {fmt(rms)} (mean {fmt(s.mean)}, std "
                    f"{fmt(s.std)}){more}, gains {fmt(min(gains))}..{fmt(max(gains))}{measured}: each "
                    "multiplies the signal's std by its gain, so two in a row leave ~"
                    f"{fmt(sorted(gains)[len(gains) // 2] ** 2)} of it (an init that draws every "
                    "parameter from N(0, 0.02) reaches the norm scales too)",
            evidence={"rms": rms, "mean": s.mean, "std": s.std, "measured_gain": gain, "layers": names,
                      "gains": gains},
            fix="torch.nn.init.ones_(norm.weight); torch.nn.init.zeros_(norm.bias)  # every norm layer")

    def _scale(self, ctx, p, s, zero_patterns, small: list) -> Iterator[Finding]:
        rms = (s.mean ** 2 + s.std ** 2) ** 0.5
        if not (s.all_zero or rms < self.opts["small_gain"]):
            return
        gain = measured_gain(ctx.graph.module, p.layer, p.shape[0]) \
            if ctx.graph.module is not None and p.shape else None
        if gain is not None and gain >= self.opts["small_gain"]:
            return  # e.g. x * (1 + w) with w = 0: the layer applies gain ~1
        measured = f" (measured gain {fmt(gain)})" if gain is not None else ""
        evidence = {"rms": rms, "mean": s.mean, "std": s.std, "measured_gain": gain}
        if p.residual_end:
            yield self.finding(p.name, f"{'zero' if s.all_zero else 'small'} scale at the end of a residual "
                               "branch (zero-init residual, legitimate: the block starts as identity)",
                               severity=Severity.INFO, evidence=evidence)
        elif s.all_zero and p.name in zero_patterns:
            yield self.finding(p.name, f"zero scale {zero_patterns[p.name]}; a bare checkpoint does not say "
                               "where it sits (give --model to check)", severity=Severity.INFO,
                               evidence=evidence)
        elif s.all_zero and not ctx.graph.has_architecture:
            # not at one place in every repeated block: a zero-init residual that skips the blocks
            # with no identity path (RegNetZ's and TResNet's first block of a stage) looks the same
            yield self.finding(p.name, "scale (gamma) is all zero: at the end of a residual branch it is "
                               "the zero-init residual convention (the block starts as identity), elsewhere "
                               "it cuts the signal and the gradient; a checkpoint with no architecture "
                               "cannot tell", evidence={**evidence, "position": "unknown"},
                               fix="pass --model pkg.mod:factory (the architecture) to tell; if it is not a "
                                   "branch end: torch.nn.init.ones_(norm.weight)")
        elif s.all_zero:
            yield self._zero_scale(ctx, p, measured, evidence)
        else:
            small.append((p, rms, s, gain))

    def _zero_scale(self, ctx, p, measured: str, evidence: dict) -> Finding:
        """A zero scale outside a residual branch: an error when gamma itself gets no gradient
        (it can never leave 0), a warning when it gets one (the first steps move it off 0)."""
        zero, how = gamma_gradient(ctx, p)
        evidence = {**evidence, "gamma_gradient_zero": zero, "gamma_gradient_source": how}
        cut = f"scale (gamma) is all zero outside a residual branch: the layer outputs only its shift " \
              f"and passes no gradient down{measured}"
        if zero:
            return self.finding(p.name, f"{cut}; gamma itself gets a zero gradient ({how}), so it can never "
                                "leave 0: the layer is cut for good", severity=Severity.ERROR,
                                evidence=evidence, fix="torch.nn.init.ones_(norm.weight)")
        recovers = f"; gamma gets a non-zero gradient ({how}), so training can move it off 0" \
            if zero is False else ""
        return self.finding(p.name, cut + recovers, evidence=evidence, fix="torch.nn.init.ones_(norm.weight)")


def _patterns(name: str) -> tuple[str, str, str]:
    """The name with every number replaced, with every number but the last (block indices
    go, the position inside the block stays: ``layer1.0.bn2`` -> ``layer#.#.bn2``), and with
    only the path components that are indices (digits in a layer's own name stay:
    ``stages.0.1.conv3_1x1.bn`` -> ``stages.#.#.conv3_1x1.bn``, apart from ``conv1_1x1``)."""
    runs = list(re.finditer(r"\d+", name))
    keep_last = name
    for m in reversed(runs[:-1]):
        keep_last = keep_last[:m.start()] + "#" + keep_last[m.end():]
    indices = ".".join("#" if part.isdigit() else part for part in name.split("."))
    return re.sub(r"\d+", "#", name), keep_last, indices


def _zero_scale_patterns(ctx) -> dict[str, str]:
    """Bare checkpoints: zero norm scales that are consistent across the model (why, by name)."""
    scales = [p for p in ctx.graph.params.values() if p.role is ParamRole.NORM_SCALE]
    zero = {p.name for p in scales if ctx.analysis(p.name).stats.all_zero}
    if not zero:
        return {}
    if zero == {p.name for p in scales}:
        return {n: "in every normalisation of the model (a (1 + w) parametrisation such as Gemma's, "
                   "where w = 0 is a unit scale)" for n in zero}
    groups: dict[str, list[str]] = {}
    for p in scales:
        for pattern in set(_patterns(p.name)):
            groups.setdefault(pattern, []).append(p.name)
    out = {}
    for pattern, names in groups.items():
        if len(names) >= 2 and all(n in zero for n in names):
            for n in names:
                out.setdefault(n, f"at the same place in all {len(names)} repeated blocks ({pattern}: "
                                  "the zero-init residual convention)")
    return out


def gamma_gradient(ctx, p) -> tuple[bool | None, str | None]:
    """Whether the zero scale ``p`` gets a zero gradient, and how that is known. Measured by the
    backward probe where one ran; otherwise derived: with gamma = 0 the norm outputs its shift
    beta on every sample, so for the activation phi that follows, dL/dgamma_j =
    sum_n dL/da_nj phi'(beta_j) xhat_nj, exactly zero when phi'(beta_j) = 0 on every unit
    (ReLU with beta <= 0). (None, None) when neither is known."""
    zero = measured_no_gradient(ctx, p.name)
    if zero is not None:
        return zero, f"||dL/dgamma|| = {fmt(ctx.probe.grads[p.name].norm)}, measured by the backward probe"
    node = next((n for n in ctx.graph.nodes if n.kind == "norm" and p.name in n.norm_params), None)
    if node is None or p.activation is None or not p.shape:
        return None, None
    after = _following(node.name, _consumers(ctx.graph.nodes), _SHAPE_ONLY)
    if not after or any(n.kind != "act" or n.activation != p.activation for n in after):
        return None, None  # another path (a skip, a second consumer) can carry gradient back
    shift = next((q for q in node.norm_params if q in ctx.graph.params
                  and ctx.graph.params[q].role is ParamRole.NORM_SHIFT), None)
    slopes = act_slopes(ctx.graph, p.activation, shift, p.shape[0])
    if slopes is None or slopes.numel() != p.shape[0]:
        return None, None
    dead = int((slopes == 0).sum())
    return dead == p.shape[0], f"derived: {p.activation}'(beta) = 0 on {dead} of {p.shape[0]} units"
