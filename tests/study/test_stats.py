"""simclr_s2.study.stats against plain reference computations written out here: loops over resamples, the t
formula with a textbook quantile, and McNemar's exact p summed from binomial coefficients."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from simclr_s2.learning.metrics import binary_metrics
from simclr_s2.study.stats import bootstrap_interval, mcnemar, metric, paired_bootstrap, t_interval


def scored(n: int, seed: int, skill: float) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities of a model that is right about `skill` of the time."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    p = np.clip(np.where(y, 0.5 + skill - 0.5, 0.5 - skill + 0.5) + rng.normal(0, 0.3, n), 0, 1)
    return y, p


def plain_metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    m = binary_metrics(y, p)
    return {"accuracy": m["accuracy"], "f1": m["f1"], "auc": m["auc"]}[name]


def test_t_interval_is_the_textbook_formula() -> None:
    values = [0.81, 0.79, 0.86]
    mean, s = sum(values) / 3, math.sqrt(sum((v - sum(values) / 3) ** 2 for v in values) / 2)
    q = 0.975  # Student t with 2 degrees of freedom has the closed-form quantile (2q - 1) sqrt(2 / (4q(1 - q)))
    t_975_2 = (2 * q - 1) * math.sqrt(2 / (4 * q * (1 - q)))  # 4.3027, as in any table
    low, high = t_interval(values)
    assert low == pytest.approx(mean - t_975_2 * s / math.sqrt(3), rel=1e-12)
    assert high == pytest.approx(mean + t_975_2 * s / math.sqrt(3), rel=1e-12)
    many = np.random.default_rng(0).normal(size=11)
    expected = scipy_stats.t.interval(0.95, 10, loc=many.mean(), scale=scipy_stats.sem(many))
    assert t_interval(many) == pytest.approx(expected, rel=1e-12)
    assert all(math.isnan(v) for v in t_interval([0.8]))


@pytest.mark.parametrize("name", ["accuracy", "f1", "auc"])
def test_bootstrap_interval_equals_a_plain_loop(name: str) -> None:
    y, p = scored(150, 1, 0.75)
    rng = np.random.default_rng(42)
    values = []
    for _ in range(300):
        rows = rng.integers(0, len(y), size=len(y))
        values.append(plain_metric(name, y[rows], p[rows]))
    expected = np.nanpercentile(values, [2.5, 97.5])
    assert bootstrap_interval(y, p, name, n_boot=300, seed=42) == pytest.approx(tuple(expected), abs=1e-12)
    assert metric(name, y, p) == pytest.approx(plain_metric(name, y, p), abs=1e-12)


def test_bootstrap_is_seeded_and_covers_the_estimate() -> None:
    y, p = scored(400, 2, 0.8)
    first = bootstrap_interval(y, p, "accuracy", seed=3)
    assert first == bootstrap_interval(y, p, "accuracy", seed=3)
    assert bootstrap_interval(y, p, "f1", seed=3) != bootstrap_interval(y, p, "f1", seed=4)
    accuracy = metric("accuracy", y, p)
    assert first[0] < accuracy < first[1]
    # binomial standard error of 400 patches: the interval is about 2 * 1.96 * sqrt(a (1 - a) / n) wide
    assert first[1] - first[0] == pytest.approx(2 * 1.96 * math.sqrt(accuracy * (1 - accuracy) / 400), rel=0.2)


@pytest.mark.parametrize("name", ["accuracy", "f1"])
def test_paired_bootstrap_equals_a_plain_loop(name: str) -> None:
    y, pa = scored(200, 5, 0.8)
    _, pb = scored(200, 6, 0.7)
    pb = np.where(np.random.default_rng(7).random(200) < 0.5, pa, pb)  # correlated, as two models are
    rng = np.random.default_rng(9)
    diffs = []
    for _ in range(400):
        rows = rng.integers(0, len(y), size=len(y))
        diffs.append(plain_metric(name, y[rows], pa[rows]) - plain_metric(name, y[rows], pb[rows]))
    diffs = np.array(diffs)
    far = min((diffs <= 0).sum(), (diffs >= 0).sum())
    result = paired_bootstrap(y, pa, pb, name, n_boot=400, seed=9)
    assert result.diff == pytest.approx(plain_metric(name, y, pa) - plain_metric(name, y, pb), abs=1e-12)
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    assert result.p == pytest.approx(min(1.0, 2 * (1 + far) / 401), abs=1e-12)


@pytest.mark.parametrize("name", ["f1", "auc"])
def test_paired_bootstrap_over_seed_pairs_averages_the_differences(name: str) -> None:
    y, a0 = scored(120, 10, 0.8)
    a1, b0, b1 = (scored(120, s, k)[1] for s, k in ((11, 0.8), (12, 0.6), (13, 0.6)))
    rng = np.random.default_rng(1)
    diffs = []
    for _ in range(200):
        rows = rng.integers(0, len(y), size=len(y))
        diffs.append(np.mean([plain_metric(name, y[rows], a[rows]) - plain_metric(name, y[rows], b[rows])
                              for a, b in ((a0, b0), (a1, b1))]))
    result = paired_bootstrap(y, np.stack([a0, a1]), np.stack([b0, b1]), name, n_boot=200, seed=1)
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(diffs, [2.5, 97.5])), abs=1e-12)
    assert result.diff == pytest.approx(np.mean([plain_metric(name, y, a) - plain_metric(name, y, b)
                                                 for a, b in ((a0, b0), (a1, b1))]), abs=1e-12)


def test_paired_bootstrap_sees_a_real_difference_and_no_difference() -> None:
    y, good = scored(600, 20, 0.85)
    _, poor = scored(600, 21, 0.6)
    clear = paired_bootstrap(y, good, poor, "accuracy")
    assert clear.low > 0 and clear.p < 0.01
    same = paired_bootstrap(y, good, good, "accuracy")
    assert same.diff == same.low == same.high == 0 and same.p == 1


def plain_mcnemar(b: int, c: int) -> float:
    n = b + c
    tail = sum(math.comb(n, k) for k in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (3, 0), (7, 2), (12, 12), (40, 61), (300, 340)])
def test_mcnemar_is_the_exact_binomial_test(b: int, c: int) -> None:
    # b patches only A gets right, c only B, and 50 both get right
    y = np.ones(b + c + 50, dtype=bool)
    pa = np.r_[np.ones(b), np.zeros(c), np.ones(50)]
    pb = np.r_[np.zeros(b), np.ones(c), np.ones(50)]
    result = mcnemar(y, pa, pb)
    assert (result.b, result.c) == (b, c)
    assert result.p == pytest.approx(plain_mcnemar(b, c), rel=1e-9)
    if b + c:
        assert result.p == pytest.approx(scipy_stats.binomtest(b, b + c, 0.5).pvalue, rel=1e-9)


def test_shapes_and_names_checked() -> None:
    with pytest.raises(ValueError, match="metric 'precision'"):
        bootstrap_interval(np.ones(3), np.ones(3), "precision")
    with pytest.raises(ValueError, match="expected labels"):
        mcnemar(np.ones(3), np.ones(4), np.ones(3))
