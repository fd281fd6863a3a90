"""Probe rules on the backward pass: gradient depth (IA206/IA207). Units that copy each other
and whether training separates them (IA208) are in :mod:`initaudit.rules.symmetry`, parameters
no gradient reaches (IA209) in :mod:`initaudit.rules.unused`."""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.rules.probe_common import _probe, thin_between, thin_norms, thin_note
from initaudit.rules.depth import depth_severity

from initaudit.branches import logit_only, output_reach
from initaudit.graph import OpKind, Param, ParamRole
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


def _side_branch_params(ctx) -> set[str]:
    """Weights on a side branch of a trunk, as the static prediction marks them
    (``LayerSignal.side_branch``, from :func:`initaudit.graph.side_branch_nodes`: inside a
    residual branch, a gate, attention's query and key): the trunk carries the error past them
    unattenuated (d(x + f(x))/dx = I + df/dx), so how small their gradient is says how much their
    branch contributes at init, not how deep they sit (IA109 and IA204 leave them out alike)."""
    if not ctx.graph.has_architecture:
        return set()
    return {s.param for s in ctx.signal if s.side_branch}


def _gain_below_one(ctx, name: str) -> bool:
    try:
        st = ctx.analysis(name).stats
    except KeyError:
        return False
    return max(abs(st.min), abs(st.max)) < 1.0


def _gradient_profile(ctx, probe, vanishing: bool) -> list[tuple[Param, int, float]]:
    """(param, position, gradient-to-weight ratio) of weight layers in forward order.

    Position = index of the layer's first call site in ``probe.sites`` (forward order). Left out: embeddings (only
    the rows of tokens seen get a gradient), normalisation, parameters with no, zero or
    non-finite gradient (blocked below a zero-initialised layer: IA203/IA208's subject),
    all-zero weights (ratio undefined), weights small by design (attention query/key,
    LayerScale branches, where the dataflow shows them), for vanishing the layers of side
    branches (:func:`_side_branch_params`) and weights a normalisation follows
    (BatchNorm divides their gradient by their output's batch std, so |dW|/|W| scales as
    1/|W|^2, their own scale, not the depth).
    """
    first_call: dict[str, int] = {}
    for i, s in enumerate(probe.sites):
        if s.kind == "layer" and s.module is not None and s.module not in first_call:
            first_call[s.module] = i
    small = _small_by_design(ctx.graph, lambda name: _gain_below_one(ctx, name))
    if vanishing:  # as IA109/IA204 judge them: a small branch is a start by design
        small |= _side_branch_params(ctx)
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

    def _worst(self, judged: list[tuple]) -> tuple[tuple, Severity] | None:
        """The judged window furthest past the thresholds, with its severity; None inside."""
        worst = (min if self.direction == "vanishing" else max)(judged, key=lambda t: t[2], default=None)
        severity = worst and depth_severity(worst[2], self.direction == "vanishing", self.opts)
        return (worst, severity) if severity else None

    def _judge(self, body: list[tuple], thin: list) -> tuple | None:
        """The worst window of ``body`` (layers that reach the same outputs) against the window
        closest to the output: (window, value, rel, thin norms crossed, severity, index, top, ref,
        w), severity INFO where the error crosses a thin norm; None inside the thresholds."""
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
            judged.append((i, m, (m / ref) ** ((len(body) - 1 - i) / (ref_start - i)),
                           thin_between(thin, body[i][1], top[-1][1])))
        found = self._worst([t for t in judged if not t[3]]) or self._worst(judged)
        if found is None:
            return None
        (i, value, rel, crossed), severity = found
        return (body[i:i + w], value, rel, crossed, Severity.INFO if crossed else severity, index, top,
                ref, w)

    def check(self, ctx) -> Iterator[Finding]:
        probe = _probe(ctx)
        if probe is None or not probe.grads:
            return
        profile = _gradient_profile(ctx, probe, self.direction == "vanishing")
        # The layers closest to the output (output heads: a head takes the loss's error
        # directly, and a zero or small head scales everything below it) are not the
        # reference for the body: compare the body's own ends.
        body = [t for t in profile if not t[0].is_output]
        if len(body) == len(profile):  # the dataflow does not say which layer is the head
            body = body[:-1]
        # Only layers that reach the same outputs are compared: the loss's error at a returned
        # hidden state reaches the layers in front of it, not the heads behind it.
        reach = output_reach(ctx.graph.nodes) if ctx.graph.has_architecture else {}
        groups: dict[int, list] = {}
        for t in body:
            groups.setdefault(reach.get(t[0].name, 0), []).append(t)
        thin, vanishing = thin_norms(probe), self.direction == "vanishing"
        results = [r for g in groups.values() if len(g) >= 2 for r in [self._judge(g, thin)] if r]
        if not results:
            return
        # a judged comparison first (one crossing no thin norm), then the furthest past the limits
        window, value, rel, crossed, severity, index, top, ref, w = max(
            results, key=lambda r: (not r[3], -r[2] if vanishing else r[2]))
        p = window[0][0]
        distance = index[top[-1][0].layer] - index[p.layer]
        span = p.name if w == 1 else f"{p.name} .. {window[-1][0].name} ({w} layers)"
        ref_span = top[0][0].name if w == 1 else f"{top[0][0].name} .. {top[-1][0].name}"
        effect = "early layers barely learn" if vanishing else "early layers take far larger steps"
        g = probe.grads[p.name]
        yield self.finding(
            p.name, f"gradient-to-weight ratio |dL/dW|/|W| (robust median of {span}) = {fmt(value)} "
                    f"against {fmt(ref)} at {ref_span}, {distance} layers closer to the output: "
                    f"{fmt(rel)}x over that depth; {thin_note(crossed) if crossed else effect}",
            severity=severity,
            evidence={"ratio": rel, "grad_norm": g.norm, "weight_norm": g.weight_norm,
                      "window": [q.name for q, _, _ in window], "reference": top[-1][0].name,
                      "reference_window": [q.name for q, _, _ in top], "reference_ratio": ref,
                      "loss": probe.loss, "thin_norms": [c.module or c.name for c in crossed],
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
    |gamma| < 1, since the gain scales all their gradients), and every layer on a side branch of
    a trunk (inside a residual branch, a squeeze-excite or other gate, attention's query and key,
    as IA109 and IA204 leave them out): the trunk carries the error past them unattenuated,
    d(x + f(x))/dx = I + df/dx, so a branch layer's small ratio measures how much its branch
    contributes at init (GLPN's deepest stage, ConViT's blocks before the class token appears),
    not how deep it sits (so, as in IA109/IA204, a vanishing stack inside one residual branch is
    not judged here; IA104 still grades its layers' scale). Also left out: embeddings, normalisation,
    parameters with no or exactly zero gradient (see IA203, IA208), and layers a
    normalisation follows (BatchNorm divides their gradient by their output's batch std, so
    their |dW| / |W| ~ 1 / |W|^2 reflects their own scale, not the depth). Layers are compared
    only with layers reaching the same model outputs (the error at a returned hidden state,
    YOLOS's ``last_hidden_state``, reaches the layers in front of it, not the heads behind it).
    A window whose error from the reference passes a train-mode BatchNorm/InstanceNorm that took
    its statistics over fewer than 8 values (batch 2 at a 1 x 1 map) is not judged: info naming
    the norm (its backward divides by the std s of n values: E[sigma^2 / s^2] = (n-1) / (n-3)).

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
