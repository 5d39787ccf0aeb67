"""Binary classification metrics of the study (accuracy, precision, recall, F1, MCC, balanced accuracy, AUC,
PR-AUC, confusion counts; Brier score and expected calibration error) and their plots. Average precision and
the curves are scikit-learn's. Accuracy, F1 and AUC take a stack of sets along the last axis, so stats.py
scores all bootstrap resamples at once: AUC from tied ranks (as scipy's rankdata gives them, in numpy), as
scikit-learn's roc_auc_score, one set a call, is 20 to 40 times slower there. scikit-learn and matplotlib load
where they are used: a training's start pays for neither."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DEFAULT_THRESHOLD = 0.5
"""A patch is predicted irrigated at probability >= this, unless a threshold is chosen on validation."""


def correct(y_true: np.ndarray, probabilities: np.ndarray,
            threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Whether each patch is predicted right at `threshold`: what accuracy counts."""
    return (np.asarray(probabilities) >= threshold) == np.asarray(y_true, dtype=bool)


def confusion(y_true: np.ndarray, probabilities: np.ndarray,
              threshold: float = DEFAULT_THRESHOLD) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """tp, fp, fn, tn counted along the last axis, so a stack of resamples is counted at once."""
    y = np.asarray(y_true, dtype=bool)
    predicted = np.asarray(probabilities) >= threshold
    tp = (predicted & y).sum(axis=-1)
    fp = predicted.sum(axis=-1) - tp
    fn = y.sum(axis=-1) - tp
    return tp, fp, fn, predicted.shape[-1] - tp - fp - fn


def _ratio(numerator: np.ndarray, denominator: np.ndarray, undefined: float = 0.0) -> np.ndarray:
    """numerator / denominator, `undefined` where the denominator is 0 (0: scikit-learn's zero_division=0)."""
    shape = np.broadcast_shapes(np.shape(numerator), np.shape(denominator))
    return np.divide(numerator, denominator, out=np.full(shape, undefined), where=np.asarray(denominator) > 0)


