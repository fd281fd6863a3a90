"""The measured depth profile beside the static one: each weight layer of the static prediction
(:func:`initaudit.propagation.predict`) with the probe site that measured it and the site where
its segment starts (the input, an embedding or a normalisation)."""

from __future__ import annotations

from dataclasses import dataclass

from initaudit.probe.result import ProbeResult, SiteStats
from initaudit.propagation import LayerSignal


@dataclass
class MeasuredLayer:
    signal: LayerSignal
    site: SiteStats
    origin: SiteStats | None  # None when the segment's start was not observed

    @property
    def ratio(self) -> float | None:
        """Measured spread / spread where the segment starts (None when not measurable)."""
        o = self.origin
        if o is None or o.nonfinite or self.site.nonfinite or not o.spread > 0:
            return None
        return self.site.spread / o.spread


def measured_profile(signal: list[LayerSignal], probe: ProbeResult | None) -> list[MeasuredLayer]:
    """The k-th static entry of a parameter goes with the k-th call site of its layer."""
    if probe is None or not probe.ran:
        return []
    by_name = {s.name: s for s in probe.sites}
    first_input = next((s for s in probe.sites if s.kind == "input"), None)
    sites: dict[str, list[SiteStats]] = {}
    for s in probe.sites:
        if s.kind == "layer" and s.param:
            sites.setdefault(s.param, []).append(s)
    seen: dict[str, int] = {}
    out = []
    for sig in signal:
        k = seen.get(sig.param, 0)
        seen[sig.param] = k + 1
        calls = sites.get(sig.param, [])
        if k >= len(calls):
            continue
        origin = first_input if sig.origin == "input" else by_name.get(sig.origin)
        out.append(MeasuredLayer(sig, calls[k], origin))
    return out
