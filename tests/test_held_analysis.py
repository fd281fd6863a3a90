"""The analysis of a tensor read where it is (``initaudit.held_analysis``: DTensor shards reduced
across ranks, tensors on a GPU) gives the single-process ``analyze`` result. Ranks are simulated
by threads whose ``reduce`` meets at a barrier, so every box split (rows, columns, uneven, a
replica) is checked in-process; tests/test_distributed.py runs the real torchrun job."""

from __future__ import annotations

import math
import threading

import pytest
import torch

from initaudit.analysis import AnalysisOptions, analyze
from initaudit.graph import OpKind, Param, ParamRole
from initaudit.held import Held
from initaudit.held_analysis import analyze_held
from initaudit.moments import tensor_stats


class _Threads:
    """A process group of threads: all_reduce at a barrier."""

    def __init__(self, size: int):
        self.size, self.barrier, self.slots = size, threading.Barrier(size, timeout=60), [None] * size

    def all_reduce(self, rank: int, t: torch.Tensor, op: str) -> None:
        self.slots[rank] = t.clone()
        self.barrier.wait()
        stacked = torch.stack(self.slots)
        done = {"sum": lambda: stacked.sum(0), "min": lambda: stacked.min(0).values,
                "max": lambda: stacked.max(0).values}[op]()
        self.barrier.wait()
        t.copy_(done)


class _ThreadHeld(Held):
    rank: int = 0

    def reduce(self, t, op="sum"):
        self.group.all_reduce(self.rank, t, op)
        return t


def _param(shape, kind=OpKind.LINEAR, units_dim=0, gates=()):
    return Param("w", tuple(shape), "float32", "l", "Linear", kind, ParamRole.WEIGHT,
                 units_dim=units_dim, gates=gates)


def _sharded(t: torch.Tensor, param: Param, dim: int, ranks: int | list[int], replicas: int = 1):
    """analyze_held on ``ranks`` boxes of ``t`` split along ``dim`` (as torch.chunk / Shard(dim),
    or of the given sizes), each held by ``replicas`` ranks; the results of every rank."""
    pieces = t.split(ranks, dim=dim) if isinstance(ranks, list) else t.chunk(ranks, dim=dim)
    group = _Threads(len(pieces) * replicas)
    results = [None] * group.size

    def run(rank: int) -> None:
        box = rank // replicas
        offset = [0] * t.dim()
        offset[dim] = sum(p.shape[dim] for p in pieces[:box])
        held = _ThreadHeld(pieces[box].clone(), tuple(t.shape), tuple(offset),
                           owner=rank % replicas == 0, group=group)
        held.rank = rank
        try:
            results[rank] = analyze_held(held, param, AnalysisOptions())
        except Exception as exc:  # noqa: BLE001 - re-raised in the test's thread
            results[rank] = exc
            group.barrier.abort()

    threads = [threading.Thread(target=run, args=(r,)) for r in range(group.size)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    errors = [r for r in results if isinstance(r, Exception) and not isinstance(r, threading.BrokenBarrierError)]
    if errors:
        raise errors[0]
    return results


def _close(a, b, rel=1e-5):
    if a is None or b is None:
        return a is b
    if isinstance(a, float) and math.isnan(a):
        return math.isnan(b)
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-7)


def _assert_same(held, single):
    for k in ("numel", "nonfinite"):
        assert getattr(held.stats, k) == getattr(single.stats, k), k
    for k in ("mean", "std", "min", "max", "zero_fraction"):
        assert _close(getattr(held.stats, k), getattr(single.stats, k)), (k, held.stats, single.stats)
    assert (held.shape is None) == (single.shape is None)
    if single.shape:
        assert held.shape == single.shape  # the same sample, bit for bit
    assert (held.duplicates is None) == (single.duplicates is None)
    if single.duplicates:
        assert held.duplicates.exact_groups == single.duplicates.exact_groups
        assert held.duplicates.near_groups == single.duplicates.near_groups
    assert _close(held.orthogonal_gain, single.orthogonal_gain)
    assert held.identity_gain == single.identity_gain
    assert (held.gate_std is None) == (single.gate_std is None)
    for a, b in zip(held.gate_std or [], single.gate_std or [], strict=True):
        assert _close(a, b)
    for a, b in zip(held.spectral_radius or [], single.spectral_radius or [], strict=True):
        assert _close(a, b)


