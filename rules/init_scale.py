"""IA104, the init-scale rule: each weight's spread identified against the torch.nn.init schemes
and judged by where it sits in the dataflow (attention scores, residual branches, before a
normalisation, side branches, output heads) and by how much the mismatch compounds over its stack."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import replace
from typing import NamedTuple

from initaudit.attention_scores import attention_logit_scales, score_projections
from initaudit.branches import sandwich_ends
from initaudit.graph import OpKind, off_dataflow, renormalised_downstream, side_branch_nodes
from initaudit.lazy import lazy_function
from initaudit.roles import renormalised_params
from initaudit.rule import Finding, Rule, Severity, fmt
from initaudit.rules.depth import PredictedExploding, PredictedVanishing, depth_severity
from initaudit.rules.weights import constant_bias_start

# initaudit.schemes imports torch: load it when a rule runs, not when the rules are listed.
assess = lazy_function("initaudit.schemes", "assess")
candidates = lazy_function("initaudit.schemes", "candidates")
fixed_std_conventions = lazy_function("initaudit.schemes", "fixed_std_conventions")

SCHEME_TITLES = {"xavier": "Xavier", "he": "He", "he-fan-out": "He (fan_out)", "lecun": "LeCun",
                 "torch-default": "PyTorch-default", "orthogonal": "orthogonal",
                 "transformer-0.02": "transformer 0.02", "identity": "identity"}


def _fans(p) -> str:
    """The fans a message names (and the groups of a grouped convolution)."""
    return f"fan_in={fmt(p.fan_in)}, fan_out={fmt(p.fan_out)}" + (f", groups={p.groups}" if p.groups > 1 else "")


class _Scene(NamedTuple):
    """What IA104 reads from the whole graph once per audit, for every layer's severity."""
    stacks: dict[str, tuple[list[list[str]], int, bool]]  # weight -> its stack (see _stacks)
    factors: dict[str, float]  # weight -> its std over the scheme's, where no convention accepts it
    renormalised: set[str]  # weights whose scale a norm downstream divides away
    side: set[str]  # weights in a side branch that scales or gates a trunk
    folded: set[str]  # weights whose segment crosses a BatchNorm an exporter folded into a layer


def _applied_label(p) -> str:
    """How the judged spread differs from the stored one, for the message ("" where it is the same)."""
    if p.runtime_scale != 1.0:
        return f"as applied (the stored weight times {fmt(p.runtime_scale)} in its forward), "
    if p.runtime_rows is not None:
        return "as applied (the stored weight mapped per output channel in its forward, as weight standardisation does), "
    return ""


