"""Scoring a classifier on a set and logging what a person checks: metrics, confusion matrix, ROC and PR
plots, and a table of every patch's prediction."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import torch

from simclr_s2.metrics import binary_metrics, save_plots
from simclr_s2.tracking.tracker import StageRun
from simclr_s2.train import predict


def log_evaluation(run: StageRun, model: torch.nn.Module, batches: Iterable, names: Sequence[str],
                   prefix: str = "test", device: str = "cpu", threshold: float = 0.5) -> dict[str, float]:
    """Metrics `<prefix>_accuracy` ... `<prefix>_fn` on the run; plots and predictions.csv under the
    artifact folder evaluation/<prefix>. `batches` must follow the order of `names`."""
    labels, probabilities, loss = predict(model, batches, device)
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
