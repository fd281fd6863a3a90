"""Static rules on how weights fit their place: copied units (IA103) and recurrent spectra
(IA107). The init-scale rule (IA104) is in init_scale.py, the depth rules in depth.py."""

from __future__ import annotations

from collections.abc import Iterator

from initaudit.graph import OpKind
from initaudit.lazy import lazy_function
from initaudit.rule import Finding, Rule, Severity, fmt
from initaudit.rules.weights import no_layer

hadamard_widening = lazy_function("initaudit.copies", "hadamard_widening")
consumer_separates = lazy_function("initaudit.copies", "consumer_separates")
unit_rows = lazy_function("initaudit.analysis", "unit_rows")
as_fp32 = lazy_function("initaudit.moments", "as_fp32")


class DuplicateUnits(Rule):
    """Units that are copies of each other: identical or near-identical weight rows.

    What it checks
    --------------
    The rows of every weight matrix along its output-unit dimension (per gate block for
    recurrent and fused attention weights; per output channel for convolutions): exact
    duplicates by hashing, near-duplicates by cosine similarity of centred rows >= ``cosine``
    found with sign-random-projection LSH (sub-quadratic: 0.1-0.5 s for a 50k x 768 table).
    Tensors that are constant as a whole are left to IA102. Exact copies in a deterministic
    widening layer (fan_in < units, every entry +-c, which no random draw gives) whose distinct
    rows still have rank fan_in (y = W x spans at most fan_in directions whatever the init: none
    is lost) are a warning, and info where the one layer reading them reads each copy through
    different weights, W_next[:, i] != W_next[:, j], so the errors the copies
    receive differ and training separates them (ZerO's widening c H[:, :fan_in] of a Sylvester
    Hadamard matrix repeats rows i and i + fan_in, read by an identity).

    Why it matters
    --------------
    Two units with w_i = w_j compute identical outputs on every input; their gradients differ
    only through the weights above them, and in a layer of copies the effective width is the
    number of distinct rows. Copies come from tiling, broadcasting one row, or a copy bug.

    Example
    -------
    ```python
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        model[0].weight[32:] = model[0].weight[:32]
    ```

    Fix
    ---
    ```python
    torch.nn.init.kaiming_normal_(model[0].weight, nonlinearity="relu")
    ```

    Options
    -------
    cosine (float, default 0.995): similarity at or above which two rows count as near-duplicates.
    error_fraction (float, default 0.5): fraction of copied rows from which the finding is an error.
    """

    code = "IA103"
    name = "duplicate-units"
    category = "symmetry"
    severity = Severity.WARNING
    options = {"cosine": 0.995, "error_fraction": 0.5}
    needs_duplicates = True

    def check(self, ctx) -> Iterator[Finding]:
        for p in ctx.graph.weights():
            dup = ctx.analysis(p.name).duplicates
            if dup is None or not (dup.exact_groups or dup.near_groups) or no_layer(ctx, p):
                continue
            unit = "rows (tokens)" if p.kind is OpKind.EMBEDDING else "units"
            if dup.exact_groups:
                copies = dup.exact_rows
                frac = copies / dup.rows
                example = dup.exact_groups[0][:3]
                sev = Severity.ERROR if frac >= self.opts["error_fraction"] else Severity.WARNING
                kept = p.kind is not OpKind.EMBEDDING and _rank_kept(ctx, p, dup)
                parted = kept and consumer_separates(ctx.graph, p.name, dup.exact_groups, dup.rows)
                yield self.finding(
                    p.name, f"{copies} of {dup.rows} {unit} are exact copies of another "
                            f"({len(dup.exact_groups)} group(s), e.g. rows {', '.join(map(str, example))})"
                            + (f"; a Hadamard widening (ZerO: every entry +-c) of fan_in={fmt(p.fan_in)} inputs "
                               f"to {dup.rows} units whose {dup.rows - copies} distinct rows keep rank "
                               f"{fmt(p.fan_in)} (no input direction lost)" if kept else "")
                            + (", and the layer reading them reads each copy through different weights, "
                               "so training separates them (a widening init such as ZerO's Hadamard one)"
                               if parted else ""),
                    severity=Severity.INFO if parted else Severity.WARNING if kept else sev,
                    evidence={"duplicate_rows": copies, "rows": dup.rows, "groups": len(dup.exact_groups),
                              "example": example, **({"rank_kept": True} if kept else {})},
                    fix=None if parted else "re-initialise the tensor so every row is drawn independently")
            near = dup.near_rows
            if near and dup.near_min_cosine is not None and dup.near_min_cosine >= self.opts["cosine"]:
                example = dup.near_groups[0][:3]
                sev = Severity.INFO if ctx.trained else Severity.WARNING
                yield self.finding(
                    p.name, f"{near} of {dup.rows} {unit} are near-copies of another (cosine >= "
                            f"{dup.near_min_cosine:.4f}, e.g. rows {', '.join(map(str, example))})",
                    severity=sev, evidence={"near_duplicate_rows": near, "rows": dup.rows,
                                            "min_cosine": dup.near_min_cosine, "example": example},
                    fix="re-initialise the tensor so every row is drawn independently")


