"""Copied units that lose a layer nothing it cannot get back.

A layer with ``units`` outputs reading ``fan_in`` inputs computes y = W x: its outputs span at
most rank(W) <= min(units, fan_in) directions, whatever the init, and at most as many as the
distinct signals its input carries. Copies lower that rank only when the distinct units are
fewer than what the layer could carry: a 32 -> 64 widening layer whose 64 rows are 32 distinct
rows of rank 32 (ZerO's Hadamard widening, c H[:, :32] of a Sylvester H_64) has every direction
its input holds, and a layer after it that copies those 32 signals loses nothing either.

Whether training separates copies i and j is the classic symmetry invariant: their weight
rows get gradients delta_i x^T and delta_j x^T with delta_i = W_next[:, i] . delta_next; when
the consumer's columns W_next[:, i] = W_next[:, j] the two stay equal under every update (and
the columns too), otherwise the errors they receive differ and the first updates separate them.
IA103 and IA208 read this module so that both judge copies by the rank they cost and by
whether the layer reading them can tell them apart.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from initaudit.graph import ModelGraph, Node

if TYPE_CHECKING:
    import torch

_RANK_MAX_DIM = 4096  # an SVD of a few thousand columns: milliseconds, and only where rows copy


def distinct_rows(groups: list[list[int]], rows: int) -> list[int]:
    """One row of every group of copies, and every row that copies nothing, in order."""
    dropped = {r for g in groups for r in sorted(g)[1:]}
    return [r for r in range(rows) if r not in dropped]


def own_copies(rows: "torch.Tensor", groups: list[list[int]]) -> list[list[int]]:
    """The groups of copied units whose weight rows are copies too: the layer's own copies.
    Units with different rows that compute the same values copy their input's copies (or read
    zeros), and the layer that made those is the one to judge."""
    import torch

    return [g for g in groups if all(i < rows.shape[0] and torch.equal(rows[g[0]], rows[i]) for i in g[1:])]


def hadamard_widening(rows: "torch.Tensor", groups: list[list[int]]) -> bool:
    """Whether a (units, fan_in) matrix with copied rows is a deterministic widening, as ZerO's
    c H[:, :fan_in] of a Sylvester Hadamard matrix: every entry +-c (one magnitude, which no
    random draw gives), units > fan_in, and its distinct rows keep rank fan_in, so no input
    direction is lost. Copies of random rows (a tiling or copy bug) are never this."""
    import torch

    units, fan_in = rows.shape
    keep = distinct_rows(groups, units)
    if len(keep) < fan_in or fan_in >= units or fan_in > _RANK_MAX_DIM:
        return False
    magnitude = rows.abs()
    if float(magnitude.min()) <= 0 or float(magnitude.min()) != float(magnitude.max()):
        return False
    return int(torch.linalg.matrix_rank(rows[keep].double())) == fan_in


def _feeder(by_name: dict[str, Node], node: Node) -> Node | None:
    """The layer node whose output reaches ``node`` through activations and shape-only ops
    alone (a chain ``W_1 -> relu -> W_2``), else None."""
    if len(node.inputs) != 1:
        return None
    up = by_name.get(node.inputs[0])
    while up is not None and up.kind in ("act", "transparent") and len(up.inputs) == 1:
        up = by_name.get(up.inputs[0])
    return up if up is not None and up.kind == "layer" else None


def consumer_layer(graph: ModelGraph, param: str) -> str | None:
    """The weight of the one layer that reads ``param``'s output (through activations and
    shape-only ops), where exactly one weight does (an exporter may share one initializer
    between layers: it is then one reader only if every reading node applies it)."""
    by_name = {n.name: n for n in graph.nodes}
    readers = {n.param for n in graph.nodes if n.kind == "layer" and n.param
               and (f := _feeder(by_name, n)) is not None and f.param == param}
    return readers.pop() if len(readers) == 1 else None


def consumer_separates(graph: ModelGraph, param: str, groups: list[list[int]], units: int) -> bool:
    """Whether the one layer reading ``param``'s ``units`` units reads every group of copies
    through different weights (its input-channel slices differ: Linear columns, conv kernels),
    so training separates them; False where that cannot be told (no single dense reader)."""
    import torch

    reader = consumer_layer(graph, param)
    if reader is None or not groups:
        return False
    p = graph.params[reader]
    w = graph.load_tensor(reader).detach()
    in_dim = 0 if p.units_dim == 1 else 1
    if getattr(p, "groups", 1) != 1 or w.dim() < 2 or w.shape[in_dim] != units:
        return False
    return all(any(not torch.equal(w.select(in_dim, g[0]), w.select(in_dim, i)) for i in g[1:])
               for g in groups)
