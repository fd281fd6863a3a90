"""Static rules on weight values: non-finite, constant, uninitialised, mean shift."""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.branches import zero_act_residual_end
from initaudit.attention_scores import score_projections
from initaudit.graph import OpKind, ParamRole
from initaudit.rule import Finding, Rule, Severity, fmt

_MODULATION_HINTS = ("adaln", "ada_ln", "modulation", "zero_conv", "zero_linear")


class NonFiniteValues(Rule):
    """NaN or Inf in a stored tensor.

    What it checks
    --------------
    Every tensor (weights, biases, normalisation parameters and running statistics) for
    elements that are NaN or +/-Inf.

    Why it matters
    --------------
    One non-finite weight makes every activation it touches non-finite: y = W x is NaN as soon
    as any W_ij is NaN, and the loss and every gradient follow. Training cannot recover.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    ```

    Fix
    ---
    ```python
    with torch.no_grad():
        torch.nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    ```
    Re-initialise the tensor; if it came from a checkpoint, find the step that wrote NaN
    (a division by zero, an overflow in fp16).

    Options
    -------
    None.
    """

    code = "IA101"
    name = "nonfinite-values"
    category = "nonfinite"
    severity = Severity.ERROR

    def check(self, ctx) -> Iterator[Finding]:
        for p in ctx.graph.params.values():
            s = ctx.analysis(p.name).stats
            if s.nonfinite:
                yield self.finding(
                    p.name, f"{s.nonfinite} of {s.numel} values are NaN or Inf",
                    evidence={"nonfinite": s.nonfinite, "numel": s.numel},
                    fix="re-initialise this tensor (or restore it from an earlier checkpoint)")