class InitScale(Rule):
    """Weight spread far from what the following activation calls for.

    What it checks
    --------------
    The std of every linear, convolution, attention, recurrent-input and embedding weight is identified
    against the torch.nn.init schemes, each with its gain and with the fans torch read from the
    shape (``he(relu)``, ``xavier(tanh)``, ``lecun``, ``torch-default``, ``orthogonal``), and
    accepted only when a matched scheme is the one the activation after it calls for:

    - ReLU family: He, std = gain / sqrt(fan_in) (fan_out mode too) with a ReLU-family gain
      (relu sqrt(2); leaky_relu(a) sqrt(2 / (1 + a^2)); gelu 1.534, silu 1.677, elu 1.245,
      mish 1.487 from 1 / sqrt(E[phi(z)^2]), z ~ N(0, 1));
    - tanh: Xavier, std = gain * sqrt(2 / (fan_in + fan_out)) (gain 1 or 5/3), or LeCun;
    - sigmoid, other bounded activations, no activation: Xavier (gain 1) or LeCun;
    - selu: LeCun, std = 1 / sqrt(fan_in);

    or within ``tolerance`` of that std. So Xavier or LeCun before ReLU, He before sigmoid or
    tanh, He before SELU and PyTorch's default 1 / sqrt(3 * fan_in) before ReLU are findings
    that name the scheme found, the scheme expected and the torch.nn.init call. A spread shared
    by layers of different fans (normal(0.02), VGG's N(0, 0.01)) is named as that convention and
    judged the same way. Orthogonal recurrent weights, PyTorch's RNN default and usual embedding
    scales are accepted. Init-stage only.

    A weight its layer multiplies by a constant at run time (NTK parametrisation, N(0, 1) times
    gain / sqrt(fan_in) in forward; StyleGAN's equalised learning rate) is judged as applied:
    the stored std times the factor measured from the recorded forward pass
    (``initaudit.runtime_scale``; the layer table's ``runtime_scale``), which the depth
    prediction (IA109/IA110) uses too. A weight its forward standardises per output channel
    (weight standardisation, w'_c = g_c gamma (w_c - mean(w_c)) / (std(w_c) sqrt(fan_in)): NFNet's
    ScaledStdConv2d, BiT's StdConv2d) is judged as the tensor passed to its convolution
    (``applied_stats`` in the layer table), at most info: its applied spread is every row's
    same g_c gamma / sqrt(fan_in) whatever the stored weight's initialisation, so there is no
    init to fix; the depth rules judge what that spread does to the signal.

    Convention or mistake: a family convention is never accepted by its name or its std alone: a tanh MLP drawn at
    N(0, 0.02) is as shared-across-fans as BERT, and its signal really vanishes. What tells a
    convention from a mistake is where the spread sits in the dataflow, and the severity says
    what it does there:

    - queries and keys (weights whose output reaches attention only as Q or K,
      ``softmax(Q K^T / sqrt(d)) V``) set the softmax's temperature, not the signal's scale: the
      logits' spread relative to the schemes' is L = r_q * r_k (r of each projection and the
      geometric mean of its partners'). L < 1 only starts the attention nearer uniform (info:
      BART/Swin/Whisper 0.02, CLIP's d^-1/2 (2 L)^-1/2, T5's (d_model d_kv)^-1/2 query);
      L > 1 sharpens it towards one-hot, graded with IA110's thresholds. L includes the scale s
      the attention applies to Q K^T relative to 1/sqrt(d), read from the graph (the constant
      between Q K^T and the softmax or on the query's way, SDPA's ``scale``): T5 divides by
      nothing (s = sqrt(d_kv)), so its folded query gives L = 1, and queries and keys that fit
      their schemes in such an attention (L = sqrt(d)) are reported;
    - a stack that ends in a residual add, directly or behind a LayerScale gain or constant
      scale (``x + gamma * f(x)``) or a gate in (0, 1) (``x + sigmoid(g(x)) * f(x)``: a
      shared expert), shrinks only its branch (info: GPT-2's and CLIP's depth-scaled
      projections, ConvNeXt's 0.02 with gamma 1e-6); so does one whose output a norm resets
      before the add (``x + norm(f(x))``: Gemma-2's sandwich norms); the same layers in a plain
      chain are graded as any stack;
    - a layer before a normalisation (BatchNorm, LayerNorm; a BatchNorm an exporter folded in):
      the forward scale is normalised away (He fan-out convs, GoogLeNet's trunc-normal 0.01),
      also when the way there passes only more layers, pooling, concatenation and activations
      that commute with a positive scale (relu, leaky_relu, prelu: phi(c x) = c phi(x)), as in
      DCGAN's N(0, 0.02) conv -> leaky_relu -> conv -> BatchNorm and SegFormer's projections ->
      concat -> fuse conv -> BatchNorm: info (a tanh, sigmoid or GELU on the way is not: the
      scale sets its regime, linear or saturated, which the norm after it cannot undo);
    - a stack that shrinks in a side branch scaling or gating a trunk (a squeeze-excite gate,
      which starts near sigmoid(0) = 1/2): info, as in a residual branch;
    - a weight the recorded forward pass never reached (a training-only auxiliary classifier) is
      judged as in a checkpoint with no architecture: only a spread outside every scheme;
    - a layer that feeds nothing but the output head (through activations, dropout, pooling;
      ELECTRA's discriminator dense, a classifier's last hidden layer): a shrink there only
      scales the initial logits, as a small head does, so its own factor does not make it a
      warning; it is graded by its stack without it (a warning when the other layers of its
      stack compound past the lines or one of them is past them on its own: the same cause,
      the same fix). A blow-up there is judged as anywhere.

    Severity follows how much the mismatch compounds. Each layer multiplies the signal's std
    by r = std / expected std relative to the scheme it should follow; over the stack of layers
    between two normalisations (a segment of the dataflow) the mismatch compounds to
    P = prod_l r_l, taken over the layers after the first (the first only rescales its input,
    whose scale the data sets) and without output layers (nothing follows them). P is graded
    with IA109's thresholds when P < 1 and IA110's when P > 1: a warning past them, info
    inside (a finding is never below info). Info also when a normalisation follows the layer,
    when a stack that shrinks ends in a residual add (the skip path carries the signal:
    GPT-2/CLIP depth-scaled projections, LayerScale), and when the dataflow was guessed from
    module order. A stack that crosses a BatchNorm an exporter folded into a layer (eval-mode
    ONNX, fresh statistics: the identity in the file) is not compounded across it: in training
    that BatchNorm renormalises, as a norm node would (MobileViT's conv_1x1, 1.3x Xavier,
    compounded 35x over 32 folded layers); the layer's own factor is graded. With no architecture (a bare checkpoint), and before an op nothing models (a
    custom ONNX domain's op, an unknown function: the activation is unknown, not "none"), no
    scheme is expected: only spreads outside every known scheme by ``tolerance`` are reported,
    naming the unknown op; below them on an output layer (a bare checkpoint's head: a matrix
    narrowing to a width no other weight reads, or another classifier over that head's
    classes), info, as a small head only starts the logits near uniform (timm BEiT's head at
    0.001x its 0.02 draw); above them on an output layer, graded with IA110's lines on
    std / the nearest scheme's; on a layer a BatchNorm in the file follows (paired by names
    and shapes), info, as with the architecture (Inception-v3's trunc_normal(0.1) convs,
    1.3-3.5x the schemes). A layer a normalisation follows is reported only when
    its std is more than 2x off (its forward scale is normalised away).

    Why it matters
    --------------
    A layer multiplies the second moment of its signal by fan_in * Var(W) * E[phi(h)^2]. The
    schemes choose Var(W) so that factor is 1 for the activation that follows; Xavier before
    ReLU halves it (r = 1/sqrt(2) for fan_in = fan_out), so 20 layers keep 0.1% of the std.

    Example
    -------
    ```python
    layers = []
    for _ in range(20):
        layers += [nn.Linear(100, 100), nn.ReLU()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.xavier_normal_(m.weight)
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
    tolerance (float, default 1.2): accepted factor between the std and the expected std.
    """

    code = "IA104"
    name = "init-scale"
    category = "scale"
    severity = Severity.WARNING
    options = {"tolerance": 1.2}
    applies_when_trained = False

    def check(self, ctx) -> Iterator[Finding]:
        judged = []  # (param, stats, assessment, label)
        fixed = fixed_std_conventions(list(ctx.graph.weights()), ctx.applied_stats)
        off = off_dataflow(ctx.graph)  # judged with the activation unknown
        for p in ctx.graph.weights():
            a = ctx.analysis(p.name)
            if a.stats.nonfinite or a.stats.std == 0 or p.kind is OpKind.RECURRENT_HIDDEN:
                continue
            dist = a.shape.distribution if a.shape else None
            if p.gates and a.gate_std and a.orthogonal_gain is None:  # each gate block on its own
                n = a.stats.numel // len(p.gates)
                for gate, std in zip(p.gates, a.gate_std):
                    st = replace(a.stats, std=std, numel=n)
                    judged.append((p, st, self._assess(ctx, p, st, None, dist, fixed, off), f"gate {gate}: "))
            else:  # as the signal sees it: a runtime multiplier (NTK, equalised lr) applied
                st = ctx.applied_stats(p.name)
                label = _applied_label(p)
                judged.append((p, st, self._assess(ctx, p, st, a.orthogonal_gain, dist, fixed, off), label))
        factors = {p.name: res.ratio for p, _, res, _ in judged
                   if res is not None and not res.accepted_by and res.ratio}
        scores = score_projections(ctx.graph)
        logit_scales = attention_logit_scales(ctx.graph) if scores else {}
        side = side_branch_nodes(ctx.graph.nodes)
        scene = _Scene(_stacks(ctx, set(scores)), factors, renormalised_downstream(ctx.graph),
                       {n.param for n in ctx.graph.nodes if n.name in side and n.param},
                       renormalised_params(ctx.graph))
        for p, st, res, label in judged:
            if res is None:
                continue
            scores_at = p.name in scores and res.expected is not None and res.ratio
            # a query or key that fits its scheme still sets the logits with its attention's scale
            if res.accepted_by and not (scores_at and logit_scales.get(p.name, 1.0) > 1.05):
                continue
            if p.normalized_after and res.ratio and abs(math.log(res.ratio)) <= math.log(2):
                continue  # normalised away forwards; a backward scale within 2x is no finding
            if scores_at:
                yield from self._report_scores(p, st, res, label, scores[p.name], factors,
                                               logit_scales.get(p.name, 1.0), bool(res.accepted_by))
                continue
            yield from self._report(ctx, p, st, res, label, scene)

    def _assess(self, ctx, p, stats, orthogonal, dist, fixed, off):
        g = ctx.graph
        return assess(p, stats, orthogonal, g.family, g.has_architecture and p.name not in off,
                      self.opts["tolerance"], distribution=dist, fixed_std=fixed.get(p.name),
                      identity=ctx.analysis(p.name).identity_gain if orthogonal is not None else None)

    def _report(self, ctx, p, stats, res, label, scene: _Scene) -> Iterator[Finding]:
        if res.expected is None:  # activation unknown (no architecture, unknown op): outside every scheme?
            yield from self._report_unknown(ctx, p, stats.std, res, label)
            return
        stack = scene.stacks.get(p.name)
        severity, compound, why = self._severity(ctx, p, res, stack, scene)
        yield self._finding(p, stats, res, label, severity, compound, stack[1] if stack else None, why)

    def _report_unknown(self, ctx, p, std, res, label) -> Iterator[Finding]:
        """The activation unknown: a finding only for a spread outside every known scheme by
        ``tolerance``, graded by what is known of the layer's place: info when a normalisation
        follows it (its forward scale is divided away, as with the architecture), for an
        output layer below the schemes (a small head only starts the logits near uniform) and for
        a layer that starts as its constant bias (``constant_bias_start``: a gate or scale
        initialised to a fixed value, whose weights are small by design); an
        output layer above them is graded with IA110's lines on its factor r = std / nearest
        scheme's std (nothing after it compounds r), as with the architecture."""
        # a std shared by many layers is no scheme by itself (N(0, 1) everywhere is shared too)
        if any(m not in ("none", "fixed-std") for m in res.matched):
            return  # it matches one (the table's scheme column says which): not outside them all
        tol = self.opts["tolerance"]
        stds = [m.std for m in candidates(p, None)]
        lo, hi = min(stds) / tol, max(stds) * tol
        if lo <= std <= hi:
            return
        ref = min(stds) if std < lo else max(stds)
        unknown = f"activation unknown: {p.follows_unknown} follows, an op initaudit does not model" \
            if p.follows_unknown else "activation unknown: slices of its output feed " \
            f"{', '.join(p.split_functions)}" if p.split_functions else "activation unknown"
        severity, why = None, ""
        if p.normalized_after:
            severity, why = Severity.INFO, "; a normalisation follows, so only its backward scale is affected"
        elif std < lo and (start := constant_bias_start(ctx, p, std)) is not None:
            severity, why = Severity.INFO, (
                f"; its bias is the constant {fmt(start)} on every unit, so the layer starts as that constant "
                "whatever its input (weights ~ 0, a gate or scale initialised to a fixed value, as gMLP's "
                "spatial gate u * (W v + 1) starts as u): small weights by design")
        elif p.is_output and std < lo:  # only scales the initial logits, as a zero head does
            severity, why = Severity.INFO, "; an output layer: a small head only starts the logits near uniform"
        elif p.is_output:
            severity = depth_severity(std / ref, False, PredictedExploding.options) or Severity.INFO
            why = "; an output layer: nothing after it compounds the mismatch"
        yield self.finding(
            p.name, f"{label}std {fmt(std)} is {fmt(std / ref)}x the nearest known scheme's std "
                    f"{fmt(ref)} ({_fans(p)}; {unknown}){why}",
            severity=severity,
            evidence={"std": std, "expected_std": ref, "ratio": std / ref, "matched_schemes": res.matched},
            fix="torch.nn.init.kaiming_normal_(w, nonlinearity='relu') or xavier_normal_(w), "
                "for the activation that follows")

    def _finding(self, p, stats, res, label, severity, compound, members, why, extra=None) -> Finding:
        exp, std = res.expected, stats.std
        shape = _fans(p)
        title = SCHEME_TITLES.get(exp.scheme, exp.scheme)
        found = [m.label for m in res.matches[:3]]
        if res.convention:
            what = f"follows a {res.convention} convention shared by layers of different fans"
        elif found:
            what = f"matches {', '.join(found)}"
        else:
            what = "matches no known scheme"
        return self.finding(
            p.name, f"{label}std {fmt(std)} is {fmt(res.ratio)}x the {title} std {fmt(exp.std)} expected "
                    f"{exp.reason} ({shape}); {what}{why}",
            severity=severity,
            evidence={"std": std, "expected_std": exp.std, "ratio": res.ratio, "scheme": exp.scheme,
                      "gain": exp.gain, "matched_schemes": res.matched,
                      "matches": [m.to_json() for m in res.matches[:4]],
                      "convention": res.convention, "stack_factor": compound, "stack": members,
                      **(extra or {})},
            fix=exp.fix)

    def _report_scores(self, p, stats, res, label, partners, factors, scale=1.0,
                       accepted=False) -> Iterator[Finding]:
        """A query or key projection: its spread and its partners' set the attention logits'
        spread, L = r_q * r_k * s relative to the schemes' (r = 1 for a partner that fits its
        scheme; s the scale the attention applies to Q K^T relative to 1/sqrt(d), read from the
        graph: sqrt(d) where nothing scales, as in T5). L < 1 only starts the softmax nearer
        uniform (info); L > 1 sharpens it towards one-hot attention, graded with IA110's
        thresholds."""
        rs = [factors.get(n, 1.0) for n in partners]
        logits = res.ratio * scale * (math.exp(sum(math.log(r) for r in rs) / len(rs)) if rs else 1.0)
        severity = depth_severity(logits, False, PredictedExploding.options) if logits > 1 else None
        if accepted and severity is None:
            return  # its own scheme, and logits inside the lines: nothing to say
        if logits > 1:
            why = (f"; it feeds attention scores softmax(QK^T)V, whose logits it and its partner "
                   f"scale to {fmt(logits)}x the schemes' spread: the softmax starts sharper")
        else:
            why = (f"; it feeds attention scores softmax(QK^T)V: logits at {fmt(logits)}x the schemes' "
                   "spread only start the softmax nearer uniform (the values carry the signal)")
        if abs(math.log(scale)) > math.log(1.05):
            why += f" (its attention scales Q K^T by {fmt(scale)}x 1/sqrt(d))"
        yield self._finding(p, stats, res, label, Severity.WARNING if severity else Severity.INFO,
                            logits, None, why, {"attention_logits_factor": logits,
                                                "attention_partners": sorted(partners),
                                                "attention_logit_scale": scale})

    def _severity(self, ctx, p, res, stack, scene: _Scene):
        """(severity, compounded factor P, reason text) -- see the class docstring."""
        factors = scene.factors
        own = res.ratio or 1.0
        # A layer of an output head: its own shrink, and its head's, only scale the initial
        # outputs (as a small head does), so it is graded by what its stack does before the head.
        head_shrink = p.feeds_head and own < 1
        params = ctx.graph.params

        def in_head(n: str) -> bool:
            return head_shrink and n in params and params[n].feeds_head and factors.get(n, 1.0) < 1
        # a BatchNorm the exporter folded (eval-mode ONNX) renormalises there in training, as a
        # norm node would: what the layers compound across it says nothing, its own factor does
        folded = p.name in scene.folded and stack is not None
        if folded:
            stack = None
        if stack is None:  # an output layer, or not on the predicted signal path (recurrent)
            # (a head layer's own shrink only scales the initial outputs, as below)
            compound, members = (1.0 if head_shrink else res.ratio), 1
        else:
            levels, members, _ = stack
            log_compound = 0.0
            for level in levels[1:]:
                rs = [factors.get(n, 1.0) for n in level if not (n == p.name and head_shrink or in_head(n))]
                log_compound += sum(math.log(r) for r in rs) / len(rs) if rs else 0.0
            # a deep stack can compound past float range: keep it representable (and loggable)
            compound = math.exp(max(-700.0, min(700.0, log_compound)))
        # a single layer far off (past the same thresholds on its own) is a warning too; a head
        # input shares that verdict with the other layers of its stack (one cause, one fix)
        others = [n for level in stack[0] for n in level if n != p.name and not in_head(n)] \
            if head_shrink and stack else []
        for r in ([own] if not head_shrink else [factors.get(n, 1.0) for n in others]):
            if depth_severity(r, r < 1, (PredictedVanishing if r < 1 else PredictedExploding).options) \
                    and abs(math.log(r)) > abs(math.log(compound)):
                compound = r
        shrinking = compound < 1
        limits = (PredictedVanishing if shrinking else PredictedExploding).options
        severity = depth_severity(compound, shrinking, limits)
        why = (f"; over its stack of {members} layers the mismatch compounds to {fmt(compound)}x"
               if stack is not None else "; an output layer: nothing after it compounds the mismatch"
               if p.is_output else "")
        if folded:
            why += ("; its stack crosses a BatchNorm the exporter folded into a layer (it renormalises "
                    "there in training), so " + ("nothing it compounds is graded" if head_shrink
                                                 else "only its own factor is graded"))
        if p.normalized_after:
            return Severity.INFO, compound, why + "; a normalisation follows, so only its backward scale is affected"
        if p.scale_set_by:
            return Severity.INFO, compound, why + (
                f"; {p.scale_set_by} sets the applied spread, so no initialisation of it changes it "
                "(IA109/IA110 judge the signal)")
        if p.runtime_rows is not None and p.runtime_rows.standardised:
            return Severity.INFO, compound, why + (
                "; its forward standardises each output channel of the weight, so no initialisation of it "
                "changes the applied spread (the layer's constants set it); IA109/IA110 judge the signal")
        if p.name in scene.renormalised:
            return Severity.INFO, compound, why + ("; a normalisation downstream (past layers and activations "
                                                   "only) divides the scale away before the signal goes on")
        if ctx.graph.capture == "module-order":
            return Severity.INFO, compound, why + "; the dataflow was guessed from module order"
        if shrinking and (p.residual_end or (stack is not None and stack[2])):
            return Severity.INFO, compound, why + " inside a residual branch (the skip path carries the signal)"
        if shrinking and p.name in scene.side:  # a gate at sigmoid(0) = 1/2, attention scores
            return Severity.INFO, compound, why + (" in a side branch that scales or gates a trunk (the "
                                                   "trunk carries the signal past it)")
        if shrinking and p.is_output:  # a small head starts from near-uniform logits
            return Severity.INFO, compound, why
        if head_shrink and severity is None:
            return Severity.INFO, compound, why + ("; it feeds only the output head, so its small scale only "
                                                   "scales the initial logits (as a small head does)")
        if severity is None:
            return Severity.INFO, compound, why
        if p.is_output:
            why += _measured_output(ctx, p)
        return Severity.WARNING, compound, why


