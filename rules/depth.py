"""Depth rules on the static signal prediction (IA109, IA110) and the grading shared by every
depth rule, static, measured or gradient (``depth_severity``)."""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.graph import ParamRole, renormalised_downstream
from initaudit.heads import head_predecessor
from initaudit.roles import renormalised_params
from initaudit.rule import Finding, Rule, Severity, fmt

GUESSED_NOTE = ("; the dataflow was guessed from module registration order, so this is at most "
                "info")


def head_input_shrinks(ctx) -> dict[str, float]:
    """Per layer of an output head (``Param.feeds_head``: a head input, or a chain of head layers
    after the trunk's last norm, :mod:`initaudit.heads`): the product of the shrinks
    r = std / expected std < 1 of the head's layers up to and including it. A head's shrink
    only scales the initial outputs (as a small classifier does), so the depth rules take it out
    and judge the signal that enters the head: ratio / prod r; a collapse before it (a gate that
    closes, a stack drawn small) stays in."""
    own = {}
    for p in ctx.graph.weights():
        if not p.feeds_head:
            continue
        a = ctx.analysis(p.name)
        if a.stats.nonfinite or a.stats.std == 0:
            continue
        res = ctx.assessment(p.name)
        if res is not None and res.ratio and res.ratio < 1:
            own[p.name] = res.ratio
    nodes = ctx.graph.nodes
    by_name = {n.name: n for n in nodes}
    heads = {n.name for n in nodes if n.kind == "layer" and n.param in ctx.graph.params
             and ctx.graph.params[n.param].feeds_head}
    through: dict[str, float] = {}  # head node -> the shrink of its chain so far
    out: dict[str, float] = {}
    for node in nodes:  # topological order: a chain's earlier layers first
        if node.name not in heads:
            continue
        before = head_predecessor(node, by_name, heads)
        through[node.name] = own.get(node.param, 1.0) * through.get(before, 1.0)
        if through[node.name] < 1:
            out.setdefault(node.param, through[node.name])
    return out


HEAD_NOTE = " (the output head's own shrink {r}x taken out: it only scales the initial outputs)"


# A spread at least this large (absolute std, var >= 10 eps for the usual eps 1e-5) is reset by
# the normalisation that reads it: s / sqrt(s^2 + eps) >= 0.995.
NORM_RESET_STD = 0.01


def reset_by_norm(param, std: float, renormalised: set[str]) -> bool:
    """Whether a layer's output, at absolute std ``std``, reaches a normalisation that divides
    its scale away: straight (``Param.normalized_after``) or through only layers, positively
    homogeneous activations and shape ops (``renormalised``, from
    :func:`initaudit.graph.renormalised_downstream`), with var >> eps. A fall there shrinks
    nothing that goes on, forward or backward (the norm's 1/s cancels the stack's s in the
    gradient). Below ``NORM_RESET_STD`` the norm's eps eats the signal and it is judged (the
    stack's last layer before the norm reads the smallest spread, so a fall to eps is caught
    there)."""
    return (param.normalized_after or param.name in renormalised) and std == std and std >= NORM_RESET_STD


def static_text(ratio: float, signal) -> str:
    """What the static prediction says beside a measured ratio: the number, or why there is none
    (a nan prediction is no number: the op it could not see through, or a constant start)."""
    if ratio == ratio:
        return f"static prediction {fmt(ratio)}x"
    why = f"the signal passes {signal.unknown_after}, which it does not model" if signal.unknown_after \
        else "its segment starts from a constant signal"
    return f"no static prediction: {why}"


def depth_severity(ratio: float, vanishing: bool, opts: dict) -> Severity | None:
    """Grading shared by the depth rules (static, measured, gradient): a warning past
    ``warn_ratio``, an error past ``error_ratio`` (below them when vanishing, above when
    exploding), None inside."""
    def past(limit: float) -> bool:
        return ratio < limit if vanishing else ratio > limit

    if not past(opts["warn_ratio"]):
        return None
    return Severity.ERROR if past(opts["error_ratio"]) else Severity.WARNING


