"""The report's statistics against values computed by hand or by scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from simulations import statistics
from simulations.statistics import (
    bootstrap_interval,
    paired_comparison,
    pareto_front,
    pooled_mean,
    pooled_root_mean_square,
    spread,
    t_interval,
    win_tie_loss,
)


def test_t_interval_of_one_to_five_matches_the_closed_form_and_scipy():
    values = [1, 2, 3, 4, 5]
    interval = t_interval(values)
    # s = sqrt(2.5), t(0.975, 4) = 2.7764451..., half-width = t * s / sqrt(5)
    half = stats.t.ppf(0.975, 4) * math.sqrt(2.5) / math.sqrt(5)
    assert interval.mean == pytest.approx(3.0)
    assert interval.half_width == pytest.approx(half)
    assert interval.half_width == pytest.approx(1.96324, abs=1e-5)
    low, high = stats.t.interval(0.95, 4, loc=3.0, scale=stats.sem(values))
    assert (interval.low, interval.high) == pytest.approx((low, high))


def test_t_interval_needs_two_values():
    assert t_interval([0.7]) is None
    assert t_interval([0.7, float("nan")]) is None


def test_spread_std_and_percentiles():
    result = spread([1, 2, 3, 4, 5])
    assert result.n == 5
    assert result.mean == pytest.approx(3.0)
    assert result.std == pytest.approx(math.sqrt(2.5))  # ddof = 1
    assert (result.p10, result.p90) == pytest.approx((1.4, 4.6))  # linear interpolation
    assert spread([2.0]).std == 0.0
    with pytest.raises(ValueError, match="empty"):
        spread([])


def test_bootstrap_is_deterministic_for_a_seed():
    values = np.random.default_rng(1).normal(size=12)
    first = bootstrap_interval(values, seed=3)
    assert bootstrap_interval(values, seed=3) == first
    assert bootstrap_interval(values, seed=4) != first
    assert first.low < values.mean() < first.high


def test_bootstrap_in_chunks_gives_the_same_resamples_count(monkeypatch):
    monkeypatch.setattr(statistics, "_BOOTSTRAP_CHUNK", 7)  # one resample of 5 per chunk
    interval = bootstrap_interval([1.0, 2.0, 3.0, 4.0, 5.0], n_resamples=101, seed=0)
    assert 1.0 <= interval.low < 3.0 < interval.high <= 5.0


def test_paired_comparison_where_the_candidate_always_wins():
    baseline = np.array([0.5, 0.6, 0.55, 0.7, 0.65, 0.52])
    candidate = baseline + np.array([0.05, 0.02, 0.04, 0.01, 0.03, 0.06])
    result = paired_comparison(candidate, baseline, seed=0)
    assert result.users == 6
    assert result.mean_difference == pytest.approx(0.035)
    assert 0 < result.ci.low < result.mean_difference < result.ci.high
    assert (result.wins, result.ties, result.losses) == (6, 0, 0)


def test_lower_is_better_counts_a_decrease_as_a_win():
    baseline = np.array([1.2, 1.0, 0.8])
    candidate = np.array([0.9, 1.0, 1.1])  # better, tied, worse for an error such as MAE
    result = paired_comparison(candidate, baseline, lower_is_better=True)
    assert (result.wins, result.ties, result.losses) == (1, 1, 1)
    assert win_tie_loss([-0.3, 0.0, 0.3], lower_is_better=False) == (1, 1, 1)


def test_ties_are_exact_within_1e_12():
    assert win_tie_loss([1e-13, -1e-13, 1e-11], lower_is_better=False) == (1, 2, 0)


def test_paired_samples_must_align():
    with pytest.raises(ValueError, match="length"):
        paired_comparison([1.0, 2.0], [1.0])


def test_pooled_mean_weighs_units_where_the_user_macro_mean_weighs_users():
    accuracy, examples = np.array([1.0, 0.0]), np.array([9, 1])
    assert accuracy.mean() == 0.5
    assert pooled_mean(accuracy, examples) == pytest.approx(0.9)


def test_pooled_rmse_is_the_rmse_of_all_errors():
    errors = [np.array([1.0, -1.0, 1.0]), np.array([3.0])]  # per-user rating errors
    per_user = np.array([np.sqrt(np.mean(e**2)) for e in errors])
    counts = np.array([len(e) for e in errors])
    all_errors = np.concatenate(errors)
    assert pooled_root_mean_square(per_user, counts) == pytest.approx(
        np.sqrt(np.mean(all_errors**2)))
    assert pooled_root_mean_square(per_user, counts) != pytest.approx(
        pooled_mean(per_user, counts))


def test_pooling_skips_users_without_units():
    assert pooled_mean([0.5, float("nan"), 1.0], [2, 3, 0]) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="positive count"):
        pooled_mean([0.5], [0])


@pytest.mark.parametrize("higher_is_better, expected", [(True, [3, 0, 1, 2]), (False, [3])])
def test_pareto_front(higher_is_better, expected):
    costs = [1.0, 10.0, 100.0, 0.5, 50.0]
    quality = [0.6, 0.7, 0.8, 0.5, 0.65]  # point 4 costs more than 1 for less quality
    assert pareto_front(costs, quality, higher_is_better) == expected


def test_pareto_front_drops_an_equal_quality_at_a_higher_cost():
    assert pareto_front([0.0, 5.0, 5.0], [0.5, 0.5, 0.7]) == [0, 2]