def _defective(rows=96, cols=80, seed=0):
    """Kaiming-like rows with planted exact copies and near-copies."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g) * 0.1
    w[5] = w[40]
    w[70] = w[40]
    w[11] = w[3] + 1e-4 * torch.randn(cols, generator=g)
    return w


CASES = [
    ("rows", _defective(), _param((96, 80)), 0),
    ("columns", _defective(), _param((96, 80)), 1),
    ("in-out layout", _defective().T.contiguous(), _param((80, 96), units_dim=1), 0),
    ("orthogonal", torch.nn.init.orthogonal_(torch.empty(48, 200), gain=1.4), _param((48, 200)), 1),
    ("conv", torch.randn(32, 6, 3, 3) * 0.2, _param((32, 6, 3, 3), kind=OpKind.CONV), 1),
    ("identity", torch.eye(48, 80) * 0.7, _param((48, 80)), 1),
    ("permutation", torch.eye(64)[torch.randperm(64, generator=torch.Generator().manual_seed(1))] * 2.0,
     _param((64, 64)), 0),
    ("dirac conv", torch.nn.init.dirac_(torch.empty(16, 16, 3, 3)), _param((16, 16, 3, 3), kind=OpKind.CONV), 0),
    ("lstm", torch.nn.init.orthogonal_(torch.empty(4 * 24, 24)), _param(
        (96, 24), kind=OpKind.RECURRENT_HIDDEN, gates=("i", "f", "g", "o")), 0),
]


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize(("name", "t", "param", "dim"), CASES, ids=[c[0] for c in CASES])
def test_sharded_analysis_equals_the_single_process_one(name, t, param, dim, ranks):
    single = analyze(t, param)
    for held in _sharded(t, param, dim, ranks):
        _assert_same(held, single)


def test_the_planted_defects_are_found_through_shards():
    results = _sharded(_defective(), _param((96, 80)), 1, 2)
    assert results[0].duplicates.exact_groups == [[5, 40, 70]]
    assert results[0].duplicates.near_groups == [[3, 11]]
    ortho = _sharded(CASES[3][1], CASES[3][2], 1, 2)[0]
    assert ortho.orthogonal_gain == pytest.approx(1.4, rel=1e-4)


def test_non_finite_values_low_precision_and_an_empty_shard():
    w = _defective()
    w[3, 4] = math.nan
    for t in (w, _defective().bfloat16()):
        param = _param((96, 80))
        for held in _sharded(t, param, 0, [60, 0, 36]):  # FSDP2 leaves a rank empty on small dims
            _assert_same(held, analyze(t, param))
    assert _sharded(w, _param((96, 80)), 1, 2)[1].stats.nonfinite == 1


@pytest.mark.parametrize("name", ["identity", "permutation", "dirac conv"])
def test_an_identity_init_is_recognised_through_shards(name):
    """The sharded audit of an eye_/dirac_/permutation weight reads the same gain c as the
    single-process one (not its entries' std), and a replicated box is not counted twice."""
    _, t, param, _ = next(c for c in CASES if c[0] == name)
    expected = {"identity": 0.7, "permutation": 2.0, "dirac conv": 1.0}[name]
    assert analyze(t, param).identity_gain == pytest.approx(expected)
    for held in _sharded(t, param, 0, 2, replicas=2) + _sharded(t, param, 1, [1, t.shape[1] - 1]):
        assert held.identity_gain == pytest.approx(expected)
    broken = t.clone()
    broken.view(-1)[broken.view(-1).nonzero()[0]] *= 2  # one line of another gain: no identity
    assert all(h.identity_gain is None for h in _sharded(broken, param, 1, 2))


def test_replicated_boxes_are_counted_once():
    t, param = _defective(), _param((96, 80))
    single = analyze(t, param)
    for held in _sharded(t, param, 0, 2, replicas=2):
        _assert_same(held, single)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_whole_tensor_read_in_place_equals_analyze(dtype):
    """The device-generic path (what a CUDA tensor takes) on a CPU tensor."""
    t = _defective().to(dtype)
    param = _param((96, 80))
    _assert_same(analyze_held(Held(t, tuple(t.shape), (0, 0)), param, AnalysisOptions()), analyze(t, param))


def test_moments_in_the_stored_dtype_equal_fp32_statistics():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300_001, generator=g) * 0.05 + 0.01
    for dtype in (torch.bfloat16, torch.float16):
        low = x.to(dtype)
        a, b = tensor_stats(low), tensor_stats(low.float())
        for k in ("mean", "std", "min", "max", "zero_fraction"):
            assert _close(getattr(a, k), getattr(b, k)), (dtype, k)


def test_cancellation_and_non_finite_values_across_chunks():
    x = 1.0 + 1e-4 * torch.randn(600_000, generator=torch.Generator().manual_seed(2))
    s = tensor_stats(x)
    assert s.std == pytest.approx(float(x.double().std(unbiased=False)), rel=1e-6)
    y = x.clone()
    y[7], y[400_000] = math.nan, math.inf
    t = tensor_stats(y)
    finite = y[torch.isfinite(y)].double()
    assert t.nonfinite == 2 and t.numel == 600_000
    assert t.mean == pytest.approx(float(finite.mean()), rel=1e-7)  # fp32 rounding
    assert t.std == pytest.approx(float(finite.std(unbiased=False)), rel=1e-6)
    big = torch.full((10,), 3e20)  # finite, but its square overflows fp32
    assert tensor_stats(big).std == 0 and tensor_stats(big).nonfinite == 0
