"""Uncertainty of the study's test metrics, and paired tests of one condition against another, on the unit
that varies: training seeds and spatial groups of test patches.

Patches of one tile or block are correlated (same fields, same dates), and a model trained with another
seed errs elsewhere; a bootstrap over patches ignores both and rejects a true null 10-46 % of the time at
0.05 (issue 20). The mean over a cell's k seeds varies in two parts, which are drawn apart and added:
- the groups' part: the cluster bootstrap (Davison & Hinkley 1997, section 3.8) draws G of the test set's
  G spatial groups with replacement (a patch weighs as often as its group was drawn) and takes the mean
  change of the k runs' metric there. A group is what the split kept apart (resampling_unit: a tile
  split's test set is a sample of tiles, a spatial-<n>km one's of n km blocks), recorded with the
  predictions. A run's own errors on some groups (seed-group interaction) are in that change too, and in
  the seeds' part below, so the change's spread about its mean is narrowed by what they add: their
  variance across the runs, averaged over resamples, over k.
- the seeds' part: s / sqrt(k) times a draw of Student t with k - 1 df (s: the standard deviation of the
  k runs' metric on every patch; t's evenly spaced quantiles, in an order from default_rng([seed, 1])).
Where seeds differ more than the test set can tell, interval and p are those of the t interval and the
paired t-test on the seed pairs' differences; where the groups dominate, of the cluster bootstrap. A
bootstrap that drew the seeds too (k of k with replacement, the spread widened by sqrt(k / (k - 1))) took
their spread for a known normal one: with 2-5 seeds where seed noise dominated it rejected a true null
12-22 % of the time at 0.05, and a cell's 95 % interval held the true mean 70-90 % of the time. The
interval is the percentile interval of the draws, cut at the metric's range ([0, 1], or [-1, 1] for a
difference); two conditions on the same patches are paired by seed (each seed pair's difference is the
metric, so what they share cancels), with the two-sided bootstrap p of the difference. One run and one
group per patch reduce it to the patch bootstrap (Efron & Tibshirani 1993, ch. 13).
tests/study/test_false_positives.py shows the rate of false rejections stays within [0.02, 0.08] at 0.05
on simulated grids with tile-correlated errors and seed noise, and with 2 and 3 seeds where seed noise
dominates.

Many tests in one comparison are adjusted with Holm's step-down method (Holm 1979), which controls the
family-wise error rate under any dependence between the tests.

Resamples come from numpy's PCG64 seeded with `seed`, chunk by chunk in resample order (the t quantiles'
order from one seeded with [seed, 1]), so a seed gives the same interval on every machine and run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import DEFAULT_THRESHOLD
from simclr_s2.study.split_kinds import SPATIAL_BLOCK_KM, block_km, group_keys

LEVEL = 0.95
N_BOOT = 2000
METHOD = "bootstrap over spatial groups of test patches, Student t over seeds"
GROUP_COLUMN, UNIT_COLUMN = "group", "unit"  # a predictions table's resampling group and the unit's name
LEGACY_UNIT = f"{SPATIAL_BLOCK_KM} km block"
"""The unit of a predictions table with groups but no UNIT_COLUMN: every classifier run wrote these blocks
before it wrote the split's own groups."""
MIN_GROUPS = 20
"""Fewer resampled groups: compare warns that its intervals are too narrow and its p too small (a null
simulation with skill varying by tile rejected at 0.05 38 % of the time with 2 tiles, 12.5 % with 8 and 7 %
with 20; docs/study.md)."""
_CHUNK_CELLS = 1 << 22  # resampled patch weights held at once (32 MiB)


@dataclass(frozen=True)
class Estimate:
    """A metric's mean over seeds, its percentile interval and, for a difference, the two-sided p."""

    value: float
    low: float
    high: float
    p: float = math.nan


