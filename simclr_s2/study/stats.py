"""Uncertainty of the study's test metrics, and paired tests of one model against another.

Two sources of uncertainty, measured separately:
- training randomness: the spread of a metric across seeds, as a Student t interval of the mean;
- the finite test set: a percentile bootstrap over test patches (Efron & Tibshirani 1993, "An
  Introduction to the Bootstrap", ch. 13), the only interval one seed allows.
Two models scored on the same test patches are compared by a paired bootstrap of their metric
difference (every resample draws the same patches for both, so what they share cancels) and, for
accuracy, by McNemar's test (McNemar 1947), exact: the two-sided binomial test of the discordant pairs.

Resamples draw patch indices from numpy's PCG64 seeded with `seed`, chunk by chunk in resample order,
so a seed gives the same interval on every machine and run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as scipy_stats

from simclr_s2.learning.metrics import accuracy, correct, f1, roc_auc

LEVEL = 0.95
N_BOOT = 2000
_CHUNK_CELLS = 1 << 22  # resampled patches held at once (about 32 MiB of indices)


@dataclass(frozen=True)
class PairedDifference:
    """Metric of model A minus model B on the same patches, its percentile interval and two-sided p."""

    diff: float
    low: float
    high: float
    p: float


@dataclass(frozen=True)
class McNemar:
    """b: patches A gets right and B wrong; c: the reverse; p: exact two-sided p of b vs c."""

    b: int
    c: int
    p: float


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student t interval of the mean, mean -/+ t(1 - alpha/2, n - 1) * s / sqrt(n); NaN for fewer than
    two values (no spread to measure). Seeds are few (3 to 5), so the t quantile, not the normal one."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": accuracy, "f1": f1, "auc": roc_auc}
"""Each scores a stack of resamples along the last axis, at metrics.DEFAULT_THRESHOLD."""


def metric(name: str, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """One of METRICS on one set of patches, as the bootstrap computes it on each resample."""
    return float(_metric(name)(np.asarray(labels, dtype=bool), np.asarray(probabilities, dtype=np.float64)))


def _metric(name: str) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    if name not in METRICS:
        raise ValueError(f"metric {name!r}: expected one of {sorted(METRICS)}")
    return METRICS[name]


def resample_indices(n: int, n_boot: int, seed: int) -> list[np.ndarray]:
    """Bootstrap resamples of n patches as (chunk, n) index arrays, n_boot rows in all: row b is the
    b-th draw of rng.integers(0, n, size=n) from default_rng(seed)."""
    rng = np.random.default_rng(seed)
    rows = max(1, _CHUNK_CELLS // max(n, 1))
    return [rng.integers(0, n, size=(min(rows, n_boot - start), n)) for start in range(0, n_boot, rows)]


def bootstrap_interval(labels: np.ndarray, probabilities: np.ndarray, metric_name: str, *, n_boot: int = N_BOOT,
                       seed: int = 0, level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of a metric over the test patches (Efron & Tibshirani 1993, eq. 13.5):
    the alpha/2 and 1 - alpha/2 quantiles of the metric over n_boot resamples drawn with replacement.
    Resamples where the metric is undefined (AUC of one class) are left out."""
    y, p = _check_patches(labels, probabilities)
    fn = _metric(metric_name)
    values = np.concatenate([fn(y[rows], p[rows]) for rows in resample_indices(len(y), n_boot, seed)])
    low, high = np.nanpercentile(values, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def paired_bootstrap(labels: np.ndarray, probabilities_a: np.ndarray, probabilities_b: np.ndarray,
                     metric_name: str, *, n_boot: int = N_BOOT, seed: int = 0,
                     level: float = LEVEL) -> PairedDifference:
    """Paired bootstrap of metric(A) - metric(B) on the same patches (Efron & Tibshirani 1993, ch. 16).

    probabilities_a / _b: (n,) for one pair of runs, or (k, n) for k pairs (seeds) scored on the same n
    patches; the difference is then the mean over pairs, and every resample draws the same patches for
    all of them. The interval is the percentile interval of the resampled differences; p is two-sided,
    2 * (1 + #{d* on the far side of 0}) / (n_boot + 1), capped at 1 (Davison & Hinkley 1997, eq. 4.11),
    so it is never 0 with finitely many resamples."""
    y, pa = _check_patches(labels, probabilities_a)
    _, pb = _check_patches(labels, probabilities_b)
    if pa.shape != pb.shape:
        raise ValueError(f"paired_bootstrap: A has shape {pa.shape}, B {pb.shape}")
    fn = _metric(metric_name)

    def difference(rows: np.ndarray) -> np.ndarray:
        return (fn(y[rows], pa[..., rows]) - fn(y[rows], pb[..., rows])).reshape(-1, *rows.shape[:-1]).mean(0)

    observed = float(difference(np.arange(len(y))))
    values = np.concatenate([difference(rows) for rows in resample_indices(len(y), n_boot, seed)])
    values = values[~np.isnan(values)]
    low, high = np.percentile(values, [50 * (1 - level), 50 * (1 + level)])
    far = min(int((values <= 0).sum()), int((values >= 0).sum()))
    return PairedDifference(observed, float(low), float(high), min(1.0, 2 * (1 + far) / (len(values) + 1)))


def mcnemar(labels: np.ndarray, probabilities_a: np.ndarray, probabilities_b: np.ndarray) -> McNemar:
    """McNemar's test of equal accuracy on the same patches, exact: under the null each discordant patch
    is A's or B's with probability 1/2, so p is scipy's two-sided binomial test of b in b + c trials,
    min(1, 2 * P(X <= min(b, c))): exact at every count, so no chi-square switch; 1 with no discordant
    patch."""
    y, pa = _check_patches(labels, probabilities_a)
    _, pb = _check_patches(labels, probabilities_b)
    right_a, right_b = correct(y, pa), correct(y, pb)
    b, c = int((right_a & ~right_b).sum()), int((~right_a & right_b).sum())
    p = 1.0 if b + c == 0 else float(scipy_stats.binomtest(b, b + c, 0.5).pvalue)
    return McNemar(b, c, p)


def _check_patches(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probabilities, dtype=np.float64)
    if y.ndim != 1 or not len(y) or p.shape[-1] != len(y):
        raise ValueError(f"expected labels of n > 0 patches and probabilities (..., n), got {y.shape}, {p.shape}")
    return y, p