def _rank_kept(ctx, p, dup) -> bool:
    """Whether the copies are a Hadamard widening whose distinct rows span its fan_in inputs
    (initaudit.copies)."""
    if not p.fan_in or dup.rows <= p.fan_in or dup.rows - dup.exact_rows < p.fan_in:
        return False
    rows = unit_rows(as_fp32(ctx.graph.load_tensor(p.name).detach()), p)
    return hadamard_widening(rows, dup.exact_groups)


class RecurrentSpectrum(Rule):
    """Recurrent hidden-to-hidden weights whose spectrum makes the recurrence vanish or explode.

    What it checks
    --------------
    The spectral radius rho (largest |eigenvalue|) of every gate block of every RNN/LSTM/GRU
    hidden-to-hidden weight (h x h, up to 2048): rho > ``max_radius`` explodes, rho <
    ``min_radius`` vanishes. Orthogonal init gives rho = gain exactly; torch's default
    uniform(-1/sqrt(h), 1/sqrt(h)) gives rho ~ 1/sqrt(3) ~ 0.58. Init-stage only.

    Why it matters
    --------------
    Through T steps the hidden state is multiplied by W_hh (times the activation's derivative)
    T times: for a linearised recurrence ||h_T|| ~ rho^T ||h_0||, so rho = 1.5 grows by 1.5^50 ~
    6e8 over 50 steps and rho = 0.2 forgets everything after a handful of steps.

    Example
    -------
    ```python
    model = nn.RNN(32, 64, batch_first=True)
    torch.nn.init.normal_(model.weight_hh_l0, std=1.0)
    ```

    Fix
    ---
    ```python
    torch.nn.init.orthogonal_(model.weight_hh_l0)
    ```

    Options
    -------
    max_radius (float, default 1.2): largest tolerated spectral radius.
    min_radius (float, default 0.25): smallest tolerated spectral radius.
    """

    code = "IA107"
    name = "recurrent-spectrum"
    category = "recurrent"
    severity = Severity.WARNING
    options = {"max_radius": 1.2, "min_radius": 0.25}
    applies_when_trained = False

    def check(self, ctx) -> Iterator[Finding]:
        for p in ctx.graph.weights():
            if p.kind is not OpKind.RECURRENT_HIDDEN:
                continue
            radii = ctx.analysis(p.name).spectral_radius
            if not radii:
                continue
            gates = p.gates or ("",)
            for gate, rho in zip(gates, radii):
                where = f" (gate {gate})" if gate else ""
                if rho > self.opts["max_radius"]:
                    what, sev = "explodes", Severity.ERROR if rho > 3 else None
                elif rho < self.opts["min_radius"]:
                    what, sev = "vanishes", None
                else:
                    continue
                yield self.finding(
                    p.name, f"spectral radius {rho:.3g}{where}: the recurrence {what} "
                            f"(h_T ~ {rho:.3g}^T h_0; 50 steps: x{fmt(rho ** 50)})",
                    severity=sev, evidence={"spectral_radius": rho, "gate": gate or None},
                    fix="torch.nn.init.orthogonal_(w_hh_block)  # per gate block")
