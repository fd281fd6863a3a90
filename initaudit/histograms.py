"""Weight histograms for the pictures (``--histograms``, ``--html``): each weight's value
distribution beside the density of the scheme it is compared with.

Collected only when histograms are asked for, after the static pass, so the static pass and the
probe cost nothing more without them. A tensor over :data:`HISTOGRAM_SAMPLE` elements is counted
on a fixed stratified random sample of that many (:func:`initaudit.probe.stats.histogram_sample`,
as the probe's histograms are): the shape is the whole tensor's to within 0.3% per bin, and a
large embedding costs one gather.

Each layer row gains ``weight_histogram``: ``{"edges", "counts", "sampled", "shape"}``, where
``shape`` says which density fits the values, from the sample's excess kurtosis
k = E[(w - mu)^4] / sigma^4 - 3: ``"uniform"`` (k = -1.2 for U(-b, b); chosen below -0.6, or for
PyTorch's default kaiming_uniform) or ``"normal"`` (k = 0). The expected density is then
N(0, s^2) or U(-sqrt(3) s, sqrt(3) s) with s the expected std of the row's scheme.
"""

from __future__ import annotations

from typing import Any

import torch

from initaudit.graph import ModelGraph
from initaudit.probe.options import HISTOGRAM_BINS
from initaudit.probe.stats import HISTOGRAM_SAMPLE, histogram, histogram_sample

UNIFORM_KURTOSIS = -0.6  # excess kurtosis below which a sample looks uniform (uniform: -1.2)


def weight_histogram(t: torch.Tensor, bins: int = HISTOGRAM_BINS,
                     scheme: str | None = None) -> dict[str, Any]:
    """Histogram of ``t``'s finite values (a sample of HISTOGRAM_SAMPLE values for a larger ``t``)."""
    sample = histogram_sample(t.detach()).float()
    sample = sample[torch.isfinite(sample)]
    edges, counts = histogram(sample, bins)
    shape = "uniform" if scheme == "torch-default" else "normal"
    if scheme != "torch-default" and sample.numel() > 3:
        centred = sample.double() - sample.double().mean()
        var = float((centred * centred).mean())
        if var > 0 and float((centred**4).mean()) / var**2 - 3 < UNIFORM_KURTOSIS:
            shape = "uniform"
    return {"edges": edges, "counts": counts, "sampled": t.numel() > HISTOGRAM_SAMPLE, "shape": shape}


def add_weight_histograms(graph: ModelGraph, rows: list[dict[str, Any]],
                          bins: int = HISTOGRAM_BINS) -> None:
    """Give every per-layer row (:func:`initaudit.engine.layer_rows`) its ``weight_histogram``;
    a tensor that cannot be read again is left without one (the static pass already read it)."""
    for row in rows:
        if row["param"] not in graph.params:
            continue
        try:
            t = graph.load_tensor(row["param"])
        except Exception:  # noqa: BLE001 - a picture is optional; the audit has its figures
            continue
        if not t.is_floating_point():
            t = t.float()
        expected = row.get("expected") or {}
        row["weight_histogram"] = weight_histogram(t, bins, expected.get("scheme"))
        del t
