"""Probe rule on the backward pass: parameters no gradient reaches (IA209), and why (a branch
taken only in training mode or only for an input the probe did not give), read from the
owner's source."""

from __future__ import annotations

import ast
import functools
import inspect
import textwrap
from collections.abc import Iterator

from initaudit.rules.probe_common import _probe

from initaudit.branches import stopped_at
from initaudit.routing import expert_places, routed_containers

from initaudit.rule import Finding, Rule, Severity


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
    training only, an MoE expert not routed for this batch) also show up here. Two such
    mechanisms are read from the owner's source and reported as info, naming what the probe
    did not exercise:

    - used only under ``if self.training`` (an auxiliary classifier, a SpecAugment mask
      embedding): the eval-mode probe does not take that branch;
    - used only in a branch on an argument of the method that uses it (``if target_mapping is
      not None``, ``if seg_mat is None: ... else: ...``): the parameter serves an input the
      probe's inputs did not give (XLNet's ``mask_emb`` for its permutation objective's query
      stream), directly or in a helper method called only in such a branch (Longformer's
      global query/key/value, under ``if is_global_attn``); pass that input with ``--inputs``
      to probe it.

    Also info: an expert of a mixture of experts that no token of the probe's batch was routed
    to (a container of identical modules whose recorded outputs are multiplied by a router's
    softmax/sigmoid/top-k scores: NLLB-MoE's and Switch's ``experts.expert_3``): top-k dispatch
    is gating by the input. Also info: a module called only by a public method other than
    ``forward`` (ESM's ``contact_head``, called by ``predict_contacts``): another entry point,
    trained through its own loss; one only a private helper calls, or only returned by a
    method, stays a warning. Also info: parameters the recorded forward pass uses whose every path to the outputs ends
    in an op with zero derivative (``round``, ``floor``, ``sign``, ``argmax``: a latent quantised
    to bytes before the decoder), a stop-gradient by design.

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
        root = ctx.graph.module
        routers = routed_containers(ctx.graph, root) if by_module and root is not None else {}
        for module, names in by_module.items():
            count = sum(ctx.graph.params[n].numel for n in names if n in ctx.graph.params)
            listed = (f"{len(names)} parameter(s) ({count:,} values: "
                      f"{', '.join(n.rpartition('.')[2] for n in names[:4])}{', ...' if len(names) > 4 else ''})")
            cause = _explanation(ctx, root, routers, names)
            if cause is not None:
                text, key, value = cause
                yield self.finding(module or names[0], f"{listed} {text}", severity=Severity.INFO,
                                   evidence={"params": names, "values": count, key: value})
                continue
            yield self.finding(
                module or names[0], f"{listed} receive no gradient: not reached from the model's outputs "
                                    "in this forward pass",
                evidence={"params": names, "values": count},
                fix="call the module in forward(), or remove it (or set requires_grad_(False) if it "
                    "is meant to be frozen)")


def _explanation(ctx, root, routers: dict[str, str], names: list[str]) -> tuple[str, str, object] | None:
    """Why parameters that got no gradient are not unused, the first cause that holds, as (the
    message after their listing, the evidence key, its value); None where none does."""
    where = training_only(root, names[0]) if root is not None else None
    if where:
        return (f"used only in training mode ({where}): the probe's eval-mode forward pass does not "
                "reach them", "training_only", where)
    routed = _unrouted_expert(root, routers, names[0])
    if routed:
        return (f"in an expert no token was routed to in the probe's batch ({routed}): which experts "
                "run depends on the tokens, so not unused; routing balances in training", "routed_by", routed)
    gated = [input_gated(root, n) for n in names] if root is not None else [None]
    if all(gated):
        branches = sorted(set(gated))
        return (f"used only in a branch on an input the probe did not give ({'; '.join(branches[:3])}): "
                "not exercised by the probe's inputs, not unused; pass that input with --inputs to probe "
                "them", "input_gated", branches)
    entry = [other_entry_point(root, n) for n in names] if root is not None else [None]
    if all(entry):
        return (f"called only by {entry[0]}, an entry point other than forward(): the probe runs "
                "forward, so it does not reach them; train them through that method's own loss",
                "entry_point", entry[0])
    stops = stopped_at(ctx.graph, names) if ctx.graph.nodes else []
    if stops:  # used, but behind an op with no derivative: trained through another loss, by design
        return (f"used in the forward pass, but every path from them to the outputs ends in "
                f"{', '.join(stops)} (zero derivative): no gradient flows back through the outputs, by "
                "design (a quantised code is trained through its own loss or a straight-through "
                "estimator)", "stopped_at", stops)
    return None


def _unrouted_expert(root, routers: dict[str, str], name: str) -> str | None:
    """How the parameter's expert is routed, where it is one of a container of identical
    experts whose outputs the recorded forward weighted by a router's scores (``routers``)."""
    container = next((c for c, _ in expert_places(root, name) if c in routers), None) if routers else None
    return f"{container}'s outputs weighted by the scores of {routers[container]}" if container else None


def _mentions_training(test: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == "training" and isinstance(n.value, ast.Name)
               and n.value.id == "self" for n in ast.walk(test))


def _uses(nodes: list[ast.stmt], attr: str) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr == attr and isinstance(n.value, ast.Name)
               and n.value.id == "self" for stmt in nodes for n in ast.walk(stmt))


