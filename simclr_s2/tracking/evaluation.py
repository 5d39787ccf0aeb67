"""Scoring a classifier on a set and logging what a person checks: metrics, confusion matrix, ROC and PR
plots, and a table of every patch's prediction (with its group, the unit compare resamples); and
scoring at the threshold chosen on a validation set."""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simclr_s2.learning.metrics import (
    DEFAULT_THRESHOLD,
    THRESHOLD_SOURCE,
    best_f1_threshold,
    binary_metrics,
    near_constant,
    save_confusion_matrix,
    save_curves,
    threshold_source,
)
from simclr_s2.tracking.tracker import StageRun

if TYPE_CHECKING:
    from simclr_s2.study.stats import Groups

log = logging.getLogger(__name__)

THRESHOLD_METRIC = "val_threshold"

Predictions = tuple[np.ndarray, np.ndarray, float]


def log_evaluation(run: StageRun, predictions: Predictions, names: Sequence[str], prefix: str = "test",
                   threshold: float = DEFAULT_THRESHOLD, groups: Groups | None = None,
                   operated_at: float | None = None, curves: Sequence[Path] = ()) -> dict[str, float]:
    """Metrics `<prefix>_accuracy` ... `<prefix>_fn` on the run; plots and predictions.csv under the
    artifact folder evaluation/<prefix>. `predictions` is `train.predict`'s (labels, probabilities,
    loss), in the order of `names`: one prediction pass can be scored at several thresholds. `groups`:
    each patch's resampling group and their unit, the table's `group` and `unit` columns. `operated_at`: the
    threshold the model will be used at (its val_threshold), where `<prefix>_near_constant` is judged: a model
    whose scores all sit below 0.5 but rank the patches well is not constant at the threshold it is operated
    at. `curves`:
    the ROC and PR plots of these predictions, drawn already (they are the same at every threshold)."""
    labels, probabilities, loss = predictions
    scored = binary_metrics(labels, probabilities, threshold)
    if operated_at is not None:
        scored["near_constant"] = float(near_constant(probabilities, operated_at))
    metrics = {f"{prefix}_{k}": v for k, v in {**scored, "loss": loss}.items()}
    run.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        save_confusion_matrix(labels, probabilities, folder, threshold)
        for path in curves:
            shutil.copy(path, folder)
        if not curves:
            save_curves(labels, probabilities, folder)
        table = pd.DataFrame({"name": list(names), "label": labels.astype(int), "probability": probabilities,
                              "predicted": (probabilities >= threshold).astype(int)})
        if groups is not None:
            table = table.assign(**groups.columns())
        table.to_csv(folder / "predictions.csv", index=False)
        run.log_artifacts(folder, f"evaluation/{prefix}")
    return metrics


def log_at_validation_threshold(run: StageRun, predictions: Predictions, names: Sequence[str], prefix: str,
                                validation: Predictions, groups: Groups | None = None) -> dict[str, float]:
    """`prefix` scored at 0.5 (`<prefix>_*`) and at the threshold with the best F1 on `validation`
    (`<prefix>_valthr_*`, the threshold logged and returned as val_threshold): a natural-prevalence validation set
    gives the threshold a classifier would be operated at on real prevalence."""
    threshold = best_f1_threshold(validation[0], validation[1])
    run.log_metrics({THRESHOLD_METRIC: threshold})
    if source := threshold_source(validation[0]):
        log.warning("%s: %s", THRESHOLD_METRIC, source)
        run.set_tags({THRESHOLD_SOURCE: source})
    with tempfile.TemporaryDirectory() as tmp:
        curves = save_curves(predictions[0], predictions[1], Path(tmp))
        return (log_evaluation(run, predictions, names, prefix, groups=groups, curves=curves)
                | log_evaluation(run, predictions, names, f"{prefix}_valthr", threshold, groups, curves=curves)
                | {THRESHOLD_METRIC: threshold})