class ConstantWeights(Rule):
    """A weight tensor with (near) zero spread: all zeros or one repeated value.

    What it checks
    --------------
    Weight tensors whose elements are all equal (max |w - w_0| <= ``atol``). Graded by where the
    tensor sits (docs/legitimate-patterns.md): a hidden layer or an embedding is an error; a
    zero-initialised output head, the last layer of a residual branch (also through one
    activation before the add, where act'(b) != 0 on every unit: a folded zero last BN gamma in
    an exported CSPDarkNet block; relu'(0) = 0 stays an error), the last layer of a
    branch that gates the signal passing it at a non-zero value while that layer outputs 0
    (``x * exp(tanh(s(x)))`` at exp(0) = 1, a flow's coupling; evaluated through the recorded
    elementwise ops, zero bias), or an adaLN-zero style
    modulation layer is legitimate and reported as info, as is a zero query or key projection
    whose partner across Q K^T is not zero (muP's zero query: uniform attention at the start, a
    distinct gradient per unit through the keys; both zero get no gradient and stay an error),
    and so is a zero parameter that no
    layer of the recorded dataflow applies as its weight (an additive table such as LeViT's
    attention biases). Biases, normalisation parameters and per-channel vectors of any rank
    ((H, 1, 1) temperatures, (1, D) tokens) are not judged here. In a checkpoint with no
    architecture, a matrix that narrows to a width no other weight reads is read as an output head,
    and a zero layer whose place the file cannot prove is a warning that says so: a hidden layer
    (dead) and a zero-initialised output, residual-branch end or zero convolution (ControlNet's)
    look alike by name and shape; so do a table read by index and state forward never reads
    (a codebook's running averages: a state dict holds buffers too). A zero layer among non-zero peers (the tensors of the same name
    in the other blocks: ``layer.0.fc.weight`` beside ``layer.1.fc.weight``; the other layers of
    its chain, ``2.weight`` beside ``0.weight`` and ``4.weight``, unless it is the chain's last
    layer, as a flow coupling's ``s.2`` beside ``s.0``) follows no zero-init convention and stays
    an error. A low-rank update W + B A read from shapes (LoRA: W (out, in),
    A (r, in), B (out, r) under one parent, or an adapter file of such pairs only,
    ``initaudit.loaders.low_rank``) has B as the end of a
    branch added to W's output, so B = 0 is legitimate; A = 0 with B = 0 is an error (both
    factors' gradients are 0: the update never leaves zero).

    Why it matters
    --------------
    With W = c for every element, every unit computes the same y_i = c * sum_j x_j: the units
    are copies, and dL/dW_i differs between units only through the layers above. With c = 0
    before ReLU and zero bias, the units output relu(0) = 0, the derivative relu'(0) = 0 blocks
    every gradient, and the layer stays dead forever; before tanh they do get gradients, but
    identical ones per unit unless the layer above breaks the symmetry.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    torch.nn.init.zeros_(model[2].weight)
    ```

    Fix
    ---
    ```python
    torch.nn.init.kaiming_normal_(model[2].weight, nonlinearity="relu")
    ```

    Options
    -------
    atol (float, default 0.0): spread at or below which a tensor counts as constant.
    """

    code = "IA102"
    name = "constant-weights"
    category = "constant"
    severity = Severity.ERROR
    options = {"atol": 0.0}

    def check(self, ctx) -> Iterator[Finding]:
        applied = _applied_by_a_layer(ctx.graph)
        scores = score_projections(ctx.graph) if ctx.graph.has_architecture else {}
        for p in ctx.graph.weights():
            s = ctx.analysis(p.name).stats
            if s.nonfinite or s.numel < 2 or (s.max - s.min) > self.opts["atol"] or no_layer(ctx, p):
                continue
            what = "all zeros" if s.all_zero else f"every element equals {fmt(s.mean)}"
            legit = self._legitimate(ctx, p) or self._zero_score(ctx, p, scores) if s.all_zero else None
            if legit is None and applied is not None and p.kind is OpKind.OTHER and p.name not in applied:
                legit = ("a parameter no layer applies as its weight (an additive table such as a "
                         "relative position bias, or a gain): no unit mixes inputs through it, so equal "
                         "values make no copies of units, and it receives its own gradient")
            if legit:
                yield self.finding(p.name, f"{what}: {legit}", severity=Severity.INFO,
                                   evidence={"value": s.mean, "position": legit})
                continue
            unplaced = self._unplaced_zero(ctx, p) if s.all_zero else None
            if unplaced:
                yield self.finding(p.name, f"all zeros: {unplaced}", severity=Severity.WARNING,
                                   evidence={"value": s.mean, "numel": s.numel, "position": "unknown"},
                                   fix="pass --model pkg.mod:factory (the architecture) to tell; if it is "
                                       "a hidden layer: " + _init_fix(p))
                continue
            after = f" before {p.activation}" if p.activation else ""
            why = ("every unit computes the same output, so training cannot tell them apart"
                   if s.max != 0 else "every unit outputs the same value")
            if s.max == 0 and p.activation and p.activation.name in ("relu", "relu6"):
                why += _relu_bias_clause(ctx, p)
            yield self.finding(
                p.name, f"{what} in a {'embedding' if p.kind is OpKind.EMBEDDING else 'hidden layer'}"
                        f"{after}: {why}",
                evidence={"value": s.mean, "numel": s.numel},
                fix=_init_fix(p))

    @staticmethod
    def _unplaced_zero(ctx, p) -> str | None:
        """In a checkpoint with no architecture, why a zero layer's place cannot be told: no
        peer says otherwise (the tensors of the same name in the other blocks, ``layer.1...``
        for ``layer.0...``, are zero too or there are none), so it may be a hidden layer (an
        error) or a zero-initialised output, residual-branch end or zero convolution
        (ControlNet's, legitimate). A zero layer among non-zero peers is no convention: None
        (an error). A table read as an embedding only by its name is no more placed: read by
        index (every id the same vector: an error), or a tensor forward never reads (a state
        dict holds buffers too: a codebook's running averages, EnCodec's ``embed_avg`` beside
        the ``embed`` it reads) or an additive table (a zero position table): the file cannot
        tell which, and it says so as a warning."""
        if ctx.graph.has_architecture or _both_factors_zero(ctx, p):
            return None
        peers = _peers(p.name, [q.name for q in ctx.graph.weights()])
        if any(not ctx.analysis(q).stats.all_zero for q in peers):
            return None
        alike = f"; its {len(peers)} peer(s) in the other blocks are zero too" if peers else ""
        if p.kind is OpKind.EMBEDDING:
            return ("a table read by index (every id gets the same vector: an error), an additive table "
                    "(a zero position table, legitimate) or state forward never reads (a state dict holds "
                    f"buffers too): a checkpoint with no architecture cannot tell{alike}")
        return ("a hidden layer (dead) or a zero-initialised output, residual-branch end or zero "
                f"convolution (legitimate): a checkpoint with no architecture cannot tell{alike}")

    @staticmethod
    def _zero_score(ctx, p, scores: dict[str, set[str]]) -> str | None:
        """A zero query or key projection (muP's zero query) whose partner across Q K^T is not
        zero: the logits start at 0, attention uniform, and its gradient, dL/dlogits times the
        partner's output, is distinct per unit. With both sides zero neither gets a gradient."""
        partners = scores.get(p.name, set()) - {p.name}
        if not partners or all(ctx.analysis(q).stats.all_zero for q in partners):
            return None
        return ("zero-initialised query or key (muP's zero query, legitimate: the attention starts "
                "uniform, and each unit gets its own gradient through the non-zero "
                f"{', '.join(sorted(partners))})")

    @staticmethod
    def _legitimate(ctx, p) -> str | None:
        if p.is_output:
            return "zero-initialised output layer (legitimate: logits start at the bias)"
        if p.residual_end:
            return "zero-initialised last layer of a residual branch (legitimate: the block starts as identity)"
        if (act := zero_act_residual_end(ctx.graph, p.name)) is not None:
            return (f"zero-initialised last layer of a residual branch, {act} before the add (a zero "
                    "last BN gamma folded in, legitimate: the block starts as identity plus the "
                    f"constant {act}(b), and {act}'(b) != 0 gives each unit its own gradient)")
        if p.gate_start is not None and _bias_is_zero(ctx, p):
            return (f"zero-initialised last layer of a branch that gates the signal passing it, at "
                    f"{fmt(p.gate_start)} while the layer outputs 0 (legitimate: the block starts as a fixed "
                    "scaling of its input, as a flow's coupling starts as the identity, and each unit "
                    "gets its own gradient)")
        if any(h in p.name.lower() for h in _MODULATION_HINTS):
            return "zero-initialised modulation layer (adaLN-zero style, legitimate)"
        return None


