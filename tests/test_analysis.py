"""Per-tensor analysis: exact statistics, duplicate search against brute force."""

from __future__ import annotations

import torch

from initaudit.analysis import AnalysisOptions, duplicate_rows, orthogonal_gain, tensor_stats


def test_stats_match_torch_and_handle_nonfinite_and_constants():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(100_000, generator=g) * 0.3 + 0.1
    s = tensor_stats(x)
    assert abs(s.mean - x.mean().item()) < 1e-6 and abs(s.std - x.std(unbiased=False).item()) < 1e-6
    assert (s.min, s.max) == (x.min().item(), x.max().item()) and s.nonfinite == 0
    y = x.clone()
    y[5], y[7] = float("nan"), float("inf")
    t = tensor_stats(y)
    assert t.nonfinite == 2 and abs(t.mean - torch.cat([x[:5], x[6:7], x[8:]]).mean().item()) < 1e-6
    c = tensor_stats(torch.full((1000,), 0.37))
    assert c.std == 0 and c.min == c.max == torch.tensor(0.37).item()
    assert tensor_stats(torch.zeros(10)).zero_fraction == 1.0


def _brute_force_pairs(rows: torch.Tensor, threshold: float) -> set[tuple[int, int]]:
    c = rows - rows.mean(0)
    c = c / c.norm(dim=1, keepdim=True)
    cos = torch.triu(c @ c.T, diagonal=1)
    return {tuple(p) for p in torch.nonzero(cos >= threshold).tolist()}


def test_lsh_finds_the_same_near_duplicates_as_all_pairs():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(3000, 128, generator=g) + 2.0 * torch.randn(128, generator=g)  # shared direction
    planted = []
    for k in range(40):  # near-copies from cosine ~0.9995 down to ~0.996
        a, b = 2 * k, 2 * k + 1001
        noise = (0.01 + 0.002 * k) * rows[a].sub(rows.mean(0)).norm() / 128 ** 0.5
        rows[b] = rows[a] + noise * torch.randn(128, generator=g)
        planted.append((a, b))
    truth = _brute_force_pairs(rows, 0.995)
    assert len(truth) >= 30  # most planted pairs are above the threshold
    found = duplicate_rows(rows, AnalysisOptions(near_duplicate_cosine=0.995))
    pairs = {(g[0], x) for g in found.near_groups for x in g[1:]}
    recall = len(pairs & truth) / len(truth)
    assert recall >= 0.95 and pairs <= truth  # no false pairs: every candidate is checked exactly


def test_exact_duplicates_including_zero_rows():
    g = torch.Generator().manual_seed(0)
    rows = torch.randn(500, 32, generator=g)
    rows[10] = rows[400]
    rows[20:25] = 0.0
    found = duplicate_rows(rows, AnalysisOptions())
    assert [10, 400] in found.exact_groups and [20, 21, 22, 23, 24] in found.exact_groups
    assert found.exact_rows == 5 and found.near_groups == []


def test_orthogonal_detection():
    w = torch.empty(64, 128)
    torch.nn.init.orthogonal_(w, gain=2.0)
    assert abs(orthogonal_gain(w) - 2.0) < 1e-3
    assert orthogonal_gain(torch.randn(64, 128, generator=torch.Generator().manual_seed(0))) is None


def test_zero_count_is_exact_with_negative_zeros_in_every_stored_dtype():
    """The zero count reads bit patterns: +0 is all bits clear, but -0 (``w * 0`` of a negative
    w, as pruning leaves) is not, so a chunk holding one must be counted by value."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(700_000, generator=g)
    x[::5] = 0.0
    x[3::7] *= 0.0  # -0 where x was negative
    assert bool(torch.signbit(x[x == 0]).any())  # the case is really there
    zeros = int((x == 0).sum())
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        s = tensor_stats(x.to(dtype))
        assert s.zero_fraction == zeros / x.numel(), dtype
    only_negative_zeros = -torch.zeros(1000)
    assert tensor_stats(only_negative_zeros).zero_fraction == 1.0


def test_half_precision_statistics_equal_their_fp32_widening():
    """bf16/fp16 are read in place (extrema in the stored dtype, sums of fp32 chunks), never as
    a whole fp32 copy: the figures equal those of the widened tensor."""
    g = torch.Generator().manual_seed(1)
    for dtype in (torch.bfloat16, torch.float16):
        t = (torch.randn(600_000, generator=g) * 0.02 + 0.001).to(dtype)
        a, b = tensor_stats(t), tensor_stats(t.float())
        assert (a.min, a.max, a.zero_fraction, a.nonfinite) == (b.min, b.max, b.zero_fraction, b.nonfinite)
        assert abs(a.mean - b.mean) <= 1e-6 * abs(b.mean) and abs(a.std - b.std) <= 1e-6 * b.std


def test_bf16_rows_are_searched_in_place_with_the_fp32_result():
    """Exact copies are found on bf16 bit patterns and near-copies on fp32 windows and rows of
    the bf16 matrix: the same groups as the search of its fp32 widening."""
    g = torch.Generator().manual_seed(2)
    rows = torch.randn(2000, 256, generator=g)
    rows[100:110] = rows[5]
    rows[700] = rows[9] + 0.02 * torch.randn(256, generator=g)
    half = rows.to(torch.bfloat16)
    opts = AnalysisOptions(near_duplicate_cosine=0.995)
    a, b = duplicate_rows(half, opts), duplicate_rows(half.float(), opts)
    assert a.exact_groups == b.exact_groups == [[5, *range(100, 110)]]
    assert a.near_groups == b.near_groups == [[9, 700]]


def test_orthogonal_check_needs_more_than_equal_row_lengths():
    """Rows of equal length pass the Gram diagonal, which is read first; the off-diagonal then
    rejects them unless they are orthogonal."""
    g = torch.Generator().manual_seed(3)
    w = torch.randn(64, 512, generator=g)
    w = 1.5 * w / w.norm(dim=1, keepdim=True)
    assert orthogonal_gain(w) is None
    torch.nn.init.orthogonal_(w, gain=1.5)
    assert abs(orthogonal_gain(w) - 1.5) < 1e-3
    assert abs(orthogonal_gain(w.T.contiguous()) - 1.5) < 1e-3  # tall: the columns are read


def test_static_pass_of_a_checkpoint_does_not_import_dtensor(tmp_path):
    """No DTensor can exist before torch.distributed.tensor is imported, so the check for one
    must not import it: the import (sympy and the DTensor op tables) cost more than the whole
    static pass of a 1B checkpoint."""
    import subprocess
    import sys

    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(4)
    save_file({"0.weight": torch.randn(64, 32, generator=g) * 0.1, "0.bias": torch.zeros(64)},
              str(tmp_path / "m.safetensors"))
    code = ("import sys, initaudit; initaudit.audit(sys.argv[1], config=False); "
            "print('torch.distributed.tensor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "m.safetensors")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
