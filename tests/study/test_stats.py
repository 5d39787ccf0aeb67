"""simclr_s2.study.stats against plain reference computations written out here: loops over resamples that
repeat each drawn group's patches and score the drawn seeds one by one, the t formula with a textbook
quantile, and Holm's adjustment worked by hand."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats
from sklearn import metrics as skm

from simclr_s2.study.stats import Groups, holm, interval, metric, paired, resampling_groups, t_interval


def scored(n: int, seed: int, skill: float, k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Labels and k runs' probabilities of a model that is right about `skill` of the time."""
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.5
    p = np.clip(np.where(y, skill, 1 - skill) + rng.normal(0, 0.3, (k, n)), 0, 1)
    return y, np.round(p, 2)  # rounded: ties on purpose


def plain_metric(name: str, y: np.ndarray, p: np.ndarray) -> float:
    """Textbook formulas at threshold 0.5 (F1 0 without a positive), scikit-learn's AUC."""
    predicted = p >= 0.5
    tp, fp, fn = (predicted & y).sum(), (predicted & ~y).sum(), (~predicted & y).sum()
    if name == "auc":
        return float(skm.roc_auc_score(y, p))
    return float((predicted == y).mean()) if name == "accuracy" else 2 * tp / max(2 * tp + fp + fn, 1)


def plain_resamples(name: str, y: np.ndarray, runs: list[np.ndarray], groups: np.ndarray, n_boot: int,
                    seed: int) -> np.ndarray:
    """Each resample as a loop: G groups drawn (as multinomial counts), every drawn group's patches repeated
    as often as it was drawn, each run's metric there (t_widened takes it from there)."""
    per_run = [lambda rows, run=run: plain_metric(name, y[rows], run[rows]) for run in runs]
    return t_widened(per_run, groups, len(y), n_boot, seed)


def t_widened(per_run: list, groups: np.ndarray, n: int, n_boot: int, seed: int) -> np.ndarray:
    """Resampled values from each run's metric on patch rows (`per_run`): the mean change of the runs on the
    drawn groups, its spread less the runs' own (their variance across runs, averaged, over k), plus
    s / sqrt(k) times Student t's n_boot evenly spaced quantiles (k - 1 df) in an order from
    default_rng([seed, 1])."""
    rng = np.random.default_rng(seed)
    names, k = np.unique(groups), len(per_run)
    counts = rng.multinomial(len(names), np.full(len(names), 1 / len(names)), size=n_boot)
    every = [f(np.arange(n)) for f in per_run]
    changes = np.empty((n_boot, k))
    for b in range(n_boot):
        rows = np.concatenate([np.repeat(np.flatnonzero(groups == g), c) for g, c in zip(names, counts[b])])
        changes[b] = [f(rows) - every[i] for i, f in enumerate(per_run)]
    shared = changes.mean(axis=1)
    if k == 1:
        return every[0] + shared
    own = np.mean([np.var(row, ddof=1) for row in changes])
    scale = math.sqrt(max(shared.var() - own / k, 0) / shared.var())
    order = np.random.default_rng([seed, 1]).permutation(n_boot)
    t_draws = scipy_stats.t.ppf((order + 0.5) / n_boot, k - 1)
    return (np.mean(every) + shared.mean() + (shared - shared.mean()) * scale
            + np.std(every, ddof=1) / math.sqrt(k) * t_draws)


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
def test_interval_over_seeds_and_groups_equals_a_plain_loop(name: str) -> None:
    y, p = scored(90, 1, 0.75, k=3)
    groups = np.array([f"block{i % 7}" for i in range(90)])
    values = plain_resamples(name, y, list(p), groups, 150, 42)
    result = interval(y, p, name, groups, n_boot=150, seed=42)
    assert (result.low, result.high) == pytest.approx(tuple(np.nanpercentile(values, [2.5, 97.5])), abs=1e-12)
    assert result.value == pytest.approx(np.mean([plain_metric(name, y, run) for run in p]), abs=1e-12)
    assert metric(name, y, p[0]) == pytest.approx(plain_metric(name, y, p[0]), abs=1e-12)


def test_one_run_without_groups_is_the_patch_bootstrap() -> None:
    y, p = scored(60, 2, 0.8)
    values = plain_resamples("accuracy", y, [p[0]], np.arange(60), 200, 3)
    result = interval(y, p[0], "accuracy", n_boot=200, seed=3)
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    assert result == interval(y, p[0], "accuracy", n_boot=200, seed=3)
    assert result != interval(y, p[0], "accuracy", n_boot=200, seed=4)


