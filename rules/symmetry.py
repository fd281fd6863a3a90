"""IA208: units that copy each other on every probe sample, and whether training separates them."""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.rules.probe_common import _is_zero, _param, _probe, _where
from initaudit.rules.weights import ConstantWeights, _init_fix
from initaudit.rules.backward import _gain_learns, _zero_layers

from initaudit.copies import consumer_separates, hadamard_widening, own_copies
from initaudit.graph import Param
from initaudit.lazy import lazy_function
from initaudit.learned_inputs import learned_zero_inputs, reads_no_data, zero_factors_before
from initaudit.roles import renormalised_params
from initaudit.rule import Finding, Rule, Severity, fmt

# initaudit.analysis imports torch: load it when the rule runs, not when the rules are listed.
unit_rows = lazy_function("initaudit.analysis", "unit_rows")
as_fp32 = lazy_function("initaudit.moments", "as_fp32")


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
      (before a ReLU) is no such factor: what reads it stays an error;
    - where the gradient does not show they stay copies (distinct gradient rows, or no gradient
      measured), info for copies that are not this layer's: their weight rows differ, so they
      copy their input's copies (after ZerO's Hadamard widening every identity layer copies the
      same 32 of 64), judged where they are made; and for a Hadamard widening's own copies
      (ZerO: +-c entries, distinct rows of rank fan_in) while the one layer reading them reads
      each copy through different weights (W_next[:, i] != W_next[:, j], so delta_i != delta_j
      and the updates separate them).

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
                legit = legit or _copies_cost_nothing(ctx, probe, s, p)
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
                legit = legit or _copies_cost_nothing(ctx, probe, s, p)
                yield self.finding(
                    s.name, head + f"; their gradients differ ({g.distinct_rows} distinct rows among "
                                   f"{g.group_rows}), so the first update breaks the symmetry"
                            + (f" ({legit})" if legit else ""),
                    evidence=evidence, fix=None if legit else fix,
                    severity=Severity.INFO if legit else Severity.WARNING)


def _copies_cost_nothing(ctx, probe, site, p: Param | None) -> str | None:
    """Why the copies are no defect of this layer (initaudit.copies), or None: its weight rows
    differ (the copies are its input's), or its own copies are a Hadamard widening that the one
    layer reading them reads through different weights."""
    if p is None or not p.fan_in or not site.identical_groups:
        return None
    rows = unit_rows(ctx.graph.load_tensor(p.name).detach(), p)
    own = own_copies(rows, site.identical_groups)
    if not own:
        return ("their weight rows differ: the copies are their input's, judged at the layer that "
                "made them, and they part when it does")
    if hadamard_widening(as_fp32(rows), own) and consumer_separates(ctx.graph, p.name, own, site.units):
        return (f"a Hadamard widening (ZerO): its +-c rows keep rank fan_in={fmt(p.fan_in)}, and the layer "
                "reading the copies reads each through different weights, so training separates them")
    return None


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

    rows = unit_rows(ctx.graph.load_tensor(p.name).detach(), p)
    for group in site.identical_groups:
        if any(torch.equal(rows[group[0]], rows[i]) for i in group[1:] if i < rows.shape[0]):
            return None
    return reads
