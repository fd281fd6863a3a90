"""Evidence that weights were trained, read from the weights themselves and from a live
module's state (never from "matches no known scheme", which is what a broken init looks like).

The spectrum: an init draws the entries of a weight matrix W (m x n) independently with one
spread s, so its singular values follow the Marchenko-Pastur law and the largest sits at the
bulk's edge, s * (sqrt(m) + sqrt(n)) (uniform draws included; orthogonal init lies below it).
Training builds low-rank structure: a few singular values separate from the bulk (Martin &
Mahoney, 2021), several times the edge. The statistic per matrix is

    rho = sigma_max(W_sample) / (s * (sqrt(m') + sqrt(n')))

on a strided sample of m' <= 256 rows and n' <= 512 columns (a sample of an i.i.d. matrix is
i.i.d., so rho ~ 1 at init; twelve power iterations on a 256 x 512 block cost well under a millisecond).
One layer with copied rows also has an outlier, so the evidence asks for a majority of the
model's matrices.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

from initaudit.distributed import strided_matrix
from initaudit.graph import ModelGraph, OpKind, Param

OUTLIER_RHO = 1.25  # sampled i.i.d. inits measured 0.87-1.05 (48 zoo models); trained MiniLM 1.0-2.4
MIN_MATRICES = 3
MAX_MATRICES = 48
_KINDS = (OpKind.LINEAR, OpKind.CONV, OpKind.ATTENTION, OpKind.EMBEDDING, OpKind.RECURRENT_INPUT)


@dataclass(frozen=True)
class Spectrum:
    param: str
    rho: float  # largest singular value over the Marchenko-Pastur edge


def edge_ratio(w: torch.Tensor, max_rows: int = 256, max_cols: int = 512) -> float | None:
    """rho for one weight tensor (matrix: rows = output units; conv kernels flattened), or None
    when it has no spread or non-finite values."""
    if w.dim() < 2 or min(w.shape[0], w.shape[1:].numel()) < 8:
        return None
    m = w.detach().reshape(w.shape[0], -1)
    m = m[:: max(1, m.shape[0] // max_rows)][:max_rows]
    m = m[:, :: max(1, m.shape[1] // max_cols)][:, :max_cols].float()
    if not torch.isfinite(m).all():
        return None
    s = m.std().item()
    if not s > 0 or m.abs().max().item() > 1e6 * s:
        return None
    return _top_singular(m - m.mean()) / (s * (math.sqrt(m.shape[0]) + math.sqrt(m.shape[1])))


def _top_singular(m: torch.Tensor, iterations: int = 12) -> float:
    """sigma_max by power iteration on M^T M from a fixed start. With no gap between the top
    singular value and the bulk (an i.i.d. init) it converges from below, so it never makes an
    init look trained; an outlier separated by a gap converges in a few steps."""
    v = torch.randn(m.shape[1], generator=torch.Generator().manual_seed(0))
    for _ in range(iterations):
        v = m.T @ (m @ v)
        v = v / v.norm()
    return (m @ v).norm().item()


def sampled(params: Iterable[Param]) -> list[Param]:
    """The weight matrices the spectra read: up to ``MAX_MATRICES``, evenly spaced in storage
    order."""
    chosen = [p for p in params if p.is_weight and p.kind in _KINDS and len(p.shape) >= 2]
    return chosen[::max(1, math.ceil(len(chosen) / MAX_MATRICES))]


def spectra(params: Iterable[Param], load: Callable[[str], torch.Tensor],
            known: Mapping[str, float | None] | None = None) -> list[Spectrum]:
    """rho of the ``sampled`` matrices (on one torch thread: initaudit.pool.one_thread); a value
    in ``known`` (measured by the static pass where it read the tensor) is taken as it is."""
    from initaudit.pool import one_thread

    known = known or {}
    out = []
    # A sample's rows page in most of a matrix (the kernel maps 64 kB around each page read), so
    # a reader that maps files (initaudit.loaders.shards) is closed after each matrix: the
    # caller held ~50 MB of a 1B checkpoint's pages to the end of this step otherwise.
    close = getattr(load, "close", None)
    with one_thread():
        for p in sampled(params):
            if p.name in known:
                rho = known[p.name]
            else:
                rho = edge_ratio(strided_matrix(load(p.name), 256, 512))  # a DTensor: only the sample
                if close is not None:
                    close()
            if rho is not None:
                out.append(Spectrum(p.name, rho))
    return out


def spectral_evidence(found: list[Spectrum]) -> str | None:
    """One line of evidence when most matrices have outlier singular values, else None."""
    if len(found) < MIN_MATRICES:
        return None
    outliers = [s for s in found if s.rho > OUTLIER_RHO]
    if 2 * len(outliers) <= len(found):
        return None
    median = sorted(s.rho for s in found)[len(found) // 2]
    return (f"weight spectra: {len(outliers)} of {len(found)} matrices have outlier singular values "
            f"(largest / Marchenko-Pastur edge: median {median:.2g}x; an i.i.d. init sits at about 1x)")


def init_summary(found: list[Spectrum]) -> str:
    """What the spectra say when they are no evidence of training (for the stage reason)."""
    if not found:
        return ""
    median = sorted(s.rho for s in found)[len(found) // 2]
    return (f"; weight spectra as at init: largest singular value {median:.2g}x the "
            f"Marchenko-Pastur edge (median of {len(found)} matrices)")


def module_evidence(module: torch.nn.Module) -> list[str]:
    """BatchNorm layers of a live module whose running statistics were updated."""
    steps = [int(b) for n, b in module.named_buffers() if n.endswith("num_batches_tracked") and b.numel() == 1]
    if steps and max(steps) > 0:
        return [(f"BatchNorm num_batches_tracked = {max(steps)} in the module (running statistics "
                 "were updated by training-mode forward passes)")]
    return []


def collect(graph: ModelGraph, known: Mapping[str, float | None] | None = None) -> list[Spectrum]:
    """Add the weights' and the live module's evidence of training to ``graph.stage_evidence``;
    returns the spectra measured (for the report). ``known``: rho already measured by name."""
    if graph.module is not None:
        for line in module_evidence(graph.module):
            if line not in graph.stage_evidence:
                graph.stage_evidence.append(line)
    found = spectra(graph.params.values(), graph.load_tensor, known)
    line = spectral_evidence(found)
    if line is not None:
        graph.stage_evidence.append(line)
    return found