def t_interval(values: Sequence[float], level: float = LEVEL) -> tuple[float, float]:
    """Student t interval of the mean, mean -/+ t(1 - alpha/2, n - 1) * s / sqrt(n); NaN for fewer than
    two values. What compare shows when it has no per-patch predictions to resample."""
    from scipy import stats as scipy_stats  # loads here: a training's start does not pay for it

    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        return math.nan, math.nan
    half = scipy_stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def _weighted_confusion(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, ...]:
    """Weighted tp, fp, fn, tn of k runs (p: (k, n)) under b weightings (w: (b, n)), each (k, b)."""
    predicted = (p >= DEFAULT_THRESHOLD).astype(np.float64)
    pos, wt = y.astype(np.float64), w.T.astype(np.float64)
    tp, fp = (predicted * pos) @ wt, (predicted * (1 - pos)) @ wt
    fn, tn = (pos @ wt) - tp, ((1 - pos) @ wt) - fp
    return tp, fp, fn, tn


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast_shapes(num.shape, den.shape)), where=den > 0)


def _accuracy(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    tp, fp, fn, tn = _weighted_confusion(y, p, w)
    return _ratio(tp + tn, tp + fp + fn + tn)


def _f1(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    tp, fp, fn, _ = _weighted_confusion(y, p, w)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC of each run under each weighting: the weighted share of (positive,
    negative) pairs the positive outranks, ties half; NaN where a class has no weight."""
    out = np.empty((len(p), len(w)))
    for i, scores in enumerate(p):
        order = np.argsort(scores, kind="mergesort")
        s, pos = scores[order], y[order]
        ws = w[:, order].astype(np.float64)
        starts = np.flatnonzero(np.r_[True, np.diff(s) != 0])
        tie = np.cumsum(np.r_[True, np.diff(s) != 0]) - 1  # each sorted patch's tie group
        ends = np.r_[starts[1:], len(s)]
        negative = np.cumsum(ws * ~pos, axis=1)
        neg_at = np.concatenate([np.zeros((len(w), 1)), negative], axis=1)
        below = neg_at[:, starts][:, tie]
        tied = neg_at[:, ends][:, tie] - below
        u = ((below + tied / 2) * ws * pos).sum(axis=1)
        w_pos, w_neg = (ws * pos).sum(axis=1), (ws * ~pos).sum(axis=1)
        out[i] = np.divide(u, w_pos * w_neg, out=np.full(len(w), math.nan), where=(w_pos * w_neg) > 0)
    return out


METRICS: dict[str, Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]] = {
    "accuracy": _accuracy, "f1": _f1, "auc": _auc}
"""Each scores k runs' probabilities (k, n) under b patch weightings (b, n) as a (k, b) array, at
metrics.DEFAULT_THRESHOLD."""


def metric(name: str, labels: np.ndarray, probabilities: np.ndarray) -> float:
    """One of METRICS of one run on every patch once, as the bootstrap computes it."""
    y, p = _check(labels, probabilities)
    return float(_metric(name)(y, p, np.ones((1, len(y))))[0, 0])


def _metric(name: str) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    if name not in METRICS:
        raise ValueError(f"metric {name!r}: expected one of {sorted(METRICS)}")
    return METRICS[name]


@dataclass(frozen=True)
class Groups:
    """Each test patch's resampling group and the unit's name, as a predictions table records them (columns
    GROUP_COLUMN and UNIT_COLUMN): compare resamples the groups and names the unit in its captions."""

    keys: list[str]
    unit: str  # "tile", "12 km block"

    def columns(self) -> dict[str, list[str]]:
        return {GROUP_COLUMN: self.keys, UNIT_COLUMN: [self.unit] * len(self.keys)}


def resampling_unit(kind: str) -> tuple[str, str]:
    """The split kind whose groups (split_kinds.group_keys) a split of `kind`'s test set is resampled by, and
    the unit's name: what `kind` kept apart (a tile; an n km block; a country's blocks), since the test set
    is a sample of those, and for random and official, which keep no ground apart, the SPATIAL_BLOCK_KM
    block, which holds a patch's temporal twins and most of its neighbours."""
    if kind == "tile":
        return kind, "tile"
    km = block_km(kind)
    return (kind, f"{km} km block") if km is not None else (f"block-{SPATIAL_BLOCK_KM}km", LEGACY_UNIT)


def resampling_groups(index: pd.DataFrame, kind: str, names: Sequence[str]) -> Groups | None:
    """Each named patch's group under resampling_unit(kind). None when the index lacks what the groups need
    (a random or official split of an index made before footprints): compare then resamples patches, and
    says so."""
    group_kind, unit = resampling_unit(kind)
    try:
        keys = pd.Series(group_keys(index, group_kind), index=index["name"].to_numpy())
    except UserError:
        return None
    return Groups(keys.loc[list(names)].astype(str).tolist(), unit)


def group_codes(groups: Sequence[object] | None, n: int) -> np.ndarray:
    """Each patch's group as 0..G-1 (sorted group order); every patch its own group when None."""
    if groups is None:
        return np.arange(n)
    return np.unique(np.asarray(groups).astype(str), return_inverse=True)[1].reshape(-1)


def resamples(codes: np.ndarray, n_boot: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of patch weights (b, n), n_boot rows in all: per row, G of the G groups drawn with replacement
    from default_rng(seed), a patch weighing as often as its group was drawn."""
    rng = np.random.default_rng(seed)
    n_groups = int(codes.max()) + 1
    rows = max(1, _CHUNK_CELLS // max(len(codes), 1))
    for start in range(0, n_boot, rows):
        counts = rng.multinomial(n_groups, np.full(n_groups, 1 / n_groups), size=min(rows, n_boot - start))
        yield counts[:, codes]


def _percentile(values: np.ndarray, level: float, bound: float) -> tuple[float, float]:
    """The percentile interval, cut at the statistic's range [-bound, 1] (t's tails can pass it)."""
    values = values[~np.isnan(values)]
    if not len(values):
        return math.nan, math.nan
    low, high = np.clip(np.percentile(values, [50 * (1 - level), 50 * (1 + level)]), -bound, 1)
    return float(low), float(high)


def _resampled(labels: np.ndarray, scores: Callable[[np.ndarray], np.ndarray], k: int,
               groups: Sequence[object] | None, n_boot: int, seed: int) -> tuple[float, np.ndarray]:
    """The observed mean over runs of `scores(weights)` ((k, b) per run) and n_boot draws of it: the groups'
    part by the cluster bootstrap, less what a run's own errors add (it is in the seeds' spread), plus the
    seeds' part from Student t with k - 1 df (module doc). All NaN (no interval) for one run on one group."""
    runs = scores(np.ones((1, len(labels))))[:, 0]
    observed = float(np.nanmean(runs))
    codes = group_codes(groups, len(labels))
    if k < 2 and not codes.any():  # one run on one group: nothing to draw, and [x, x] would read as certain
        return observed, np.full(n_boot, math.nan)
    changes = np.concatenate([scores(w) for w in resamples(codes, n_boot, seed)], axis=1) - runs[:, None]
    shared = changes.mean(axis=0)  # NaN where the metric is undefined on the drawn groups
    kept = ~np.isnan(shared)
    if k < 2 or not kept.any():
        return observed, observed + shared
    own = float(changes[:, kept].var(axis=0, ddof=1).mean())  # the runs' own changes, in s too
    centre, spread = float(shared[kept].mean()), float(shared[kept].var())
    scale = math.sqrt(max(spread - own / k, 0.0) / spread) if spread > 0 else 0.0
    return observed, (observed + centre + (shared - centre) * scale
                      + float(np.std(runs, ddof=1)) / math.sqrt(k) * _t_draws(k - 1, n_boot, seed))


