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