@functools.lru_cache(maxsize=256)
def _source_tree(cls: type) -> ast.AST | None:
    try:
        return ast.parse(textwrap.dedent(inspect.getsource(cls)))
    except (OSError, TypeError, SyntaxError):
        return None


def _methods(cls: type):
    tree = _source_tree(cls)
    for fn in ast.walk(tree) if tree is not None else ():
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield fn


@functools.lru_cache(maxsize=256)
def _training_guarded(cls: type, attr: str) -> str | None:
    """The method of ``cls`` that uses ``self.<attr>`` under an ``if`` testing ``self.training``."""
    for fn in _methods(cls):
        for branch in ast.walk(fn):
            if isinstance(branch, ast.If) and _mentions_training(branch.test) and _uses(branch.body, attr):
                return f"{cls.__name__}.{fn.name}"
    return None


def _self_loads(fn: ast.AST, attr: str) -> list[ast.Attribute]:
    return [n for n in ast.walk(fn) if isinstance(n, ast.Attribute) and n.attr == attr
            and isinstance(n.value, ast.Name) and n.value.id == "self" and isinstance(n.ctx, ast.Load)]


def _guards(cls: type, fn: ast.AST, uses: list[ast.Attribute]) -> tuple[set[int], list[str]]:
    """The ``uses`` inside a branch of an ``if`` on an argument of ``fn``, and those tests."""
    args = {a.arg for a in (*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs)} - {"self", "cls"}
    guarded: set[int] = set()
    tests: list[str] = []
    for branch in ast.walk(fn):
        if not isinstance(branch, ast.If) or not {n.id for n in ast.walk(branch.test)
                                                  if isinstance(n, ast.Name)} & args:
            continue
        inside = {id(n) for stmt in (*branch.body, *branch.orelse) for n in ast.walk(stmt)}
        hit = [u for u in uses if id(u) in inside]
        if hit:
            guarded.update(id(u) for u in hit)
            tests.append(f"`{ast.unparse(branch.test)}` in {cls.__name__}.{fn.name}")
    return guarded, tests


@functools.lru_cache(maxsize=256)
def _argument_guarded(cls: type, attr: str, depth: int = 0) -> str | None:
    """Where ``cls`` uses ``self.<attr>`` only inside branches of ``if`` statements that test
    an argument of the method (``if target_mapping is not None``; the ``else`` of ``if seg_mat
    is None``), or only in a helper method of ``cls`` that is itself called only in such
    branches (Longformer's ``_compute_global_attn_output_from_hidden``, called under ``if
    is_global_attn``): the parameter serves an input that may be absent. None where it is used
    anywhere else (then an input does not explain its missing gradient)."""
    found = None
    for fn in _methods(cls):
        uses = _self_loads(fn, attr)
        if not uses:
            continue
        guarded, tests = _guards(cls, fn, uses)
        if len(guarded) < len(uses):
            helper = _argument_guarded(cls, fn.name, depth + 1) if depth < 3 and fn.name != attr else None
            if helper is None:  # used unconditionally where its method is not itself gated
                return None
            tests.append(helper)
        found = found or tests[0]
    return found


def _called(fn: ast.AST, attr: str) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == attr
               and isinstance(n.func.value, ast.Name) and n.func.value.id == "self" for n in ast.walk(fn))


@functools.lru_cache(maxsize=256)
def _entry_point(cls: type, attr: str) -> str | None:
    """The public method of ``cls`` other than ``forward`` that calls ``self.<attr>(...)``, where
    ``forward`` and the private helpers never use it (ESM's ``predict_contacts`` calling its
    ``contact_head``): a second entry point of the model, not a forgotten layer."""
    found = None
    for fn in _methods(cls):
        if not _self_loads(fn, attr):
            continue
        if fn.name == "forward" or fn.name.startswith("_") or not _called(fn, attr):
            return None
        found = found or f"{cls.__name__}.{fn.name}"
    return found


def other_entry_point(root, path: str) -> str | None:
    """Where the module at ``path`` is called only from another public method of its owner."""
    for mod, attr, upto in _owners(root, path):
        found = _entry_point(type(mod), attr)
        if found:
            return found
    return None


def _owners(root, path: str):
    """(owner module, attribute name, path up to it) for each module on ``path``, innermost first."""
    parts = path.split(".")
    for i in range(len(parts) - 1, -1, -1):
        owner = ".".join(parts[:i])
        try:
            mod = root.get_submodule(owner) if owner else root
        except AttributeError:
            continue
        yield mod, parts[i], ".".join(parts[:i + 1])


def training_only(root, path: str) -> str | None:
    """Where the module or parameter at ``path`` is used only under ``if self.training`` in its
    owner's code (an auxiliary classifier, a SpecAugment mask embedding), read from the
    owner's source: the branch is there, the eval-mode probe just does not take it."""
    for mod, attr, upto in _owners(root, path):
        found = _training_guarded(type(mod), attr)
        if found:
            return f"{upto} under `if self.training` in {found}"
    return None


def input_gated(root, path: str) -> str | None:
    """Where the parameter (or the module holding it) at ``path`` is used only in branches on
    an argument of its owner's method, read from the owner's source: ``mask_emb`` under ``if
    target_mapping is not None`` in XLNetModel.forward. None where no owner on the path
    uses it that way."""
    for mod, attr, upto in _owners(root, path):
        found = _argument_guarded(type(mod), attr)
        if found:
            return f"{upto} only under {found}"
    return None
