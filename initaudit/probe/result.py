"""Format-neutral results of a forward (and backward) probe.

Both probes, torch (hooks) and ONNX (onnxruntime with intermediates exposed), fill these same
records, so the probe rules never care which format the model came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from initaudit.graph import Activation


@dataclass
class SiteStats:
    """Statistics of one tensor observed at one call site of the forward pass.

    A site is a weight layer's output (``kind="layer"``, ``param`` set: the pre-activation) or an
    activation's output (``kind="act"``). Sites are keyed by call site, not by module: a module
    object reused at several places yields several sites.
    """

    name: str  # call-site name: module path (suffixed "#k" for the k-th reuse) or ONNX node name
    kind: str  # "layer" | "act" | "norm" | "output"
    param: str | None = None  # weight whose output this is, for layer sites
    activation: Activation | None = None  # for act sites; for layer sites, the one that follows
    depth: int = 0  # order among sites of the same kind in the forward pass
    units: int = 0  # size of the unit/channel dimension
    mean: float = 0.0
    std: float = 0.0
    nonfinite: int = 0
    dead_fraction: float | None = None  # units zero for every sample (ReLU family)
    saturated_fraction: float | None = None  # pre-activations in the flat region (bounded acts)
    identical_groups: list[list[int]] = field(default_factory=list)  # units copying each other
    histogram: tuple[list[float], list[int]] | None = None  # (edges, counts) when asked for
    samples: int = 0  # values per unit: batch x positions
    unit_std: float | None = None  # sqrt(mean over units of each unit's variance over samples)
    constant_units: int = 0  # units with one value on every sample
    identical_units: int = 0  # units that copy another (exact count; groups may be truncated)
    module: str | None = None  # module path / node name without the "#k" call suffix
    signal_std: float | None = None  # std with the layer's own bias taken off (when known)
    # (edges, counts) of the pre-activation itself where ``histogram`` shows phi(x) (when asked for)
    pre_histogram: tuple[list[float], list[int]] | None = None
    correlation: float | None = None  # mean correlation between two samples' activations
    # values each mean/variance of a batch-statistics norm (train-mode BatchNorm: batch x
    # positions per channel; InstanceNorm: positions per sample and channel) was taken over
    norm_population: int | None = None

    @property
    def spread(self) -> float:
        """The spread used for depth ratios: signal_std where the bias is known, else std."""
        return self.signal_std if self.signal_std is not None else self.std

    def to_json(self) -> dict[str, Any]:
        return {"std": self.std, "mean": self.mean, "dead_fraction": self.dead_fraction,
                "saturated_fraction": self.saturated_fraction, "nonfinite": self.nonfinite}

    def to_full_json(self) -> dict[str, Any]:
        """Every figure of the site (the JSON report's ``probe.sites`` entries)."""
        out = {"name": self.name, "kind": self.kind, "param": self.param,
               "activation": str(self.activation) if self.activation else None,
               "units": self.units, "samples": self.samples, "mean": self.mean, "std": self.std,
               "unit_std": self.unit_std, "signal_std": self.signal_std,
               "dead_fraction": self.dead_fraction,
               "saturated_fraction": self.saturated_fraction, "nonfinite": self.nonfinite,
               "constant_units": self.constant_units, "identical_units": self.identical_units,
               "identical_groups": [g[:16] for g in self.identical_groups[:8]],
               "correlation": self.correlation, "norm_population": self.norm_population}
        if self.histogram is not None:
            out["histogram"] = {"edges": self.histogram[0], "counts": self.histogram[1]}
        if self.pre_histogram is not None:
            out["pre_histogram"] = {"edges": self.pre_histogram[0], "counts": self.pre_histogram[1]}
        return out


@dataclass
class GradStats:
    norm: float
    weight_norm: float
    received: bool  # False when the parameter got no gradient at all (grad is None)
    zero_rows: int = 0  # units whose gradient is exactly zero
    distinct_rows: int | None = None  # distinct gradient rows among identical weight rows
    rows: int = 0  # units (rows along the param's units dimension)
    nonfinite: int = 0  # NaN/Inf elements in the gradient
    # Units whose activations are identical at the layer's site (group_rows units in
    # group_count groups), and the gradient rows they received: all zero = no gradient at all
    # (nothing can separate them); distinct_rows == group_count = identical gradients (the
    # symmetry persists); distinct_rows == group_rows = the first update breaks it.
    group_rows: int = 0
    group_count: int = 0
    group_zero_rows: int = 0

    @property
    def ratio(self) -> float:
        return self.norm / self.weight_norm if self.weight_norm > 0 else float("inf")

    def to_json(self) -> dict[str, Any]:
        return {"received": self.received, "norm": self.norm, "weight_norm": self.weight_norm,
                "ratio": self.ratio, "rows": self.rows, "zero_rows": self.zero_rows,
                "distinct_rows": self.distinct_rows, "nonfinite": self.nonfinite,
                "group_rows": self.group_rows, "group_count": self.group_count,
                "group_zero_rows": self.group_zero_rows}


@dataclass
class ProbeResult:
    ran: bool
    batch_size: int = 0
    seed: int = 0
    inputs: str = "synthetic"  # "synthetic" | "file"
    skipped_reason: str | None = None
    input_std: float = 1.0
    sites: list[SiteStats] = field(default_factory=list)
    grads: dict[str, GradStats] | None = None  # None when no backward pass ran (e.g. ONNX)
    loss: str | None = None  # description of the synthetic loss used for the backward pass
    inputs_source: str | None = None  # how the inputs were made / where they came from
    input_shapes: list[list[int]] = field(default_factory=list)
    device: str = "cpu"
    mode: str | None = None  # train/eval choices made for the probe (documented in the probe)
    notes: list[str] = field(default_factory=list)  # what the probe could not do, and why
    frozen: list[str] = field(default_factory=list)  # params with requires_grad=False
    # the ecosystem convention synthetic inputs followed ("transformers: input_ids +
    # attention_mask"), or None (first-layer inference, a file, example_inputs())
    convention: str | None = None

    def to_json(self) -> dict[str, Any]:
        out = {"ran": self.ran, "batch_size": self.batch_size if self.ran else None, "seed": self.seed,
               "inputs": self.inputs if self.ran else None, "skipped_reason": self.skipped_reason}
        if self.ran:  # extra keys (DESIGN section 4 allows additions)
            out.update({
                "inputs_source": self.inputs_source, "input_shapes": self.input_shapes,
                "convention": self.convention,
                "input_std": self.input_std, "device": self.device, "mode": self.mode,
                "loss": self.loss, "notes": self.notes,
                "sites": [s.to_full_json() for s in self.sites],
                "grads": None if self.grads is None else {k: g.to_json() for k, g in self.grads.items()},
            })
        return out

    def site_for_param(self, param: str) -> SiteStats | None:
        """The first call site of the layer (or normalisation) whose weight is ``param``."""
        return next((s for s in self.sites if s.param == param and s.kind in ("layer", "norm")), None)
