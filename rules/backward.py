"""Probe rules on the backward pass: gradient depth (IA206/IA207), units that copy each other
and whether training separates them (IA208). Parameters no gradient reaches (IA209) are in
:mod:`initaudit.rules.unused`."""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.rules.probe_common import _is_zero, _param, _probe, _where
from initaudit.rules.depth import depth_severity
from initaudit.rules.weights import ConstantWeights, _init_fix

from initaudit.branches import logit_only
from initaudit.graph import OpKind, Param, ParamRole
from initaudit.learned_inputs import learned_zero_inputs, reads_no_data, zero_factors_before
from initaudit.roles import renormalised_params
from initaudit.rule import Finding, Rule, Severity, fmt


# What a branch passes through before its LayerScale gain: the gain scales all of it.
_INSIDE_BRANCH = frozenset({"transparent", "act", "layer", "norm", "pool-max", "pool-avg"})


def _small_by_design(graph, small_gain=lambda name: True) -> set[str]:
    """Weights whose gradients are small at init by design, read from the dataflow: attention
    query/key projections and other layers making softmax logits that weight V (their error
    passes through softmax(Q K^T / sqrt(d)), nearly uniform at init, whose derivative is near
    zero; ConvBERT's dynamic convolution kernels) and branches scaled by a parameter before
    they join the stream (LayerScale: y = x + gamma * f(x), gamma ~ 1e-6..0.1). The layer
    right before the gain is one; so is every layer of f behind it (reached through its
    activations, norms, inner layers and attention's value path) when the gain is small
    (``small_gain``: |gamma| < 1), since it scales the gradient of all of them (CaiT's q/k/v
    and fc1 as well as proj and fc2). Also every layer whose only way to the output is such a
    logit slot (:func:`initaudit.branches.logit_only`: a sub-network that only makes queries).
    Attention written out in primitive ops that no pattern reads is found by
    :func:`_written_out_logits`."""
    if not graph.has_architecture:
        return set()
    users: dict[str, list] = {}
    for n in graph.nodes:
        for i, inp in enumerate(n.inputs):
            users.setdefault(inp, []).append((n, i))
    small = set()
    for node in graph.nodes:
        if node.kind != "layer" or not node.param:
            continue
        stack, seen = [(node.name, True)], {node.name}
        while stack:
            name, direct = stack.pop()
            for user, slot in users.get(name, []):
                if user.name in seen:
                    continue
                seen.add(user.name)
                if (direct and user.kind == "attention" and slot < len(user.inputs) - 1) or (
                        user.kind == "mul" and user.param and (direct or small_gain(user.param))):
                    small.add(node.param)
                elif user.kind in _INSIDE_BRANCH or user.kind == "attention":
                    stack.append((user.name, direct and user.kind == "transparent"))
    return small | _written_out_logits(graph, users) | logit_only(graph.nodes)


# Ops that multiply two signals (Q K^T written out) and ops that only move or pad elements.
_PRODUCTS = frozenset({"einsum", "matmul", "bmm", "mm", "baddbmm"})
_MOVES = frozenset({"as_strided", "pad", "new_ones", "new_zeros", "diagonal", "unfold", "tril", "triu"})


def _written_out_logits(graph, users) -> set[str]:
    """Weights whose output, through shape-only ops and a product with another signal
    (``einsum``/``matmul``/``bmm``), reaches a ``softmax``: query/key projections of attention
    that no pattern reads as ``softmax(Q K^T) V`` (Longformer's sliding-window chunks: strided
    views, padded diagonals and the global-token scores concatenated before the softmax). A
    layer that reaches a softmax with no such product (a classifier's head) is not one."""
    small = set()
    for node in graph.nodes:
        if node.kind != "layer" or not node.param:
            continue
        stack, seen = [(node.name, False)], {node.name}
        while stack:
            name, product = stack.pop()
            for user, _ in users.get(name, []):
                word = user.op_word
                if word == "softmax" and product:
                    small.add(node.param)
                    stack.clear()
                    break
                passes = user.kind in ("transparent", "cat") or (user.kind == "mul" and not user.param) \
                    or word in _MOVES or (word in _PRODUCTS and len(user.inputs) >= 2)
                if passes and user.name not in seen:
                    seen.add(user.name)
                    stack.append((user.name, product or word in _PRODUCTS))
    return small


