"""One classifier training inside the active MLflow run: what `finetune`, `baseline` and every `tune`
trial share. Resolves the split and the encoder, applies the trainable-part policy, uses the feature
cache when the frozen part cannot change, trains with early stopping, and logs parameters, inputs and
per-epoch metrics.

Under torchrun every rank calls `train_classifier`: rank 0 resolves the split and the encoder (the `auto`
demo chain, artifact downloads) and sends them to the others, trains its shard like every rank, and alone
logs to MLflow."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import torch

from simclr_s2 import distributed
from simclr_s2.bigearthnet.bands import resolve_bands
from simclr_s2.data import BatchLoader
from simclr_s2.errors import UserError
from simclr_s2.feature_cache import cached_training_set
from simclr_s2.models import IrrigationClassifier, apply_trainable
from simclr_s2.splits import SplitSet
from simclr_s2.tracking import steps
from simclr_s2.tracking.artifacts import log_table_input
from simclr_s2.tracking.inputs import SplitData, load_split_data, loader, split_ref
from simclr_s2.tracking.registry import Pretrained, load_pretrained
from simclr_s2.train import FitConfig, FitResult, fit


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything that decides a classifier's result (the entry point's parameters, parsed)."""

    stage: str  # "finetune" or "baseline"
    split: str = "auto"
    scheme: str = "basic"
    fraction: int = 100
    pretrained: str = "auto"  # finetune only
    trainable: str = "head2"  # finetune only; a baseline trains everything
    bands: str = "auto"
    arch: str = "resnet18"  # baseline only; a fine-tune takes its encoder's
    epochs: int = 50
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.0
    dropout: float = 0.5
    patience: int = 25
    seed: int = 0
    feature_cache: str = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.dropout < 1:
            raise UserError(f"dropout: expected a probability in [0, 1), got {self.dropout}")
        if self.batch_size < 1:
            raise UserError(f"batch_size: expected a whole number >= 1, got {self.batch_size}")


@dataclass
class TrainedClassifier:
    model: IrrigationClassifier
    result: FitResult
    split: SplitData
    bands: str
    arch: str
    pretrained: str  # the `pretrained` tag: encoder name, or "scratch"
    policy: str
    batches: Callable[[SplitSet, bool], BatchLoader]
    device: str


def _resolve(spec: ClassifierSpec) -> tuple[SplitData, Pretrained | None]:
    """The split and, for a fine-tune, the encoder the spec names (MLflow look-ups and downloads)."""
    split = load_split_data(split_ref(spec.split, spec.scheme), spec.scheme, spec.fraction)
    if spec.stage != "finetune":
        return split, None
    uri = steps.demo_encoder_uri() if spec.pretrained == "auto" else spec.pretrained
    return split, load_pretrained(uri, spec.bands)


def _log_inputs(split: SplitData, pretrained: Pretrained | None, resolved: Mapping[str, object],
                tags: Mapping[str, str]) -> None:
    if pretrained is not None:
        mlflow.log_params({"pretrained_uri": pretrained.uri, "pretrained_version": pretrained.version or "-"})
    mlflow.log_params({"resolved_split": split.ref, "index_digest": split.index_digest,
                       "train_digest": split.train.digest, "val_digest": split.val.digest,
                       "test_digest": split.test.digest, **resolved})
    mlflow.set_tags(tags)
    for context, s in (("training", split.train), ("validation", split.val), ("test", split.test)):
        log_table_input(pd.DataFrame({"name": s.names, "label": s.labels}), name=f"{split.scheme}/{s.path.stem}",
                        source=str(s.path), digest=s.digest, context=context)


def train_classifier(spec: ClassifierSpec, *, checkpoint_path: Path | None,
                     log_fn: Callable[[Mapping[str, float], int], None],
                     log_checkpoints: bool = True) -> TrainedClassifier:
    split, pretrained = distributed.main_only(lambda: _resolve(spec))
    torch.manual_seed(spec.seed)  # the seed decides the new layers' weights too (torch seeds each process anew)
    if pretrained is not None:
        model = IrrigationClassifier.from_simclr(pretrained.model, dropout=spec.dropout)
        policy, bands, arch, name = spec.trainable, pretrained.bands, pretrained.arch, pretrained.name
    else:
        bands = "study" if spec.bands == "auto" else spec.bands
        arch, policy, name = spec.arch, "all", "scratch"
        model = IrrigationClassifier.from_scratch(arch, len(resolve_bands(bands)), dropout=spec.dropout)
    counts = apply_trainable(model, policy)
    use_cache = policy != "all" and spec.feature_cache != "false"
    if distributed.is_main():
        _log_inputs(split, pretrained, {
            "resolved_bands": ",".join(resolve_bands(bands)), "policy": policy,
            "trainable_weights": counts.trainable, "frozen_weights": counts.frozen,
            "feature_cache_used": use_cache},
            {"pretrained": name, "arch": arch, "trainable": policy})

    device = distributed.device()
    pool = split.train.names + split.val.names + split.test.names

    def batches(s: SplitSet, shuffle: bool) -> BatchLoader:
        return loader(split.archive_root, s.names, s.labels.astype(np.float32), bands, spec.batch_size,
                      shuffle=shuffle, seed=spec.seed, digest=split.index_digest, store_names=pool)

    target, train_batches = model, batches(split.train, True).sharded()
    val_batches = batches(split.val, False).sharded()
    if use_cache:
        target, train_batches, val_batches = cached_training_set(
            model, policy, batches(split.train, False).sharded(), val_batches, spec.batch_size, spec.seed, device)
    cfg = FitConfig(epochs=spec.epochs, lr=spec.lr, weight_decay=spec.weight_decay, patience=spec.patience,
                    seed=spec.seed, device=device, amp=device == "cuda")
    result = fit(target, train_batches, val_batches, cfg, checkpoint_path=checkpoint_path, log_fn=log_fn,
                 on_checkpoint=(lambda path: mlflow.log_artifact(str(path), "checkpoints")) if log_checkpoints
                 else None)
    if distributed.is_main():
        mlflow.log_metrics({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                            **{f"best_{k}": v for k, v in result.best_val.items()}})
    return TrainedClassifier(model, result, split, bands, arch, name, policy, batches, device)