def zero_scale_origins(ctx) -> set[str]:
    """Segment origins that are normalisations with an all-zero scale (a zero-init last BatchNorm
    gamma, TResNet's and torchvision's ``zero_init_residual``): their output is the constant shift,
    so spreads and correlations measured from there have no reference (x / 0). IA108 judges the
    zero gamma itself."""
    out = set()
    for node in ctx.graph.nodes:
        scales = [n for n in node.norm_params if n in ctx.graph.params
                  and ctx.graph.params[n].role is ParamRole.NORM_SCALE]
        if node.kind == "norm" and scales and all(ctx.analysis(n).stats.all_zero for n in scales):
            out.add(node.name)
    return out


class _SignalRule(Rule):
    """Shared check of the static signal prediction; subclasses pick the direction."""

    direction = ""
    applies_when_trained = False
    scope = "model"  # the layer only says where the collapse is worst; baselines leave it out

    def check(self, ctx) -> Iterator[Finding]:
        # Small by design, so not judged for vanishing: a residual branch, its last layer above
        # all (GPT-2's scaled projections, Fixup, zero-init, LayerScale), a gate or attention
        # scores (the trunk they add to or scale carries the signal past them), an output head
        # (small logits are a uniform start). An all-zero layer is IA102's to judge.
        folded = renormalised_params(ctx.graph)  # segments across a folded BatchNorm
        params, reset = ctx.graph.params, renormalised_downstream(ctx.graph)
        # Unknown predictions (after an op nothing models) are skipped.
        zero = zero_scale_origins(ctx)
        profile = [s for s in ctx.signal if s.depth >= self.opts["min_depth"] and s.param not in folded
                   and s.ratio == s.ratio and s.origin not in zero
                   and not (self.direction == "vanishing" and (
                       s.side_branch or params[s.param].residual_end or params[s.param].is_output
                       or reset_by_norm(params[s.param], s.predicted_std, reset)
                       or ctx.analysis(s.param).stats.all_zero))]
        if not profile:
            return
        head = head_input_shrinks(ctx) if self.direction == "vanishing" else {}
        pick = min if self.direction == "vanishing" else max
        worst = pick(profile, key=lambda s: s.ratio / head.get(s.param, 1.0))
        r = worst.ratio / head.get(worst.param, 1.0)
        severity = depth_severity(r, self.direction == "vanishing", self.opts)
        if severity is None:
            return
        guessed = ctx.graph.capture == "module-order"
        if guessed:
            severity = Severity.INFO
        start = "the input" if worst.origin == "input" else worst.origin
        verb = "falls" if self.direction == "vanishing" else "grows"
        yield self.finding(
            worst.layer, f"predicted activation std {verb} to {fmt(r)}x its value at {start} after "
                         f"{worst.depth} layers (mean-field estimate, before any forward pass)"
                         + (HEAD_NOTE.format(r=fmt(head[worst.param])) if worst.param in head else "")
                         + GUESSED_NOTE * guessed,
            severity=severity,
            evidence={"ratio": r, "depth": worst.depth, "predicted_std": worst.predicted_std,
                      "head_input_shrink": head.get(worst.param),
                      "origin": worst.origin, "param": worst.param},
            fix="initialise each layer for the activation that follows it (IA104's fixes), or add normalisation")


