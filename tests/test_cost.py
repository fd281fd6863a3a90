"""The static pass's cost cuts change no result: the orthogonality check's first step rejects
only what its full test would, and the weight spectra run on one torch thread."""

from __future__ import annotations

import math

import pytest
import torch

from initaudit import stage
from initaudit.loaders.target import load_target
from initaudit.pool import one_thread
from initaudit.rowsearch import orthogonal_gain


def _full_test(lines: torch.Tensor) -> float | None:
    """The orthogonality test as defined: G = S S^T of the lines equals g^2 I within 1e-3 g^2."""
    s = lines.double()
    gram = s @ s.T
    scale = float(gram.diagonal().mean())
    if scale <= 0 or float((gram - scale * torch.eye(s.shape[0], dtype=s.dtype)).abs().max()) > 1e-3 * scale:
        return None
    return math.sqrt(scale)


def _scaled_orthogonal(excess: list[float], cols: int = 256) -> torch.Tensor:
    """64 orthonormal rows (x 1.5), row i's squared length times 1 + excess[i] (rest: 1)."""
    w = torch.empty(64, cols)
    torch.nn.init.orthogonal_(w, gain=1.5, generator=torch.Generator().manual_seed(0))
    factor = torch.ones(64, dtype=torch.float64)
    factor[:len(excess)] += torch.tensor(excess, dtype=torch.float64)
    return (w.double() * factor.sqrt()[:, None]).float()


@pytest.mark.parametrize("excess", [
    [0.00099, -0.00099],  # the first lines' range near its bound: the full test still passes
    [0.0009, 0.0],
    [0.0011, -0.0011],  # just past the tolerance: the full test fails
    [0.004, 0.0],  # past the first step's bound: rejected there
    [0.0] * 8 + [0.003],  # the first 8 agree, line 9 does not: rejected by the full test
    [],
])
def test_orthogonal_first_step_rejects_only_what_the_full_test_does(excess):
    w = _scaled_orthogonal(excess)
    expected = _full_test(w)  # 64 rows: all of them are the lines
    got = orthogonal_gain(w)
    assert (got is None) == (expected is None)
    if expected is not None:
        assert got == pytest.approx(expected, rel=1e-6)


def test_orthogonal_first_step_on_columns_and_iid():
    tall = _scaled_orthogonal([0.00099, -0.00099]).T.contiguous()  # 256 x 64: columns are the lines
    assert orthogonal_gain(tall) == pytest.approx(_full_test(tall.T), rel=1e-6)
    iid = torch.randn(4096, 512, generator=torch.Generator().manual_seed(3)) * 0.02
    assert orthogonal_gain(iid) is None and orthogonal_gain(iid.to(torch.bfloat16)) is None


def test_one_thread_restores_the_thread_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with one_thread():
            inside = torch.get_num_threads()
        assert (inside, torch.get_num_threads()) == (1, 2)
        with pytest.raises(ValueError), one_thread():
            raise ValueError
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_spectra_run_on_one_thread(monkeypatch):
    model = torch.nn.Sequential(*[torch.nn.Linear(64, 64) for _ in range(4)])
    graph, _ = load_target(model)
    seen = []
    real = stage.edge_ratio
    monkeypatch.setattr(stage, "edge_ratio", lambda m: seen.append(torch.get_num_threads()) or real(m))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        found = stage.spectra(graph.params.values(), graph.load_tensor)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert len(found) == 4 and seen == [1] * 4
    assert all(0.5 < s.rho < stage.OUTLIER_RHO for s in found)  # i.i.d. inits: no evidence


def test_a_distributed_checkpoint_chunk_is_read_into_its_tensor_not_copied_first(tmp_path):
    """The chunk's bytes go from the file into the tensor's storage through the byte-range
    window: no Python copy of the chunk (a BytesIO of it held it twice) beside the tensor."""
    import tracemalloc

    from initaudit.loaders.directory import read_dcp
    from tests.test_checkpoint_dirs import _dcp_save

    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0)) * 0.02  # 4 MB
    ckpt = read_dcp(_dcp_save({"w": w, "b": torch.zeros(4)}, tmp_path / "ck"))
    tracemalloc.start()
    try:
        value = ckpt.load("w")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert torch.equal(value, w)
    assert peak < 1 << 20  # the chunk is 4 MB