def _t_draws(df: int, n: int, seed: int) -> np.ndarray:
    """n draws of Student t with `df` degrees of freedom: its n evenly spaced quantiles in an order drawn from
    default_rng([seed, 1]). Random draws of t with 1 df (two seeds) moved a 95 % interval's width by about 14 %
    from one seed to another; the quantiles hold the distribution's tails exactly."""
    from scipy.stats import t  # here: importing this module (a training's start does) must not load scipy.stats

    order = np.random.default_rng([seed, 1]).permutation(n)
    return t.ppf((order + 0.5) / n, df)


def interval(labels: np.ndarray, probabilities: np.ndarray, metric_name: str, groups: Sequence[object] | None = None,
             *, n_boot: int = N_BOOT, seed: int = 0, level: float = LEVEL) -> Estimate:
    """The mean of a metric over k runs scored on the same n patches (probabilities (n,) or (k, n)) and
    its percentile interval over draws of the groups' and the seeds' parts (module doc); resamples where
    the metric is undefined (AUC of one class) are left out."""
    y, p = _check(labels, probabilities)
    fn = _metric(metric_name)
    observed, values = _resampled(y, lambda w: fn(y, p, w), len(p), groups, n_boot, seed)
    return Estimate(observed, *_percentile(values, level, 0.0))