def accuracy(y_true: np.ndarray, probabilities: np.ndarray,
             threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Share of patches predicted right, along the last axis; 0 for no patch."""
    right = correct(y_true, probabilities, threshold)
    return _ratio(right.sum(axis=-1), right.shape[-1])


def f1(y_true: np.ndarray, probabilities: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """F1 = 2 tp / (2 tp + fp + fn) along the last axis, 0 when no patch is positive, predicted or true."""
    tp, fp, fn, _ = confusion(y_true, probabilities, threshold)
    return _ratio(2 * tp, 2 * tp + fp + fn)


def tied_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks along the last axis, ties given their average rank, NaN along a set holding a NaN: scipy's
    rankdata(x, axis=-1), the same numbers, without loading scipy.stats."""
    order = np.argsort(x, axis=-1, kind="stable")
    ordered = np.take_along_axis(x, order, axis=-1)
    n = x.shape[-1]
    position = np.broadcast_to(np.arange(n), x.shape)
    starts = np.ones(x.shape, dtype=bool)
    starts[..., 1:] = ordered[..., 1:] != ordered[..., :-1]
    ends = np.ones(x.shape, dtype=bool)
    ends[..., :-1] = starts[..., 1:]
    first = np.maximum.accumulate(np.where(starts, position, 0), axis=-1)
    last = np.flip(np.minimum.accumulate(np.flip(np.where(ends, position, n - 1), axis=-1), axis=-1), axis=-1)
    ranks = np.empty(x.shape, dtype=np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2 + 1, axis=-1)
    return np.where(np.isnan(x).any(axis=-1, keepdims=True), np.nan, ranks)


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Area under the ROC curve along the last axis, as the probability that a positive outranks a negative
    (ties count half): the Mann-Whitney U from average ranks over n_pos n_neg. NaN where only one class is
    present, as an AUC is undefined then."""
    y = np.asarray(y_true, dtype=bool)
    n_pos = y.sum(axis=-1)
    u = (tied_ranks(np.asarray(scores, dtype=np.float64)) * y).sum(axis=-1) - n_pos * (n_pos + 1) / 2
    return _ratio(u, n_pos * (y.shape[-1] - n_pos), undefined=math.nan)


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as scikit-learn's average precision (precision at each threshold weighted by the recall step),
    not optimistic like trapezoidal interpolation. NaN without a positive (scikit-learn says 0) or when a
    score is not finite (a diverged model: scikit-learn refuses it)."""
    from sklearn import metrics as skm

    y = np.asarray(y_true).astype(bool)
    finite = bool(np.isfinite(np.asarray(scores, dtype=np.float64)).all())
    return float(skm.average_precision_score(y, scores)) if y.any() and finite else math.nan


def _quietly(curve: Callable[..., tuple[np.ndarray, ...]], y: np.ndarray, scores: np.ndarray,
             **options: object) -> tuple[np.ndarray, ...]:
    """A scikit-learn curve without its warning that a class is absent: the callers define that case."""
    with warnings.catch_warnings(action="ignore", category=UserWarning):
        return curve(y, scores, **options)


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, highest threshold last (scikit-learn's
    precision_recall_curve); recall is 0 throughout without a positive (scikit-learn says 1)."""
    from sklearn import metrics as skm

    y = np.asarray(y_true).astype(bool)
    precision, recall, thresholds = _quietly(skm.precision_recall_curve, y, scores)
    return precision, recall if y.any() else np.zeros_like(recall), thresholds


def _counts_by_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting positive at or above each distinct score, highest first.
    Integer counts, which scikit-learn keeps private (its rates would blur exact F1 ties)."""
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y_sorted = np.asarray(scores)[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    return tps, (last_of_tie + 1) - tps, s[last_of_tie]


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (the lowest such threshold on a tie): chosen on the
    validation set, it is how a classifier meant for the pool's real prevalence would be operated.
    A validation set without a positive (a small natural-prevalence one can have none) has F1 0 at every
    threshold and chooses nothing: DEFAULT_THRESHOLD, not the tie rule's lowest score, which would operate
    the model as "irrigated" nearly everywhere."""
    positives = int(np.asarray(y_true).astype(bool).sum())
    if not positives:
        return DEFAULT_THRESHOLD
    tps, fps, thresholds = _counts_by_threshold(y_true, scores)
    f1_at = 2 * tps / (tps + fps + positives)
    best = np.flatnonzero(f1_at == f1_at.max())[-1]
    return float(thresholds[best])


THRESHOLD_SOURCE = "val_threshold_source"  # the tag a run and its version carry where threshold_source says why


def threshold_source(y_true: np.ndarray) -> str | None:
    """Why the threshold best_f1_threshold chose on a validation set with labels `y_true` was not chosen by
    its data, if it was not: one with no positive leaves DEFAULT_THRESHOLD."""
    return None if np.asarray(y_true).astype(bool).any() else \
        f"default {DEFAULT_THRESHOLD}: the validation set holds no positive"


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1) (scikit-learn's
    roc_curve, no point dropped); the rate of an absent class is 0 (scikit-learn's NaN draws nothing)."""
    from sklearn import metrics as skm

    fpr, tpr, _ = _quietly(skm.roc_curve, np.asarray(y_true).astype(bool), scores, drop_intermediate=False)
    return np.nan_to_num(fpr), np.nan_to_num(tpr)


CALIBRATION_BINS = 10
NEAR_CONSTANT = 0.02
"""A predictor is near-constant when at most this share of a set's patches is predicted in one class: it
says one thing whatever the patch, and balanced F1 still rewards it (all positive scores accuracy 0.5,
F1 0.667). The spread of its probabilities is not the test: a briefly trained model whose scores lie close
together can still split the classes at its threshold, and that decision is what gets promoted."""


def mcc(tp: float, fp: float, fn: float, tn: float) -> float:
    """Matthews correlation coefficient from the confusion counts; 0 when a row or column is empty (as
    scikit-learn)."""
    den = math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return (tp * tn - fp * fn) / den if den > 0 else 0.0


def balanced_accuracy(tp: float, fp: float, fn: float, tn: float) -> float:
    """The mean recall over the classes the set holds (scikit-learn's): a natural-prevalence set without a
    positive scores its specificity, where counting the absent class's recall as 0 halved it; NaN for no
    patch."""
    rates = [hit / (hit + miss) for hit, miss in ((tp, fn), (tn, fp)) if hit + miss]
    return sum(rates) / len(rates) if rates else math.nan


def reliability(y_true: np.ndarray, probabilities: np.ndarray,
                bins: int = CALIBRATION_BINS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin ([0, 0.1), ..., [0.9, 1]): the mean probability, the observed share
    of positives and the patch count (NaN means in an empty bin): a reliability diagram's points."""
    y = np.asarray(y_true, dtype=np.float64)
    p = np.asarray(probabilities, dtype=np.float64)
    y, p = y[np.isfinite(p)], p[np.isfinite(p)]  # a diverged model's NaN scores fall in no bin
    at = np.clip((p * bins).astype(np.int64), 0, bins - 1)
    counts = np.bincount(at, minlength=bins).astype(np.float64)
    mean = np.divide(np.bincount(at, p, bins), counts, out=np.full(bins, math.nan), where=counts > 0)
    observed = np.divide(np.bincount(at, y, bins), counts, out=np.full(bins, math.nan), where=counts > 0)
    return mean, observed, counts


def expected_calibration_error(y_true: np.ndarray, probabilities: np.ndarray, bins: int = CALIBRATION_BINS) -> float:
    """ECE: the patch-weighted mean gap between mean probability and observed share over the bins of
    `reliability` (Guo et al. 2017, eq. 3); NaN for non-finite scores, as average precision."""
    if not np.isfinite(np.asarray(probabilities, dtype=np.float64)).all():
        return math.nan
    mean, observed, counts = reliability(y_true, probabilities, bins)
    filled = counts > 0
    return float((counts[filled] * np.abs(mean[filled] - observed[filled])).sum() / max(counts.sum(), 1))


def near_constant(probabilities: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> bool:
    """Whether a predictor is constant or nearly so on a set (NEAR_CONSTANT)."""
    p = np.asarray(probabilities, dtype=np.float64)
    positive = float((p >= threshold).mean()) if len(p) else 0.0
    return bool(min(positive, 1 - positive) <= NEAR_CONSTANT)


def binary_metrics(y_true: np.ndarray, probabilities: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                   with_pr_auc: bool = True) -> dict[str, float]:
    """The study's metrics for one set; precision, recall and F1 are 0 (not NaN) when undefined, as in
    scikit-learn's zero_division=0. Brier and ECE measure the probabilities, whatever the threshold.
    Without `with_pr_auc` (a training's epochs, which do not log it) scikit-learn is not loaded."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(probabilities, dtype=np.float64)
    tp, fp, fn, tn = (int(c) for c in confusion(y, p, threshold))
    recall = float(_ratio(tp, tp + fn))
    return {"accuracy": float(accuracy(y, p, threshold)), "precision": float(_ratio(tp, tp + fp)),
            "recall": recall, "f1": float(f1(y, p, threshold)), "mcc": mcc(tp, fp, fn, tn),
            "balanced_accuracy": balanced_accuracy(tp, fp, fn, tn), "auc": float(roc_auc(y, p)),
            **({"pr_auc": average_precision(y, p)} if with_pr_auc else {}),
            "brier": float(np.mean((p - y) ** 2)) if len(p) else math.nan,
            "ece": expected_calibration_error(y, p), "near_constant": float(near_constant(p, threshold)),
            "tp": float(tp), "fp": float(fp), "tn": float(tn), "fn": float(fn)}


def save_confusion_matrix(y_true: np.ndarray, probabilities: np.ndarray, folder: Path,
                          threshold: float = DEFAULT_THRESHOLD) -> Path:
    """confusion_matrix.png in `folder`: the counts at `threshold`."""
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    p = np.asarray(probabilities, dtype=np.float64)  # as binary_metrics compares them
    tp, fp, fn, tn = (int(c) for c in confusion(y_true, p, threshold))
    matrix = Figure(figsize=(4, 4))
    ax = matrix.subplots()
    counts = np.array([[tn, fp], [fn, tp]])
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{int(value)}", ha="center", va="center")
    ax.set_xticks([0, 1], ["not irrigated", "irrigated"])
    ax.set_yticks([0, 1], ["not irrigated", "irrigated"])
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold})")
    return _save(matrix, folder / "confusion_matrix.png")


def save_curves(y_true: np.ndarray, probabilities: np.ndarray, folder: Path) -> list[Path]:
    """roc.png and pr.png (pr_figure) in `folder`: the same at every threshold, so a set scored at two is drawn
    once."""
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    roc = Figure(figsize=(4, 4))
    ax = roc.subplots()
    fpr, tpr = roc_curve(y_true, probabilities)
    ax.plot(fpr, tpr, label=f"AUC {float(roc_auc(y_true, probabilities)):.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")

    return [_save(roc, folder / "roc.png"), _save(pr_figure(y_true, probabilities), folder / "pr.png")]


def pr_figure(y_true: np.ndarray, probabilities: np.ndarray) -> Figure:
    """The precision-recall curve with the set's prevalence as a dashed line: a predictor without skill has
    that precision at every recall (and that AP), so at natural prevalence (2.3 % positives) an AP of 0.2 is
    skill where on a balanced set it would be far below chance."""
    from matplotlib.figure import Figure

    pr = Figure(figsize=(4, 4))
    ax = pr.subplots()
    precision, recall, _ = pr_curve(y_true, probabilities)
    ax.step(recall, precision, where="post", label=f"AP {average_precision(y_true, probabilities):.3f}")
    prevalence = float(np.mean(np.asarray(y_true).astype(bool))) if len(y_true) else math.nan
    ax.axhline(prevalence, linestyle="--", color="grey", label=f"no skill (prevalence {prevalence:.3f})")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    ax.legend(loc="best")
    return pr


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