def _matrices(path, trained: bool):
    """Four 64 x 128 matrices in one safetensors file: i.i.d. N(0, 0.02), or with the rank-one
    outlier training leaves (largest singular value several times the Marchenko-Pastur edge)."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    tensors = {}
    for i in range(4):
        w = torch.randn(64, 128, generator=g) * 0.02
        if trained:
            w += 0.02 * torch.randn(64, 1, generator=g) @ torch.randn(1, 128, generator=g)
        tensors[f"layers.{i}.weight"] = w
    save_file(tensors, path)
    return path


@pytest.mark.parametrize("trained", [False, True])
def test_the_pool_measures_the_spectra_where_it_reads_the_matrices(tmp_path, monkeypatch, trained):
    """The stage evidence's spectra come from the workers (the caller maps no matrix again for
    its 256 x 512 sample: at 1B bf16 that moment was the caller's whole peak), with the values the
    caller would have measured; a trained-looking checkpoint is still recognised."""
    import initaudit
    from initaudit import pool

    path = _matrices(tmp_path / "model.safetensors", trained)
    graph, _ = load_target(str(path))
    direct = stage.spectra(graph.params.values(), graph.load_tensor)
    median = sorted(s.rho for s in direct)[len(direct) // 2]
    calls = []
    real = stage.edge_ratio
    monkeypatch.setattr(stage, "edge_ratio", lambda m: calls.append(m.shape) or real(m))
    monkeypatch.setattr(pool, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(pool, "available_cores", lambda: 2)
    report = initaudit.audit(str(path), config=False)
    assert calls == []  # every spectrum was measured in a (forked) worker
    assert len(direct) == 4 and f"{median:.2g}x" in report.stage_reason
    if trained:
        assert report.stage == "trained" and "weight spectra: 4 of 4 matrices" in report.stage_reason
    else:
        assert report.stage == "init" and "median of 4 matrices" in report.stage_reason


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_extrema_come_from_numpy_and_stay_exact(monkeypatch, dtype):
    """A CPU chunk's min and max are read by numpy from the fp32 chunk (torch.aminmax cost 3-5x
    as much on it); exact against float64 on chunks that are all negative, all positive, hold
    -0, +0, an inf or a NaN."""
    from initaudit import moments

    monkeypatch.setattr(moments, "CHUNK", 1000)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6000, generator=g)
    x[:1000] = -x[:1000].abs() - 1  # all negative
    x[1000:2000] = x[1000:2000].abs() + 1  # all positive
    x[2500], x[2600] = -0.0, 0.0
    x[3500], x[4500] = math.inf, math.nan
    x = x.to(dtype)
    monkeypatch.setattr(torch, "aminmax", lambda *a, **k: pytest.fail("torch.aminmax on a CPU chunk"))
    got = moments.tensor_stats(x)
    ref = x.double()
    fin = ref[torch.isfinite(ref)]
    assert (got.min, got.max) == (float(fin.min()), float(fin.max()))
    assert got.nonfinite == 2 and got.zero_fraction == 2 / 6000
    assert got.mean == pytest.approx(float(fin.mean()), rel=1e-6)
    assert got.std == pytest.approx(float(fin.std(correction=0)), rel=1e-6)


def test_lsh_keys_are_the_sign_bits_packed():
    """The near-duplicate search's keys: bit b of table t is sign t * 24 + b, as the float
    product sum(sign * 2^b) it replaces gave them (the same candidates, the same findings)."""
    from initaudit.rowsearch import _pack_signs

    g = torch.Generator().manual_seed(0)
    signs = torch.randn(300, 144, generator=g) > 0
    expected = (signs.float().view(-1, 6, 24) @ (2 ** torch.arange(24)).float()).to(torch.int64)
    assert torch.equal(_pack_signs(signs, 6, 24), expected)


@pytest.mark.parametrize("dtype,cols,words", [(torch.bfloat16, 2048, 16), (torch.float32, 2048, 32),
                                              (torch.float16, 6, 6)])
def test_the_exact_search_hashes_its_window_as_64_bit_words(dtype, cols, words):
    """The exact-duplicate key of a 64-column window reads 4 bf16/fp16 (2 fp32) values per
    64-bit word, so 4x (2x) fewer products; a row that is not whole words (6 fp16 columns) is
    hashed as it is. Copies are found either way."""
    from initaudit.rowsearch import _HASH_COLUMNS, _exact_pairs, _words

    g = torch.Generator().manual_seed(0)
    rows = torch.randn(300, cols, generator=g).to(dtype)
    rows[10], rows[299] = rows[3], rows[3]
    window = rows.view(torch.int16 if dtype != torch.float32 else torch.int32)[:, :_HASH_COLUMNS]
    packed, coeffs = _words(window, torch.ones(window.shape[1], dtype=torch.int64))
    assert packed.shape == (300, words) and coeffs.numel() == words
    assert torch.equal(packed[3], packed[10])
    assert sorted(_exact_pairs(rows, torch.Generator().manual_seed(0))) == [(3, 10), (10, 299)]