def paired(labels: np.ndarray, probabilities_a: np.ndarray, probabilities_b: np.ndarray, metric_name: str,
           groups: Sequence[object] | None = None, *, n_boot: int = N_BOOT, seed: int = 0,
           level: float = LEVEL) -> Estimate:
    """metric(A) - metric(B), mean over k seed pairs (row i of A and of B trained with the same seed) on
    the same patches, its percentile interval over draws of the groups' and the seed pairs' parts, and the
    two-sided p = 2 (1 + #{d* on the far side of 0}) / (n_boot + 1), capped at 1 (Davison & Hinkley 1997,
    eq. 4.11).
    One seed pair gets no p (NaN): its difference holds that pair's seed-to-seed noise, which no resample
    of groups measures, and a test of two equally good conditions rejected half the time at 0.05."""
    y, pa = _check(labels, probabilities_a)
    _, pb = _check(labels, probabilities_b)
    if pa.shape != pb.shape:
        raise ValueError(f"paired: A has shape {pa.shape}, B {pb.shape}")
    fn = _metric(metric_name)
    observed, values = _resampled(y, lambda w: fn(y, pa, w) - fn(y, pb, w), len(pa), groups, n_boot,
                                  seed)
    values = values[~np.isnan(values)]
    far = min(int((values <= 0).sum()), int((values >= 0).sum()))
    p = min(1.0, (1 + far) * smallest_p(len(values))) if len(pa) > 1 else math.nan
    return Estimate(observed, *_percentile(values, level, 1.0), p=p)


def smallest_p(n_boot: int) -> float:
    """The smallest p `paired` gives from n_boot resamples, 2 / (n_boot + 1), whatever the difference: Holm over
    m tests multiplies it by m, so n_boot must exceed 2 m / alpha - 1 for any test to reach alpha."""
    return 2 / (n_boot + 1)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (Holm 1979): the i-th smallest of m is multiplied by m - i + 1,
    made non-decreasing and capped at 1; rejecting adjusted p < alpha keeps the family-wise error rate at
    alpha. NaN p-values are no test and stay NaN."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, math.nan)
    tested = np.flatnonzero(~np.isnan(p))
    order = tested[np.argsort(p[tested], kind="stable")]
    steps = p[order] * (len(order) - np.arange(len(order)))
    adjusted[order] = np.minimum(np.maximum.accumulate(steps), 1.0)
    return adjusted


def _check(labels: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) as bool and probabilities as (k, n) float64."""
    y = np.asarray(labels).astype(bool)
    p = np.atleast_2d(np.asarray(probabilities, dtype=np.float64))
    if y.ndim != 1 or not len(y) or p.ndim != 2 or p.shape[-1] != len(y):
        raise ValueError(f"expected labels of n > 0 patches and probabilities (n,) or (k, n), got {y.shape}, "
                         f"{np.shape(probabilities)}")
    return y, p