def _both_factors_zero(ctx, p) -> bool:
    """``p`` is the down factor A of a low-rank update W + B A (initaudit.loaders.low_rank) whose
    up factor B is zero too: dL/dA = B^T g x^T = 0 and dL/dB = g (A x)^T = 0, so the update never
    leaves zero (an error, not a place the file cannot tell)."""
    from initaudit.loaders.low_rank import low_rank_updates

    if len(p.shape) != 2 or p.shape[0] >= p.shape[1]:  # A is (r, in), r < in
        return False
    return any(t.down is p and ctx.analysis(t.up.name).stats.all_zero for t in low_rank_updates(ctx.graph.params))


def _peers(name: str, names: list[str]) -> list[str]:
    """The same layer in the other blocks: names that differ from ``name`` only in container
    indices (whole integer segments; ``fc1`` and ``fc2`` are two layers, not two blocks). An
    index right before the tensor's own name is the layer's place in a chain (``s.0``, ``s.2``
    of a Sequential): those are peers too, except for the chain's last layer, the one every
    zero-init convention zeroes (a branch's end, an output), whose earlier layers say nothing
    about it."""
    segs = name.split(".")
    own = len(segs) - 2
    blocks, chain = [], []
    for other in names:
        o = other.split(".")
        if other == name or len(o) != len(segs):
            continue
        diff = [i for i, (a, b) in enumerate(zip(segs, o)) if a != b]
        if not all(segs[i].isdigit() and o[i].isdigit() for i in diff):
            continue
        if diff == [own]:
            chain.append(other)
        elif own not in diff:
            blocks.append(other)
    last = all(int(q.split(".")[own]) < int(segs[own]) for q in chain)
    return blocks if chain and last else blocks + chain


