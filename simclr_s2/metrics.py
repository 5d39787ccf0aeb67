"""Binary classification metrics of the study (accuracy, precision, recall, F1, AUC, PR-AUC, confusion
counts) and their plots. Computed with numpy so every epoch can afford them; tests check them against
scikit-learn."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.figure import Figure


def _ranks(scores: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank, as the Mann-Whitney statistic needs."""
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(len(scores), dtype=np.float64)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return ranks


def roc_auc(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve as the probability that a positive outranks a negative (ties count half).
    NaN when only one class is present, as an AUC is undefined then."""
    y = np.asarray(y_true).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _ranks(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """PR-AUC as average precision (sum of precision at each threshold weighted by the recall step),
    scikit-learn's definition, so it is not optimistic like trapezoidal interpolation."""
    y = np.asarray(y_true).astype(bool)
    if y.sum() == 0:
        return float("nan")
    precision, recall, _ = pr_curve(y, scores)
    return float(-np.sum(np.diff(recall) * precision[:-1]))


def _counts_by_threshold(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives when predicting positive at or above each distinct score, highest first."""
    y = np.asarray(y_true).astype(bool)
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="mergesort")
    s, y_sorted = np.asarray(scores)[order], y[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    tps = np.cumsum(y_sorted)[last_of_tie]
    return tps, (last_of_tie + 1) - tps, s[last_of_tie]


def pr_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision and recall at every distinct threshold, highest threshold last (scikit-learn's order)."""
    tps, fps, thresholds = _counts_by_threshold(y_true, scores)
    precision = tps / (tps + fps)
    recall = tps / max(int(np.asarray(y_true).astype(bool).sum()), 1)
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thresholds[::-1]


def best_f1_threshold(y_true: np.ndarray, scores: np.ndarray) -> float:
    """The score threshold with the highest F1 (the lowest such threshold on a tie): chosen on the
    validation set, it is how a classifier meant for the pool's real prevalence would be operated."""
    tps, fps, thresholds = _counts_by_threshold(y_true, scores)
    positives = max(int(np.asarray(y_true).astype(bool).sum()), 1)
    f1 = 2 * tps / (tps + fps + positives)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best])


def roc_curve(y_true: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False and true positive rates at every distinct threshold, from (0, 0) to (1, 1)."""
    tps, fps, _ = _counts_by_threshold(y_true, scores)
    return np.r_[0.0, fps / max(fps[-1], 1)], np.r_[0.0, tps / max(tps[-1], 1)]


def binary_metrics(y_true: np.ndarray, probabilities: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The study's metrics for one set; precision, recall and F1 are 0 (not NaN) when undefined, as in
    scikit-learn's zero_division=0."""
    y = np.asarray(y_true).astype(bool)
    p = np.asarray(probabilities, dtype=np.float64)
    predicted = p >= threshold
    tp = int(np.sum(predicted & y))
    fp = int(np.sum(predicted & ~y))
    fn = int(np.sum(~predicted & y))
    tn = int(np.sum(~predicted & ~y))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": (tp + tn) / max(len(y), 1), "precision": precision, "recall": recall, "f1": f1,
            "auc": roc_auc(y, p), "pr_auc": average_precision(y, p),
            "tp": float(tp), "fp": float(fp), "tn": float(tn), "fn": float(fn)}


def save_plots(y_true: np.ndarray, probabilities: np.ndarray, folder: Path, threshold: float = 0.5) -> list[Path]:
    """Confusion matrix, ROC and PR curves as PNG files in `folder` (Figure objects, no pyplot state)."""
    folder.mkdir(parents=True, exist_ok=True)
    m = binary_metrics(y_true, probabilities, threshold)

    confusion = Figure(figsize=(4, 4))
    ax = confusion.subplots()
    counts = np.array([[m["tn"], m["fp"]], [m["fn"], m["tp"]]])
    ax.imshow(counts, cmap="Blues")
    for (i, j), value in np.ndenumerate(counts):
        ax.text(j, i, f"{int(value)}", ha="center", va="center")
    ax.set_xticks([0, 1], ["not irrigated", "irrigated"])
    ax.set_yticks([0, 1], ["not irrigated", "irrigated"])
    ax.set(xlabel="predicted", ylabel="true", title=f"Confusion matrix (threshold {threshold})")

    roc = Figure(figsize=(4, 4))
    ax = roc.subplots()
    fpr, tpr = roc_curve(y_true, probabilities)
    ax.plot(fpr, tpr, label=f"AUC {m['auc']:.3f}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right")

    pr = Figure(figsize=(4, 4))
    ax = pr.subplots()
    precision, recall, _ = pr_curve(y_true, probabilities)
    ax.step(recall, precision, where="post", label=f"AP {m['pr_auc']:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title="Precision-recall", ylim=(0, 1.02))
    ax.legend(loc="lower left")
    return [_save(fig, folder / name) for fig, name in
            ((confusion, "confusion_matrix.png"), (roc, "roc.png"), (pr, "pr.png"))]


def _save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return path
