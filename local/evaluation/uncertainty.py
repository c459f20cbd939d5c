"""Uncertainty of mean figures: percentile bootstrap intervals over test mixtures (Efron and Tibshirani 1993).

Test mixtures are the unit of resampling (the sources of one mixture are not independent). A paired
comparison resamples the per-mixture differences of two experiments on the same test views, which is far
tighter than comparing two separate intervals. scipy.stats.bootstrap does the resampling, seeded.
"""
import numpy as np
from scipy import stats

from local.common import seeding


def bootstrap_ci(values, n_resamples=1000, seed=0, level=0.95):
    """(low, high) percentile bootstrap interval of the mean of `values` (NaNs left out)."""
    values = np.asarray(values, dtype=float)
    values = values[~np.isnan(values)]
    if len(values) < 2 or np.all(values == values[0]):
        mean = float(values.mean()) if len(values) else float("nan")
        return mean, mean
    result = stats.bootstrap((values,), np.mean, n_resamples=int(n_resamples), confidence_level=level,
                             method="percentile", vectorized=True, rng=seeding.stream("bootstrap", seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_difference(a, b, n_resamples=1000, seed=0, level=0.95):
    """Mean of b - a over paired values, with its bootstrap interval: {mean, ci95, n}."""
    diff = np.asarray(b, dtype=float) - np.asarray(a, dtype=float)
    low, high = bootstrap_ci(diff, n_resamples, seed, level)
    return {"mean": float(np.nanmean(diff)), "ci95": [low, high], "n": int((~np.isnan(diff)).sum())}