def _applied_by_a_layer(graph) -> set[str] | None:
    """Parameters a layer or embedding node of the recorded dataflow applies as its weight
    (None without a dataflow: then nothing can be said about how a tensor is used)."""
    if not graph.has_architecture or not graph.nodes:
        return None
    return {n for node in graph.nodes if node.kind in ("layer", "embedding") for n in (node.param, node.bias) if n}


def _bias(ctx, p):
    return next((q for q in ctx.graph.params.values() if q.layer == p.layer and q.role is ParamRole.BIAS), None)


def constant_bias_start(ctx, p, std: float, share: float = 0.01) -> float | None:
    """The constant c a layer starts as, where its bias is c != 0 on every unit and its weights
    are too small to move it: a unit's input-dependent part has std ~ std(W) * sqrt(fan_in) for
    unit-variance inputs, below ``share`` * |c|. That is a gate or scale initialised to a fixed
    value (gMLP's spatial gating unit: W ~ N(0, 1e-6^2), b = 1, so u * (W v + b) starts as u),
    not a layer drawn too small by mistake (its bias would be zero or drawn too). Else None."""
    bias = _bias(ctx, p)
    if bias is None or not p.fan_in:
        return None
    s = ctx.analysis(bias.name).stats
    if s.nonfinite or s.all_zero or s.std != 0 or s.numel < 2:
        return None
    return s.mean if std * p.fan_in ** 0.5 < share * abs(s.mean) else None


def _bias_is_zero(ctx, p) -> bool:
    bias = _bias(ctx, p)
    return bias is None or ctx.analysis(bias.name).stats.all_zero


def _relu_bias_clause(ctx, p) -> str:
    """What a zero weight before ReLU does, by the layer's bias: zero or missing, every gradient
    is blocked; otherwise each unit outputs relu(b_i) whatever its input."""
    bias = _bias(ctx, p)
    if bias is None:
        return "; with no bias, relu'(0) = 0 blocks every gradient and the layer stays dead"
    if ctx.analysis(bias.name).stats.all_zero:
        return "; with zero bias, relu'(0) = 0 blocks every gradient and the layer stays dead"
    return ("; each unit outputs relu(b_i) whatever its input (the bias is not zero), so the layer "
            "ignores its input and units with b_i <= 0 get no gradient")


def _init_fix(p) -> str:
    from initaudit.schemes import expected

    if p.kind is OpKind.EMBEDDING:
        return "torch.nn.init.normal_(w, std=1.0)  # or std=0.02 in transformer models"
    if p.fan_in and p.fan_out:
        return expected(p.activation, p.fan_in, p.group_fan_out).fix
    return "initialise this tensor with torch.nn.init (e.g. kaiming_normal_ or xavier_normal_)"