def _gain_below_one(ctx, name: str) -> bool:
    try:
        st = ctx.analysis(name).stats
    except KeyError:
        return False
    return max(abs(st.min), abs(st.max)) < 1.0


def _gradient_profile(ctx, probe) -> list[tuple[Param, int, float]]:
    """(param, position, gradient-to-weight ratio) of weight layers in forward order.

    Position = order of the layer's first call in the forward pass. Left out: embeddings (only
    the rows of tokens seen get a gradient), normalisation, parameters with no, zero or
    non-finite gradient (blocked below a zero-initialised layer: IA203/IA208's subject),
    all-zero weights (ratio undefined), weights small by design (attention query/key,
    LayerScale branches, where the dataflow shows them) and weights a normalisation follows
    (BatchNorm divides their gradient by their output's batch std, so |dW|/|W| scales as
    1/|W|^2, their own scale, not the depth).
    """
    first_call: dict[str, int] = {}
    for s in probe.sites:
        if s.kind == "layer" and s.module is not None and s.module not in first_call:
            first_call[s.module] = len(first_call)
    small = _small_by_design(ctx.graph, lambda name: _gain_below_one(ctx, name))
    out = []
    for name, g in (probe.grads or {}).items():
        p = ctx.graph.params.get(name)
        if p is None or not p.is_weight or p.kind in (OpKind.EMBEDDING, OpKind.NORM) or name in small \
                or p.normalized_after:
            continue
        owners = [p.layer, *(a.rpartition(".")[0] for a in p.aliases)]
        pos = min((first_call[o] for o in owners if o in first_call), default=None)
        if pos is None or not g.received or g.nonfinite or not g.norm > 0 or not g.weight_norm > 0:
            continue
        out.append((p, pos, g.ratio))
    out.sort(key=lambda t: t[1])
    return out


