"""Scoring a classifier on a set and logging what a person checks: metrics, confusion matrix, ROC and PR
plots, and a table of every patch's prediction."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from simclr_s2.learning.metrics import DEFAULT_THRESHOLD, binary_metrics, save_plots
from simclr_s2.tracking.tracker import StageRun


def log_evaluation(run: StageRun, predictions: tuple[np.ndarray, np.ndarray, float], names: Sequence[str],
                   prefix: str = "test", threshold: float = DEFAULT_THRESHOLD) -> dict[str, float]:
    """Metrics `<prefix>_accuracy` ... `<prefix>_fn` on the run; plots and predictions.csv under the
    artifact folder evaluation/<prefix>. `predictions` is `train.predict`'s (labels, probabilities,
    loss), in the order of `names`: one prediction pass can be scored at several thresholds."""
    labels, probabilities, loss = predictions
    metrics = {f"{prefix}_{k}": v for k, v in {**binary_metrics(labels, probabilities, threshold),
                                               "loss": loss}.items()}
    run.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_plots(labels, probabilities, folder, threshold)
        pd.DataFrame({"name": list(names), "label": labels.astype(int), "probability": probabilities,
                      "predicted": (probabilities >= threshold).astype(int)}).to_csv(folder / "predictions.csv",
                                                                                     index=False)
        run.log_artifacts(folder, f"evaluation/{prefix}")
    return metrics