def _measured_output(ctx, p) -> str:
    """What the probe measured at an oversized output layer: its logits' spread, the consequence
    (std s over C classes starts the cross-entropy near s * sqrt(2 ln C) instead of ln C)."""
    site = ctx.probe.site_for_param(p.name) if ctx.probe is not None else None
    if site is None or not math.isfinite(site.std):
        return ""
    return f"; the probe measures its output's std at {fmt(site.std)}"


def _stacks(ctx, off_path: set[str] = frozenset()) -> dict[str, tuple[list[list[str]], int, bool]]:
    """Per weight on the predicted signal path: its stack (the layers of its segment, grouped by
    depth, output layers and ``off_path`` weights -- attention queries and keys -- left out), the
    number of layers and whether the stack feeds a residual add."""
    params = ctx.graph.params
    segments: dict[str, dict[int, list[str]]] = {}
    ends_residual: dict[str, bool] = {}  # output layers count here: a last block's branch end
    sandwiched = sandwich_ends(ctx.graph)  # x + norm(f(x)): a branch too, its norm before the add
    for s in ctx.signal:
        p = params.get(s.param)
        if p is None or s.param in off_path:
            continue
        ends_residual[s.origin] = ends_residual.get(s.origin, False) or p.residual_end or s.param in sandwiched
        if p.is_output:
            continue
        segments.setdefault(f"{s.origin}", {}).setdefault(s.depth, []).append(s.param)
    out = {}
    for origin, levels in segments.items():
        ordered = [levels[d] for d in sorted(levels)]
        names = [n for level in ordered for n in level]
        residual = ends_residual.get(origin, False)
        for n in names:
            out[n] = (ordered, len(names), residual)
    return out
