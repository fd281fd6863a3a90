"""Helpers shared by the probe rules (rules/probe.py, rules/backward.py, rules/unused.py)."""

from __future__ import annotations

from initaudit.graph import Param


def _probe(ctx):
    probe = ctx.probe
    return probe if probe is not None and getattr(probe, "ran", False) else None


def _param(ctx, site) -> Param | None:
    return ctx.graph.params.get(site.param) if site.param else None


def _is_zero(ctx, p: Param | None) -> bool:
    return p is not None and ctx.analysis(p.name).stats.all_zero


def _pct(x: float) -> str:
    return f"{x:.0%}" if x >= 0.01 or x == 0 else f"{x:.2%}"


def _where(site) -> str:
    return f" before {site.activation}" if site.kind in ("layer", "norm") and site.activation else (
        f" ({site.activation} output)" if site.kind == "act" and site.activation else "")


def measured_no_gradient(ctx, name: str) -> bool | None:
    """What the backward probe measured on parameter ``name``: True for a gradient that is
    exactly zero in every element (||dL/dw|| = 0 although w is in the loss's graph), False for a
    non-zero one, None where no gradient was measured (no probe, no backward pass as on ONNX,
    a parameter the loss does not reach, a non-finite gradient)."""
    probe = _probe(ctx)
    g = (probe.grads or {}).get(name) if probe is not None else None
    if g is None or not g.received or g.nonfinite:
        return None
    return g.norm == 0


# Fewest values a batch-statistics normalisation may take each mean/variance over before the
# gradient through it measures the probe's batch rather than the initialisation. Its backward
# multiplies the error by gamma / s, s the sample std of n values; for normal inputs
# E[sigma^2 / s^2] = (n - 1) / (n - 3): infinite for n <= 3, with infinite variance for n <= 5,
# 1.4 at n = 8 (at n = 2 the output is +-1 whatever the input and the error is divided by the
# smallest |x1 - x2| / 2 over the channels). Measured on efficientnetv2_rw_t (42 last-stage
# BatchNorms): geometric-mean relative backward gain 5.8 per norm at n = 2, 3.9 at n = 4, 1.74
# at n = 8, 1.57 at n = 32.
MIN_NORM_POPULATION = 8


def thin_norms(probe) -> list[tuple[int, object]]:
    """(position in ``probe.sites``, site) of batch-statistics norms that took a mean/variance
    over fewer than :data:`MIN_NORM_POPULATION` values."""
    return [(i, s) for i, s in enumerate(probe.sites) if s.kind == "norm" and s.norm_population is not None
            and s.norm_population < MIN_NORM_POPULATION]


def thin_between(thin: list[tuple[int, object]], start: int, end: int) -> list[object]:
    """The thin norms run after site position ``start`` and before ``end`` (forward order: the
    norms the error passes on its way back from ``end`` to ``start``)."""
    return [s for i, s in thin if start < i < end]


def thin_note(crossed: list) -> str:
    """Why a gradient comparison across ``crossed`` (thin norms) is not judged."""
    s = min(crossed, key=lambda s: s.norm_population)
    return (f"not judged: between them the error passes {len(crossed)} batch-statistics norm(s) that "
            f"normalise over fewer than {MIN_NORM_POPULATION} values per channel ({s.module or s.name}: "
            f"{s.norm_population}), whose backward divides by a batch std of that few values, so the "
            "ratio measures the probe's batch; probe with a larger batch or input size")
