"""What a user can ask of the probe (CLI flags / Settings fields), shared by both probes."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from initaudit.errors import ConfigError

DEFAULT_BATCH = 64
HISTOGRAM_BINS = 24


@dataclass
class ProbeOptions:
    batch_size: int = DEFAULT_BATCH
    seed: int = 0
    device: str | None = None  # None: where the model's parameters are (cpu for a fresh model)
    inputs: Any = None  # a path (--inputs FILE) or an object: a tensor, tuple/list or dict of them
    # --input-shape: full shapes, batch dimension included; key = input name, "" when unnamed.
    input_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    backward: bool = True  # False: forward statistics only (no gradients)
    histograms: bool = False  # keep per-site activation histograms (HISTOGRAM_BINS bins)
    batch_size_given: bool = False  # the user asked for batch_size (--batch-size, probe.batch-size)

    @property
    def histogram_bins(self) -> int:
        return HISTOGRAM_BINS if self.histograms else 0


def parse_input_shapes(specs: Iterable[str] | str | None) -> dict[str, tuple[int, ...]]:
    """``--input-shape`` values: ``D0,D1,...`` (the model's one input) or ``NAME=D0,D1,...``;
    full shapes, batch dimension first (``64,3,32,32``; ``input_ids=8,128``)."""
    if specs is None:
        return {}
    if isinstance(specs, str):
        specs = [specs]
    out: dict[str, tuple[int, ...]] = {}
    for spec in specs:
        name, sep, dims = str(spec).rpartition("=")
        parts = [d.strip() for d in re.split(r"[,x]", dims)]
        shape = tuple(int(d) for d in parts) if all(d.isdigit() for d in parts) else ()
        if not shape or any(d < 1 for d in shape) or (sep and not name.strip()):
            raise ConfigError(f"--input-shape {spec!r}: expected D0,D1,... or NAME=D0,D1,... with "
                              "positive integers, batch first (e.g. 64,3,32,32 or input_ids=8,128)")
        out[name.strip()] = shape
    return out
