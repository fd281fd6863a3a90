"""initaudit.probe.stats.site_stats: one observed tensor -> SiteStats (shared by both probes)."""

from __future__ import annotations

import math

import pytest
import torch

from initaudit.graph import Activation
from initaudit.probe.stats import SATURATION, histogram, site_stats


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mean_std_and_unit_std_separate_bias_from_signal():
    x = torch.randn(256, 50, generator=_gen()) * 0.5
    bias = torch.linspace(-3, 3, 50)
    s = site_stats(x + bias, name="a", kind="layer", unit_dim=-1)
    assert s.units == 50 and s.samples == 256
    assert s.unit_std == pytest.approx(0.5, rel=0.05)  # the input-dependent spread
    assert s.std == pytest.approx(math.sqrt(0.25 + float(bias.var(unbiased=False))), rel=0.05)
    assert s.mean == pytest.approx(float((x + bias).mean()), abs=1e-6)


def test_conv_layout_units_are_channels():
    x = torch.randn(8, 6, 5, 5, generator=_gen())
    x[:, 2] = 0.0
    s = site_stats(x, name="c", kind="layer", unit_dim=1, activation=Activation("relu"))
    assert (s.units, s.samples) == (6, 8 * 25)
    assert s.dead_fraction == pytest.approx(1 / 6)
    assert s.constant_units == 1


def test_tiny_spread_under_a_large_mean_is_resolved_exactly():
    x = torch.randn(300, 20, generator=_gen()) * 1e-7 + 0.5
    s = site_stats(x, name="b", kind="layer", unit_dim=-1)
    assert s.unit_std == pytest.approx(1e-7, rel=0.1)
    const = site_stats(torch.full((64, 8), 0.37), name="k", kind="layer", unit_dim=-1)
    assert const.unit_std == 0.0 and const.constant_units == 8


@pytest.mark.parametrize("act,scale,expected", [
    ("tanh", 10.0, 2 * (1 - 0.5 * (1 + math.erf(2.6467 / 10 / math.sqrt(2))))),
    ("sigmoid", 10.0, 2 * (1 - 0.5 * (1 + math.erf(4.5951 / 10 / math.sqrt(2))))),
    ("hardtanh", 1.0, 2 * (1 - 0.5 * (1 + math.erf(1 / math.sqrt(2))))),
])
def test_saturated_fraction_matches_the_gaussian_tail(act, scale, expected):
    x = torch.randn(4096, 64, generator=_gen()) * scale
    s = site_stats(x, name="s", kind="layer", unit_dim=-1, activation=Activation(act))
    assert s.saturated_fraction == pytest.approx(expected, abs=0.01)


def test_saturation_read_on_the_output_agrees_with_the_input():
    x = torch.randn(512, 32, generator=_gen()) * 4
    for act, fn in (("tanh", torch.tanh), ("sigmoid", torch.sigmoid)):
        pre = site_stats(x, name="p", kind="layer", unit_dim=-1, activation=Activation(act))
        post = site_stats(fn(x), name="q", kind="act", unit_dim=-1, activation=Activation(act),
                          pre_activation=False)
        assert post.saturated_fraction == pytest.approx(pre.saturated_fraction, abs=2e-3)
    assert SATURATION["tanh"][1] == pytest.approx(math.atanh(0.99))


def test_dead_units_on_pre_activation_and_on_relu_output():
    x = torch.randn(128, 10, generator=_gen())
    x[:, :3] = -x[:, :3].abs() - 0.1  # three units never positive
    pre = site_stats(x, name="p", kind="layer", unit_dim=-1, activation=Activation("relu"))
    post = site_stats(torch.relu(x), name="a", kind="act", unit_dim=-1, activation=Activation("relu"),
                      pre_activation=False)
    assert pre.dead_fraction == post.dead_fraction == pytest.approx(0.3)
    hs = site_stats(x - 3, name="h", kind="layer", unit_dim=-1, activation=Activation("hardswish"))
    assert hs.dead_fraction >= 0.3


