"""The statistics behind a report, kept free of files and row formats so each can be checked
against a value computed by hand.

Why these and not others:

- A result is a sample of users (and of seeds), so every mean comes with its spread over users
  (std, p10, p90) and, when a run has several seeds, a Student-t 95 % interval over the
  per-seed means: with 3–5 seeds a normal interval would be too narrow.
- Strategies are evaluated on the same users and data, so a comparison with the baseline is
  paired: per-user differences, a percentile bootstrap over users for their mean (no normality
  assumption on a handful of skewed differences) and wins/ties/losses, which show whether a
  mean gain comes from most users or from a few.
- A user-macro mean weighs users equally; a pooled value weighs the evaluated units (examples,
  impressions) equally. Both are reported because they answer different questions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
TIE_TOLERANCE = 1e-12
_BOOTSTRAP_CHUNK = 2_000_000  # resampled values held in memory at once


@dataclass(frozen=True)
class Spread:
    """Mean and spread of one sample (std with ddof=1; 0 for a single value)."""

    n: int
    mean: float
    std: float
    p10: float
    p90: float


@dataclass(frozen=True)
class Interval:
    """A mean and its confidence interval."""

    mean: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


@dataclass(frozen=True)
class PairedComparison:
    """Candidate minus baseline over paired users, in the metric's own units.

    ``wins`` counts users where the candidate is better in the metric's direction (lower for
    an error such as MAE), ``ties`` users within ``TIE_TOLERANCE``."""

    users: int
    mean_difference: float
    ci: Interval
    wins: int
    ties: int
    losses: int


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    return array[np.isfinite(array)]


def spread(values: Sequence[float] | np.ndarray) -> Spread:
    """Mean, std, 10th and 90th percentiles of the finite values (linear interpolation)."""
    array = _finite(values)
    if not len(array):
        raise ValueError("spread of an empty sample")
    std = float(array.std(ddof=1)) if len(array) > 1 else 0.0
    p10, p90 = np.percentile(array, [10, 90])
    return Spread(len(array), float(array.mean()), std, float(p10), float(p90))


def t_interval(values: Sequence[float] | np.ndarray,
               confidence: float = CONFIDENCE) -> Interval | None:
    """Student-t interval for the mean: mean ± t_{(1+c)/2, n-1} · s / √n.

    None for fewer than two values: one seed gives no interval, and none is invented."""
    array = _finite(values)
    if len(array) < 2:
        return None
    mean = float(array.mean())
    half = float(stats.t.ppf((1 + confidence) / 2, len(array) - 1)
                 * array.std(ddof=1) / np.sqrt(len(array)))
    return Interval(mean, mean - half, mean + half)


def bootstrap_interval(values: Sequence[float] | np.ndarray, n_resamples: int = 10_000,
                       seed: int = 0, confidence: float = CONFIDENCE) -> Interval:
    """Percentile bootstrap interval of the mean: resample the values with replacement
    ``n_resamples`` times (``numpy.random.default_rng(seed)``, so a seed fixes the interval)."""
    array = _finite(values)
    if not len(array):
        raise ValueError("bootstrap of an empty sample")
    rng = np.random.default_rng(seed)
    per_chunk = max(1, _BOOTSTRAP_CHUNK // len(array))
    means = np.concatenate([
        rng.choice(array, size=(min(per_chunk, n_resamples - start), len(array))).mean(axis=1)
        for start in range(0, n_resamples, per_chunk)
    ])
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(array.mean()), float(low), float(high))


def win_tie_loss(differences: Sequence[float] | np.ndarray, lower_is_better: bool,
                 tolerance: float = TIE_TOLERANCE) -> tuple[int, int, int]:
    """Counts of differences (candidate − baseline) that are better, equal, worse."""
    array = _finite(differences)
    better = -array if lower_is_better else array
    ties = int(np.sum(np.abs(array) <= tolerance))
    wins = int(np.sum(better > tolerance))
    return wins, ties, len(array) - wins - ties


def paired_comparison(candidate: Sequence[float] | np.ndarray,
                      baseline: Sequence[float] | np.ndarray, lower_is_better: bool = False,
                      n_resamples: int = 10_000, seed: int = 0) -> PairedComparison:
    """Compare two strategies on the same users (``candidate[i]`` and ``baseline[i]`` are one
    user's values): mean difference, its bootstrap interval over users, wins/ties/losses."""
    cand, base = np.asarray(candidate, dtype=float), np.asarray(baseline, dtype=float)
    if cand.shape != base.shape:
        raise ValueError(f"paired samples differ in length: {cand.shape} vs {base.shape}")
    differences = _finite(cand - base)
    interval = bootstrap_interval(differences, n_resamples=n_resamples, seed=seed)
    wins, ties, losses = win_tie_loss(differences, lower_is_better)
    return PairedComparison(len(differences), interval.mean, interval, wins, ties, losses)


def pooled_mean(values: Sequence[float] | np.ndarray,
                counts: Sequence[float] | np.ndarray) -> float:
    """Count-weighted mean Σ nᵢ vᵢ / Σ nᵢ: exact pooling for a per-user mean over units
    (accuracy, MAE, impression-averaged AUC/MRR/nDCG)."""
    v, n = _paired_finite(values, counts)
    return float(np.sum(n * v) / np.sum(n))


def pooled_root_mean_square(values: Sequence[float] | np.ndarray,
                            counts: Sequence[float] | np.ndarray) -> float:
    """√(Σ nᵢ vᵢ² / Σ nᵢ): exact pooling of per-user root-mean-square errors (RMSE)."""
    v, n = _paired_finite(values, counts)
    return float(np.sqrt(np.sum(n * v**2) / np.sum(n)))


def _paired_finite(values: Sequence[float] | np.ndarray,
                   counts: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    v, n = np.asarray(values, dtype=float), np.asarray(counts, dtype=float)
    if v.shape != n.shape:
        raise ValueError(f"values and counts differ in length: {v.shape} vs {n.shape}")
    keep = np.isfinite(v) & np.isfinite(n) & (n > 0)
    if not keep.any():
        raise ValueError("pooling needs at least one value with a positive count")
    return v[keep], n[keep]


def pareto_front(costs: Sequence[float], qualities: Sequence[float],
                 higher_is_better: bool = True) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and quality, ordered by
    cost: the strategies worth their price."""
    cost = np.asarray(costs, dtype=float)
    quality = np.asarray(qualities, dtype=float) * (1 if higher_is_better else -1)
    front = []
    for i in np.lexsort((-quality, cost)):
        if not front or quality[i] > quality[front[-1]]:
            front.append(int(i))
    return front