class UninitializedMemory(Rule):
    """A tensor that holds leftover memory instead of any initialisation.

    What it checks
    --------------
    Weights whose values match no distribution an init function draws from, read from a
    strided sample of the non-zero values: denormal-range magnitudes (|w| < 1e-30), a dynamic
    range of more than ``max_decades`` decades between the 0.1% and 99.9% quantiles of |w|, or
    finite magnitudes above ``max_abs``. Typical causes: a model built on the meta device or with
    ``torch.empty`` / ``module.to_empty()`` whose ``reset_parameters()`` never ran.

    Why it matters
    --------------
    Every init scheme draws from a distribution with a scale: for N(0, s^2) the 0.1%-99.9%
    quantiles of |w| span about 3.4 decades and |w| > 1e-30 always. Reinterpreted bytes (old
    integers, pointers, half-precision pairs) span 30+ decades; the model then trains from
    noise of arbitrary scale, or blows up at the first step.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():  # what to_empty() can leave behind: bytes of old int data as floats
        junk = torch.randint(-2**30, 2**30, (64 * 64,), generator=torch.Generator().manual_seed(0))
        model[0].weight.copy_(junk.to(torch.int32).view(torch.float32).view(64, 64).nan_to_num(0.0, 0.0, 0.0))
    ```

    Fix
    ---
    ```python
    model[0].reset_parameters()  # after to_empty(): call reset_parameters() on every module
    ```

    Options
    -------
    max_decades (float, default 8.0): largest plausible span of log10|w| (0.1%..99.9%).
    max_abs (float, default 1e6): largest plausible finite magnitude of a weight.
    """

    code = "IA106"
    name = "uninitialized-memory"
    category = "uninitialized"
    severity = Severity.ERROR
    options = {"max_decades": 8.0, "max_abs": 1e6}

    def check(self, ctx) -> Iterator[Finding]:
        for p in ctx.graph.weights():
            shape = ctx.analysis(p.name).shape
            if shape is None:
                continue
            reasons = []
            if shape.tiny_fraction > 0:
                reasons.append(f"{shape.tiny_fraction:.1%} of sampled values are below 1e-30 (denormal range)")
            if shape.log10_span > self.opts["max_decades"]:
                reasons.append(f"|w| spans {shape.log10_span:.0f} decades (an init spans about 3)")
            if shape.abs_max > self.opts["max_abs"]:
                reasons.append(f"|w| reaches {fmt(shape.abs_max)}")
            if reasons:
                yield self.finding(
                    p.name, "values look like leftover memory, not an initialisation: " + "; ".join(reasons),
                    evidence={"tiny_fraction": shape.tiny_fraction, "log10_span": shape.log10_span,
                              "abs_max": shape.abs_max},
                    fix="call reset_parameters() on every module after to_empty() / meta-device construction")


class MeanShift(Rule):
    """Weights centred far from zero.

    What it checks
    --------------
    Weight tensors whose mean is large against their spread: |mean| > ``max_ratio`` * std, and
    significant (|mean| > 6 std / sqrt(n)). Typical cause: ``torch.rand`` (uniform on [0, 1),
    mean 0.5, std 0.29) where ``torch.randn`` or a symmetric ``uniform_(-b, b)`` was meant.
    Init-stage only.

    Why it matters
    --------------
    Every scheme draws zero-mean weights. With mean m, a unit's output gains a common term
    m * sum_j x_j that grows with fan_in and is the same for every unit: pre-activations of
    all units move together, which saturates bounded activations and makes units alike.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(32, 32), nn.Tanh(), nn.Linear(32, 4))
    with torch.no_grad():
        model[0].weight.copy_(torch.rand(32, 32, generator=torch.Generator().manual_seed(0)) * 0.3)
    ```

    Fix
    ---
    ```python
    torch.nn.init.xavier_uniform_(model[0].weight, gain=torch.nn.init.calculate_gain("tanh"))
    ```

    Options
    -------
    max_ratio (float, default 0.5): largest tolerated |mean| / std.
    """

    code = "IA105"
    name = "mean-shift"
    category = "mean-shift"
    severity = Severity.WARNING
    options = {"max_ratio": 0.5}
    applies_when_trained = False

    def check(self, ctx) -> Iterator[Finding]:
        for p in ctx.graph.weights():
            s = ctx.analysis(p.name).stats
            if s.nonfinite or s.std == 0 or s.numel < 16 or p.kind is OpKind.EMBEDDING or no_layer(ctx, p):
                continue
            ratio = abs(s.mean) / s.std
            if ratio > self.opts["max_ratio"] and abs(s.mean) > 6 * s.std / s.numel**0.5:
                yield self.finding(
                    p.name, f"mean {fmt(s.mean)} is {ratio:.2f}x the std {fmt(s.std)} "
                            f"(range {fmt(s.min)} .. {fmt(s.max)}): weights should be centred on 0",
                    evidence={"mean": s.mean, "std": s.std, "ratio": ratio},
                    fix=_init_fix(p) + "  # zero-mean; torch.rand draws from [0, 1)")


def no_layer(ctx, p) -> bool:
    """A parameter of no known layer in a file with no architecture (Mamba's A_log read from a
    bare checkpoint): which dimension holds units, and whether it should be centred, is unknown."""
    return p.kind is OpKind.OTHER and not ctx.graph.has_architecture