class PredictedVanishing(_SignalRule):
    """Signal spread predicted to collapse through depth, before any forward pass.

    What it checks
    --------------
    The mean-field recursion over the model's dataflow, from standardised inputs:
    q_l = fan_in * E[W_l^2] * E[phi(h_{l-1})^2] + E[b_l^2], with E[phi(h)^2] integrated by
    Gauss-Hermite quadrature for the actual activation; normalisation resets q, residual adds
    sum the branches. At finite width each input's q_l is carried as a distribution: a dense
    layer's energy (1/n) sum_i phi_i^2 fluctuates with relative variance (K - 1)/n, K =
    E[phi^4] / E[phi^2]^2, so a convex map (GELU/SiLU at He gain) keeps the batch's spread above
    the mean-field value, E[f(q)] ~ f(q) + f''(q) Var(q) / 2. A chain of dense layers from the
    input whose weights are in memory (a module, a small checkpoint; up to 50M weight elements,
    never tensors a worker pool streams) is carried unit by unit through its actual weights:
    per-unit means m_{l+1} = W_l E[phi(h_l)] + b_l and variances v_{l+1} = (W_l o W_l) Var[phi(h_l)]
    under N(m_i, v_i), with the common mode shared by all units of one input and each input's
    energy fluctuation split off, so the weight draw in hand is predicted, not the typical one.
    Reports the deepest collapse of sqrt(q_l / q_start) along a segment that
    starts at the input, an embedding or a normalisation, once it spans ``min_depth`` layers.
    q_start is what the segment's first layer reads: constants before it (``x / 255``, an
    embedding times sqrt(d_model)) set the data's scale by design and are part of the start.
    Not judged: layers on a side branch of a trunk (inside a residual branch x + f(x), a gate
    x * sigmoid(g(x)), the query and key of attention), residual branch ends and output heads.
    A layer of an output head (one feeding only the output layer, or a chain of layers after
    the trunk's final norm down to it: DETR's and YOLOS's 3-layer box MLP) is judged with the
    head's own shrinks r < 1 (std / its scheme's) taken out, ratio / prod r: with zero biases
    and ReLU-like activations f(s W x) ~ s f(W x), so they only scale the initial outputs; what
    came before the head is the signal's fall. Nor is a fall judged where a normalisation resets
    it: a layer whose output reaches a norm through only layers, ReLU-family activations and
    shape ops, at an absolute std s >= 0.01 (s / sqrt(s^2 + eps) >= 0.995 for eps 1e-5), as in
    a MBConv's conv -> act -> conv -> BatchNorm; below that the norm's eps eats the signal.
    The trunk carries the signal past them, so a small branch (LayerScale, BERT's 0.02 at small
    width), a gate at sigmoid(0) = 1/2, uniform attention or small logits are starts by
    design. A gate counts as one step on its trunk's segment, so a gate that closes collapses
    the trunk where it is judged.

    Why it matters
    --------------
    If each layer multiplies the second moment by chi < 1, after L layers the signal is
    chi^(L/2) of the input's std and the gradients shrink the same way: the first layers stop
    learning. Xavier before ReLU gives chi = 1/2 per layer: 20 layers leave 0.1% of the signal.

    Example
    -------
    ```python
    layers = []
    for _ in range(10):
        layers += [nn.Linear(100, 100), nn.ReLU()]
    model = nn.Sequential(*layers)
    for m in model:
        if isinstance(m, nn.Linear):
            torch.nn.init.normal_(m.weight, std=0.05)
            torch.nn.init.zeros_(m.bias)
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
    warn_ratio (float, default 0.2): predicted std ratio below which to warn.
    error_ratio (float, default 0.01): ratio below which the finding is an error.
    min_depth (int, default 2): layers a segment must span before it is judged.
    """

    code = "IA109"
    name = "predicted-vanishing"
    category = "vanishing"
    severity = Severity.WARNING
    options = {"warn_ratio": 0.2, "error_ratio": 0.01, "min_depth": 2}
    direction = "vanishing"


class PredictedExploding(_SignalRule):
    """Signal spread predicted to grow through depth, before any forward pass.

    What it checks
    --------------
    The same mean-field recursion as IA109 (q_l = fan_in * E[W_l^2] * E[phi(h_{l-1})^2] +
    E[b_l^2]), reporting the largest growth of sqrt(q_l / q_start) along a segment that spans
    ``min_depth`` layers or more.

    Why it matters
    --------------
    With a per-layer factor chi > 1 the signal grows as chi^(L/2): N(0, 1) weights in a
    100-wide ReLU net give chi = 50 per layer, so five layers multiply the std by 1.8e4,
    overflowing fp16 and saturating every bounded unit downstream.

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
    warn_ratio (float, default 5.0): predicted std ratio above which to warn.
    error_ratio (float, default 100.0): ratio above which the finding is an error.
    min_depth (int, default 2): layers a segment must span before it is judged.
    """

    code = "IA110"
    name = "predicted-exploding"
    category = "exploding"
    severity = Severity.WARNING
    options = {"warn_ratio": 5.0, "error_ratio": 100.0, "min_depth": 2}
    direction = "exploding"