def _robust(values: list[float], against_low: bool) -> float:
    """A window's value that two outliers cannot move (the query/key pair of one attention
    block), nor fewer than half its layers in a wide window (deep models' windows of n/8
    layers hold several small-by-design layers at once: a squeeze-excite pair and the
    depthwise conv of each MBConv block): the third smallest, or the upper median where that
    is higher, against low outliers; the third largest, or the lower median, against high
    ones (both medians of a 4-layer window)."""
    ordered = sorted(values)
    k = max(min(2, len(ordered) - 1), len(ordered) // 2)
    return ordered[k] if against_low else ordered[len(ordered) - 1 - k]


def window_size(n: int) -> int:
    """Layers per window: 4 (or n/8 in deep models), never more than half the profile."""
    return max(1, min(n // 2, max(4, n // 8)))


class _GradientDepthRule(Rule):
    direction = ""
    applies_when_trained = False
    needs_probe = True

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None or not probe.grads:
            return
        profile = _gradient_profile(ctx, probe)
        # The layers closest to the output (output heads: a head takes the loss's error
        # directly, and a zero or small head scales everything below it) are not the
        # reference for the body: compare the body's own ends.
        body = [t for t in profile if not t[0].is_output]
        if len(body) == len(profile):  # the dataflow does not say which layer is the head
            body = body[:-1]
        if len(body) < 2:
            return
        # Weights sharing a module (an LSTM's) count as one layer.
        index = {layer: i for i, layer in enumerate(dict.fromkeys(p.layer for p, _, _ in body))}
        w = window_size(len(body))
        vanishing = self.direction == "vanishing"
        # Each side robust against what would fake a finding: for vanishing, low outliers in
        # the judged window and high ones in the reference; the other way round for exploding.
        ref_start = len(body) - w
        top = body[ref_start:]
        ref = _robust([r for _, _, r in top], not vanishing)
        # Windows that do not overlap the reference; the ratio of the two window values is
        # carried from window centre to window centre over the layers from the window's start
        # to the last: exponent (n - 1 - i) / (ref_start - i), below 2.
        judged = []
        for i in range(ref_start - w + 1):
            if index[top[0][0].layer] - index[body[i][0].layer] < self.opts["min_depth"]:
                continue
            m = _robust([r for _, _, r in body[i:i + w]], vanishing)
            judged.append((i, m, (m / ref) ** ((len(body) - 1 - i) / (ref_start - i))))
        if not judged:
            return
        i, value, rel = (min if vanishing else max)(judged, key=lambda t: t[2])
        severity = depth_severity(rel, vanishing, self.opts)
        if severity is None:
            return
        window = body[i:i + w]
        p = window[0][0]
        distance = index[top[-1][0].layer] - index[p.layer]
        span = p.name if w == 1 else f"{p.name} .. {window[-1][0].name} ({w} layers)"
        ref_span = top[0][0].name if w == 1 else f"{top[0][0].name} .. {top[-1][0].name}"
        effect = "early layers barely learn" if vanishing else "early layers take far larger steps"
        g = probe.grads[p.name]
        yield self.finding(
            p.name, f"gradient-to-weight ratio |dL/dW|/|W| (robust median of {span}) = {fmt(value)} "
                    f"against {fmt(ref)} at {ref_span}, {distance} layers closer to the output: "
                    f"{fmt(rel)}x over that depth; {effect}",
            severity=severity,
            evidence={"ratio": rel, "grad_norm": g.norm, "weight_norm": g.weight_norm,
                      "window": [q.name for q, _, _ in window], "reference": top[-1][0].name,
                      "reference_window": [q.name for q, _, _ in top], "reference_ratio": ref,
                      "loss": probe.loss,
                      "profile": [[q.name, r / ref] for q, _, r in profile][:64]},
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
    compared along depth over windows of w consecutive layers (4, n/8 in deep models, at most
    half the profile): each window's value is robust to two outliers (the third smallest
    ratio; against the reference, the third largest), and to fewer than half its layers in a
    wide window (the upper or lower median where that is further in), so the small-by-design
    gradients of an attention block's query/key pair, of a LayerScale branch or of the
    squeeze-excite pair and depthwise conv of an MBConv block (small at every depth alike)
    cannot make a finding. Layers whose only way to the output is a softmax's logits (a
    sub-network that only makes attention queries) are left out with the query/key projections. The
    reference is the window closest to the output with the output head left out (the head
    takes the loss's error directly). The ratio of a window starting at layer i to the
    reference (starting at r) is carried over the layers from i to the last (n - 1):
    (m_i / m_ref)^((n - 1 - i) / (r - i)), an exponent below 2, so a steady decay per layer
    reads about as it does layer by layer. Windows must not overlap the reference and start
    ``min_depth`` layers or more below it. Left out where the dataflow shows them: attention
    query/key projections (and layers making the logits of other softmax weights that average
    values: dynamic convolution kernels, attention pooling) and LayerScale branches (every layer of a branch behind a gain
    |gamma| < 1, since the gain scales all their gradients). Also left out: embeddings, normalisation,
    parameters with no or exactly zero gradient (see IA203, IA208), and layers a
    normalisation follows (BatchNorm divides their gradient by their output's batch std, so
    their |dW| / |W| ~ 1 / |W|^2 reflects their own scale, not the depth).

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
        order, zero, _ = _zero_layers(ctx, probe)
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


def _zero_layers(ctx, probe) -> tuple[list[str], list[str], set[str]]:
    """(layers in forward order, all-zero layers that stay blocked, all-zero layers blocked only
    for now). An all-zero layer that gets no gradient itself stays zero: what it blocks stays
    blocked (a zero head or a zero layer before tanh gets a gradient, changes at the first step
    and unblocks the layers below: legitimate). Unless its error is zero only because zero
    layers after it (ControlNet's zero convolutions) block it and those do get a gradient: they
    change at the first step, and the error reaches it then. A zero layer before ReLU blocks
    itself (relu'(0) = 0)."""
    order = list(dict.fromkeys(s.param for s in probe.sites if s.kind == "layer" and s.param))
    params = ctx.graph.params

    def zero_with(n: str, test) -> bool:
        g = probe.grads.get(n)
        return n in params and g is not None and g.received and test(g) and ctx.analysis(n).stats.all_zero

    learning = [i for i, n in enumerate(order) if zero_with(n, lambda g: g.norm > 0)]
    stuck = [n for n in order if zero_with(n, lambda g: g.norm == 0)]
    transient = {n for n in stuck if not _blocks_itself(params[n]) and any(i > order.index(n) for i in learning)}
    return order, [n for n in stuck if n not in transient], transient


def _gain_learns(ctx, probe, p: Param | None) -> bool:
    """Another non-bias parameter of the layer (a ScaledStdConv2d gain at zero, skip-init) gets a
    gradient: it changes at the first step, and the weights' gradient flows then."""
    if p is None:
        return False
    return any(q.layer == p.layer and q.name != p.name and q.role is not ParamRole.BIAS
               and (g := probe.grads.get(q.name)) is not None and g.norm > 0 for q in ctx.graph.params.values())


def _blocks_itself(p: Param) -> bool:
    """A zero layer whose own activation passes no error back at zero (ReLU family)."""
    return p.activation is not None and p.activation.name in ("relu", "relu6", "hardtanh")


class GradientExploding(_GradientDepthRule):
    """Gradients growing towards the input.

    What it checks
    --------------
    The same backward pass, gradient-to-weight ratio |dL/dW| / |W| and robust window values
    as IA206 (here robust to two high outliers in the judged window and two low ones in the
    reference), relative to the window closest to the output with the head left out; reports
    the largest growth.

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
      zero initialisation is legitimate (output head, residual branch end, adaLN-zero);
    - no gradient, but the copied units' weight rows differ and each unit read only n =
      fan_in x samples input values on the probe: a ReLU-family input is 0 about half the
      time, so units * 2^-n units read only zeros by chance (a 1x1 depthwise branch on a 1x1
      map: n = 4 at 4 samples, 16 of 256 units). Where no more units copy than about 4x that
      count, the probe's input cannot tell them apart: info, with n (a larger batch or the
      model's own input size can). A dead input that starves every unit stays an error;
    - no gradient, every unit constant over the batch, and the layer reads no data (every path
      back from it ends at parameters, not at an input) while an all-zero parameter no layer
      applies gets a gradient (BLIP-2's zero ``query_tokens``, read by its Q-Former): the first
      update moves those tokens and unblocks the layer, info naming them;
    - no gradient, every unit constant over the batch, and every path from the data to the layer
      passes an all-zero factor that gets a gradient: a layer weight or module tensor whose
      layer the probe saw constant (NFNet's ScaledStdConv2d gain at zero, skip-init), a norm
      scale measured at gain 0, a product's gain. The squeeze-excite after NFNet's conv3 reads
      zeros only until the first update moves the gain (measured: one SGD step gives every fc2
      row its own gradient): info naming the factors. A zero layer that gets no gradient itself
      (before a ReLU) is no such factor: what reads it stays an error.

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
        folded = renormalised_params(ctx.graph) if probe.grads is None else set()
        transient = _zero_layers(ctx, probe)[2] if probe.grads else set()
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
            legit = ConstantWeights._legitimate(ctx, p) if p is not None and _is_zero(ctx, p) else None
            if legit is None and s.param in folded:
                legit = ("measured in an eval-mode export whose BatchNorm statistics are fresh (folded "
                         "into the layers): in training, batch statistics renormalise the signal")
            if g is None or not g.group_count:  # e.g. ONNX: forward only
                yield self.finding(s.name, head + "; no gradient information to tell whether training "
                                   "separates them" + (f" ({legit})" if legit else ""), evidence=evidence,
                                   fix=None if legit else fix,
                                   severity=Severity.INFO if legit else Severity.WARNING)
                continue
            evidence.update(group_rows=g.group_rows, zero_gradient_rows=g.group_zero_rows,
                            distinct_gradient_rows=g.distinct_rows)
            if g.group_zero_rows == g.group_rows and (s.param in transient or _gain_learns(ctx, probe, p)):
                yield self.finding(
                    s.name, head + "; their weights get no gradient only while a zero that itself gets "
                                   "gradients (the zero layers after them, or their layer's own gain: "
                                   "skip-init) holds them: the first update unblocks them",
                    evidence=evidence, fix=None, severity=Severity.INFO)
            elif g.group_zero_rows == g.group_rows and s.constant_units == s.units \
                    and (tokens := _learned_zero_input(ctx, probe, s)):
                yield self.finding(
                    s.name, head + f"; they read a learned constant, not the data (all-zero {tokens[0]}, "
                                   "which gets a gradient): their weights get no gradient only while it "
                                   "is zero, and the first update moves it and unblocks them",
                    evidence={**evidence, "learned_inputs": tokens}, fix=None, severity=Severity.INFO)
            elif g.group_zero_rows == g.group_rows and s.constant_units == s.units \
                    and (zeros := _zero_factors_before(ctx, probe, s)):
                yield self.finding(
                    s.name, head + f"; every path from the data to them passes an all-zero factor that "
                                   f"gets a gradient ({_names(zeros)}: skip-init, a zero gain at the end "
                                   "of a residual branch): their weights get no gradient only while it is "
                                   "zero, and the first update moves it and unblocks them",
                    evidence={**evidence, "zero_factors": zeros}, fix=None, severity=Severity.INFO)
            elif g.group_zero_rows == g.group_rows and (reads := _too_few_reads(ctx, s, p)):
                yield self.finding(
                    s.name, head + f"; their weights receive no gradient, but are not copies: the "
                                   f"inputs they read are zero at all {reads} values each unit reads on "
                                   f"this probe (fan_in {fmt(p.fan_in)} x {s.samples} samples), which a "
                                   f"ReLU-family input is by chance for ~{_chance(s, reads):.3g} of "
                                   f"{s.units} units: too few values to tell the units apart (a larger "
                                   "batch or the model's own input size can)",
                    evidence={**evidence, "values_read": reads, "chance_copies": _chance(s, reads)},
                    fix=None, severity=Severity.INFO)
            elif g.group_zero_rows == g.group_rows:
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


def _learned_zero_input(ctx, probe, site) -> list[str]:
    """The all-zero learned inputs that get a gradient, where the site's layer reads no data."""
    node = next((n for n in ctx.graph.nodes if n.kind == "layer" and n.param == site.param), None)
    if node is None or not reads_no_data(ctx.graph, node.name):
        return []
    return learned_zero_inputs(ctx.graph, probe.grads, lambda n: ctx.analysis(n).stats.all_zero)


def _zero_factors_before(ctx, probe, site) -> list[str]:
    """The all-zero factors that get a gradient on every path from the data to the site's layer
    (:func:`initaudit.learned_inputs.zero_factors_before`)."""
    node = next((n for n in ctx.graph.nodes if n.kind == "layer" and n.param == site.param), None)
    if node is None:
        return []
    return zero_factors_before(ctx.graph, node.name, probe.grads, probe.sites,
                               lambda n: ctx.analysis(n).stats.all_zero)


def _names(names: list[str], most: int = 2) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _chance(site, reads: int) -> float:
    """Units expected to read only zeros by chance: each of ``reads`` input values is a
    ReLU-family output, exactly 0 for about half the inputs: units * 2^-reads."""
    return site.units * 2.0 ** -reads


def _too_few_reads(ctx, site, p: Param | None) -> int | None:
    """The number of input values each unit of ``site`` read on the probe (fan_in x samples)
    where its copies are explained by that number: the copied units' weight rows differ (the
    copying is not the weights'), and no more units copy than about four times the count
    expected by chance, units * 2^-reads (MobileOne's 1x1 depthwise branch on a 1x1 map: one
    input value per unit and sample, 4 samples, 16 of 256 units expected). None otherwise
    (a dead input that starves every unit is still an error)."""
    if p is None or not p.fan_in or not site.samples or not site.identical_groups:
        return None
    reads = int(p.fan_in * site.samples)
    if site.identical_units + 1 > 4 * max(1.0, _chance(site, reads)):
        return None
    import torch

    w = ctx.graph.load_tensor(p.name).detach()
    rows = w.movedim(p.units_dim or 0, 0).reshape(w.shape[p.units_dim or 0], -1)
    for group in site.identical_groups:
        if any(torch.equal(rows[group[0]], rows[i]) for i in group[1:] if i < rows.shape[0]):
            return None
    return reads
