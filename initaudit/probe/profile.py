"""The measured depth profile beside the static one: each weight layer of the static prediction
(:func:`initaudit.propagation.predict`) with the probe site that measured it and the site where
its segment starts (the input, an embedding or a normalisation)."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from initaudit.graph import Param, input_prefix
from initaudit.probe.result import ProbeResult, SiteStats
from initaudit.rule import fmt
from initaudit.propagation import LayerSignal


@dataclass
class MeasuredLayer:
    signal: LayerSignal
    site: SiteStats
    origin: SiteStats | None  # None when the segment's start was not observed
    # what the prediction's signal is to the measured layer output (Param.output_scale: a
    # constant after the layer, before its activation, folded into the applied weight)
    scale: float = 1.0

    @property
    def ratio(self) -> float | None:
        """Measured spread / spread where the segment starts (None when not measurable)."""
        o = self.origin
        if o is None or o.nonfinite or self.site.nonfinite or not o.spread > 0:
            return None
        return self.site.spread * abs(self.scale) / (o.spread * self.signal.start_gain)


def input_gain(graph) -> float:
    """The product of the constant factors between the graph's input and the first layer: a
    scalar (``attrs["scale"]``: ``x / 255`` in an Atari or image model) or per-channel
    (``attrs["channel_scale"]``: an image normalisation inside the graph). The static
    prediction's unit-variance input stands after them, where the first layer reads it. Only
    along a chain: where the prefix mixes several copies of the input (NeRF's positional
    encoding, ``cat([x, sin(2^k x), cos(2^k x)])``) or applies a function to it, no one factor
    says what the first layer reads (their product, 2^30 there, made every ratio ~1e-10): 1.0."""
    prefix = input_prefix(graph.nodes)
    if any(n.kind not in ("input", "transparent", "mul", "add") or len(n.inputs) > 1 for n in prefix):
        return 1.0
    gain = 1.0
    for node in prefix:
        attrs = node.attrs or {}
        if node.kind == "mul" and not node.param:
            gain *= abs(float(attrs.get("scale", 1.0))) * float(attrs.get("channel_scale", 1.0))
    return gain


def _scalar_scale(node) -> bool:
    """A parameter-free multiply of one signal by a scalar constant, and nothing else."""
    attrs = node.attrs or {}
    return (node.kind == "mul" and not node.param and len(node.inputs) == 1 and "scale" in attrs
            and "shift" not in attrs and "channel_scale" not in attrs)


def input_rescale(graph) -> float:
    """The factor that gives the first layer unit-variance synthetic input: ``1 / gain`` where
    the forward only multiplies its input by scalar constants before the first layer (``x / 255``
    fed N(0, 1) would hand the first layer std 0.004, and its biases would make the signal);
    1.0 where anything else sits there (a mean shifted away, a per-channel normalisation, whose
    input has a scale of its own: an image in [0, 1])."""
    if not all(n.kind in ("input", "transparent") or _scalar_scale(n) for n in input_prefix(graph.nodes)):
        return 1.0
    gain = input_gain(graph)
    return 1.0 / gain if gain > 0 and math.isfinite(gain) and abs(math.log(gain)) > 0.01 else 1.0


def rescaled_spread(rescale: float, subject: str) -> tuple[str, str]:
    """How a synthetic input drawn at ``rescale`` (:func:`input_rescale`) is named in the probe's
    inputs source: the distribution, and why (``subject``: "forward" or "graph")."""
    return (f"N(0, {fmt(rescale)}^2)", f"(the {subject} multiplies its input by {fmt(1 / rescale)} "
                                         "before the first layer, which so reads unit spread)")


def measured_profile(signal: list[LayerSignal], probe: ProbeResult | None,
                     params: dict[str, Param] | None = None, graph=None) -> list[MeasuredLayer]:
    """The k-th static entry of a parameter goes with the k-th call site of its layer; ``params``
    give each layer's ``output_scale``."""
    if probe is None or not probe.ran:
        return []
    by_name = {s.name: s for s in probe.sites}
    first_input = next((s for s in probe.sites if s.kind == "input"), None)
    sites: dict[str, list[SiteStats]] = {}
    for s in probe.sites:
        if s.kind == "layer" and s.param:
            sites.setdefault(s.param, []).append(s)
    seen: dict[str, int] = {}
    gain = input_gain(graph) if graph is not None else 1.0
    out = []
    for sig in signal:
        k = seen.get(sig.param, 0)
        seen[sig.param] = k + 1
        calls = sites.get(sig.param, [])
        if k >= len(calls):
            continue
        origin = first_input if sig.origin == "input" else by_name.get(sig.origin)
        if sig.origin == "input" and origin is not None and gain != 1.0:
            origin = replace(origin, std=origin.std * gain,
                             signal_std=origin.signal_std * gain if origin.signal_std is not None else None)
        scale = params[sig.param].output_scale if params and sig.param in params else 1.0
        out.append(MeasuredLayer(sig, calls[k], origin, scale))
    return out