@pytest.mark.parametrize("name", ["accuracy", "f1"])
def test_paired_difference_equals_a_plain_loop(name: str) -> None:
    y, a = scored(80, 3, 0.8, k=2)
    _, b = scored(80, 4, 0.7, k=2)
    groups = np.array([f"t{i // 10}" for i in range(80)])
    per_pair = [lambda rows, i=i: plain_metric(name, y[rows], a[i][rows]) - plain_metric(name, y[rows], b[i][rows])
                for i in range(2)]
    values = t_widened(per_pair, groups, 80, 120, 9)
    far = min((values <= 0).sum(), (values >= 0).sum())
    result = paired(y, a, b, name, groups, n_boot=120, seed=9)
    assert result.value == pytest.approx(np.mean([plain_metric(name, y, a[i]) - plain_metric(name, y, b[i])
                                                  for i in range(2)]), abs=1e-12)
    assert (result.low, result.high) == pytest.approx(tuple(np.percentile(values, [2.5, 97.5])), abs=1e-12)
    assert result.p == pytest.approx(min(1.0, 2 * (1 + far) / 121), abs=1e-12)


def test_paired_sees_a_real_difference_and_no_difference() -> None:
    y, good = scored(400, 5, 0.9, k=2)
    _, poor = scored(400, 6, 0.6, k=2)
    assert paired(y, good, poor, "accuracy").p < 0.05  # two seed pairs: t with 1 df (0.017 here: 0.41 and 0.43)
    same = paired(y, good, good, "accuracy")
    assert same.value == 0 and same.p == 1.0


def test_one_seed_pair_gets_an_interval_but_no_test() -> None:
    """Its difference holds the pair's seed noise, which resampling groups cannot see: no p, so Holm and the
    report call nothing (a true null was rejected about half the time at 0.05)."""
    y, good = scored(400, 5, 0.9)
    _, poor = scored(400, 6, 0.6)
    one = paired(y, good, poor, "accuracy", n_boot=200)
    assert math.isnan(one.p) and one.low < one.value < one.high
    assert math.isnan(holm([one.p, 0.01])[0])


def test_holm_by_hand() -> None:
    # sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> kept monotone: 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], abs=1e-15)
    assert holm([0.5, 0.6]) == pytest.approx([1.0, 1.0])
    adjusted = holm([0.01, math.nan, 0.02])
    assert adjusted[[0, 2]] == pytest.approx([0.02, 0.02]) and math.isnan(adjusted[1])


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="metric 'precision'"):
        interval(np.ones(3), np.ones(3), "precision")
    with pytest.raises(ValueError, match="expected labels of n > 0 patches"):
        paired(np.ones(3), np.ones(4), np.ones(3), "accuracy")


def test_the_resampling_groups_are_what_the_split_kept_apart() -> None:
    """A tile split's test set is a sample of tiles, a spatial-50km one's of 50 km blocks: the bootstrap draws
    those, not 12 km blocks nested in them (which took a tile's patches for independent groups); random and
    official splits, which keep no ground apart, keep the 12 km blocks."""
    index = pd.DataFrame({"name": ["a", "b", "c", "d"], "tile": ["33UUP", "33UUP", "33UUP", "29SNC"],
                          "epsg": [32633] * 4, "ulx": [0.0, 13_000.0, 60_000.0, 0.0], "uly": [0.0] * 4,
                          "country": ["Austria"] * 3 + ["Portugal"], "official_split": ["test"] * 4})
    names = ["d", "b", "a"]
    assert resampling_groups(index, "tile", names) == Groups(["29SNC", "33UUP", "33UUP"], "tile")
    assert resampling_groups(index, "spatial-50km", names) == Groups(["32633/0/0"] * 3, "50 km block")
    assert resampling_groups(index, "folds-3-50km", ["c"]) == Groups(["32633/1/0"], "50 km block")
    twelve = ["32633/0/0", "32633/1/0", "32633/0/0"]
    for kind in ("spatial", "block-12km", "folds-3", "random", "official"):
        assert resampling_groups(index, kind, names) == Groups(twelve, "12 km block"), kind
    assert resampling_groups(index, "country", names).keys == [f"{c}|{b}" for c, b in
                                                               zip(["Portugal", "Austria", "Austria"], twelve)]
    assert resampling_groups(index.drop(columns="ulx"), "random", names) is None  # an index before footprints
    assert Groups(["t1"], "tile").columns() == {"group": ["t1"], "unit": ["tile"]}


def test_one_run_on_one_group_has_no_interval_not_a_zero_width_one() -> None:
    """A test set of one tile: resampling it redraws the same patches, so one run's [x, x] would read as certain."""
    y, p = scored(80, 3, 0.8, k=2)
    one = ["32629"] * len(y)
    alone = interval(y, p[0], "accuracy", one, n_boot=50)
    assert alone.value == metric("accuracy", y, p[0]) and math.isnan(alone.low) and math.isnan(alone.high)
    pair = paired(y, p[:1], p[1:], "f1", one, n_boot=50)
    assert math.isnan(pair.low) and math.isnan(pair.high) and math.isnan(pair.p)
    seeds = interval(y, p, "accuracy", one, n_boot=50)  # two runs: the seeds' spread, by t
    assert seeds.low < seeds.value < seeds.high
    assert not math.isnan(interval(y, p[0], "accuracy", ["a", "b"] * 40, n_boot=50).low)
