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

    def to_json(self) -> dict[str, Any]:
        return {"std": self.std, "mean": self.mean, "dead_fraction": self.dead_fraction,
                "saturated_fraction": self.saturated_fraction, "nonfinite": self.nonfinite}


@dataclass
class GradStats:
    norm: float
    weight_norm: float
    received: bool  # False when the parameter got no gradient at all (grad is None)
    zero_rows: int = 0  # units whose gradient is exactly zero
    distinct_rows: int | None = None  # distinct gradient rows among identical weight rows

    @property
    def ratio(self) -> float:
        return self.norm / self.weight_norm if self.weight_norm > 0 else float("inf")


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

    def to_json(self) -> dict[str, Any]:
        return {"ran": self.ran, "batch_size": self.batch_size if self.ran else None,
                "seed": self.seed, "inputs": self.inputs, "skipped_reason": self.skipped_reason}

    def site_for_param(self, param: str) -> SiteStats | None:
        return next((s for s in self.sites if s.param == param and s.kind == "layer"), None)