def test_identical_units_found_and_rounding_tolerated():
    x = torch.randn(64, 40, generator=_gen())
    x[:, 7] = x[:, 3]
    x[:, 9] = x[:, 3] * (1 + 1e-7)  # matrix-product rounding
    x[:, 20] = x[:, 21] = 0.0
    s = site_stats(x, name="i", kind="layer", unit_dim=-1)
    assert s.identical_groups == [[3, 7, 9], [20, 21]]
    assert s.identical_units == 3
    conv = torch.randn(4, 16, 3, 3, generator=_gen())
    conv[:, 5] = conv[:, 11]
    assert site_stats(conv, name="c", kind="layer", unit_dim=1).identical_groups == [[5, 11]]


def test_near_constant_columns_of_a_collapsed_layer_are_not_copies():
    base = torch.tensor([0.1, 0.1 + 1e-7, 0.3])  # offsets equal to 1e-6 relative, by chance
    x = base + torch.randn(64, 3, generator=_gen()) * 1e-9
    assert site_stats(x, name="n", kind="layer", unit_dim=-1).identical_groups == []


def test_nonfinite_counted_and_stats_over_the_finite_values():
    x = torch.randn(32, 8, generator=_gen())
    x[0, 0], x[1, 1] = float("nan"), float("inf")
    s = site_stats(x, name="n", kind="layer", unit_dim=-1)
    assert s.nonfinite == 2
    assert math.isfinite(s.std) and s.std > 0.5


def test_histogram_shows_the_activation_output():
    x = torch.randn(512, 16, generator=_gen()) * 10
    s = site_stats(x, name="h", kind="layer", unit_dim=-1, activation=Activation("sigmoid"),
                   histogram_bins=10)
    edges, counts = s.histogram
    assert len(edges) == 11 and sum(counts) == x.numel()
    assert edges[0] >= 0 and edges[-1] <= 1  # phi(x), piling at 0 and 1
    assert counts[0] > 0.3 * x.numel() and counts[-1] > 0.3 * x.numel()
    assert histogram(torch.zeros(5), 4) == ([0.0, 0.0], [5])


def test_histogram_counts_bin_for_bin_as_histc_over_any_finite_range():
    g = _gen()
    for x in (torch.randn(100_000, generator=g), torch.rand(3000, generator=g) ** 4,
              torch.randn(5000, generator=g, dtype=torch.float64) * 1e-40):
        edges, counts = histogram(x, 24)
        assert counts == torch.histc(x.double(), 24, float(x.min()), float(x.max())).long().tolist()
    # float32 extremes: a range over 1e38 and one of a few subnormals keep every value, each in its bin
    _, counts = histogram(torch.tensor([-3e38, -1e38, 0.0, 2e38, 3e38]), 5)
    assert counts == [1, 1, 1, 0, 2]
    tiny = torch.tensor([0.0, 1.0, 2.0]) * 1.4e-45  # 0, 1 and 2 smallest float32 subnormals
    assert histogram(tiny, 2) == ([0.0, float(tiny[1]), float(tiny[2])], [1, 2])
    # non-finite values are left out; integer and bfloat16 tensors are counted as floats
    assert histogram(torch.tensor([float("nan"), 1.0, 2.0, float("inf"), 2.0]), 2) == ([1.0, 1.5, 2.0], [1, 2])
    assert histogram(torch.arange(10), 5)[1] == [2] * 5
    assert sum(histogram(torch.randn(999, generator=g).bfloat16(), 7)[1]) == 999


def test_large_tensors_use_the_scratch_path_with_the_same_result():
    x = torch.randn(40, 64, 900, generator=_gen())  # > 1M elements: chunked square sums
    s = site_stats(x, name="l", kind="layer", unit_dim=1)
    assert s.std == pytest.approx(float(x.double().std(unbiased=False)), rel=1e-4)
