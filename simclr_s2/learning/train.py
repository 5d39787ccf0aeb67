"""The supervised loop shared by fine-tuning and the baselines: Adam on the trainable weights, binary
cross-entropy on one logit, early stopping on validation AUC with the best weights kept, and a
checkpoint after every epoch so a killed run continues where it stopped, with exactly the steps
of an unbroken run.

Loaders are iterables of (x, y) batches; one that has `set_epoch(epoch)` is told the epoch first, so its
shuffled order depends on (seed, epoch) only and a resumed run sees the same batches as an unbroken one.

Under torchrun every rank calls `fit` with its shard of the batches (`BatchLoader.sharded`): gradients
are averaged by DistributedDataParallel, and epoch metrics are computed on everyone's predictions, so
every rank takes the same early-stopping decisions. Rank 0 alone logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from simclr_s2.errors import UserError
from simclr_s2.learning import distributed, runtime
from simclr_s2.learning.checkpoints import Snapshots, resumable
from simclr_s2.learning.config import EPOCH_METRICS
from simclr_s2.learning.datasets import batch_shares, gather_epoch, set_epoch
from simclr_s2.learning.metrics import binary_metrics
from simclr_s2.learning.runtime import Progress, adam, amp_setup, check_finite, load_optimizer_state, save_checkpoint

log = logging.getLogger(__name__)

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]
SMALL_MODEL_WEIGHTS = 4_000_000
"""A module with fewer weights (a head on cached features: 0.8 M) trains on the CPU on one intra-op thread:
its operations are too small to share, and two threads spend more time waiting for each other than working
(on a busy machine 84 CPU-s against 4 for the demo's 450 head steps, with the same weights bit for bit)."""


@dataclass(frozen=True)
class FitConfig:
    """The study's defaults: Adam lr 5e-5, up to 50 epochs, patience 25 on validation AUC."""

    epochs: int = 50
    lr: float = 5e-5
    weight_decay: float = 0.0
    patience: int = 25
    seed: int = 0
    device: str = "cpu"
    amp: bool = False
    channels_last: bool = True

    def __post_init__(self) -> None:
        for name in ("epochs", "patience"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: expected a whole number >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise UserError(f"lr: expected a learning rate > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise UserError(f"weight_decay: expected a value >= 0, got {self.weight_decay}")


PLACE_SETTINGS = ("device", "amp")
"""Settings that only say where a training ran, not what it trains: a checkpoint written on a GPU (bf16
autocast there) resumes on the CPU and back, as the RNG states do (runtime.restore_rng), not exactly. The
key of a run leaves them out, so a run killed on a GPU node and run again elsewhere must go on."""


@dataclass
class FitResult:
    best_epoch: int
    best_val: dict[str, float]
    epochs_run: int
    start_epoch: int
    stopped_early: bool


def _prepare(x: torch.Tensor, device: str, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


@contextmanager
def _intra_op_threads(model: nn.Module, device: torch.device) -> Iterator[None]:
    """One intra-op thread while a small module trains on the CPU (SMALL_MODEL_WEIGHTS), torch's own else."""
    small = device.type == "cpu" and sum(p.numel() for p in model.parameters()) < SMALL_MODEL_WEIGHTS
    threads = torch.get_num_threads()
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@torch.no_grad()
def predict(model: nn.Module, loader: Batches, device: str = "cpu", amp: bool = False,
            channels_last: bool = True) -> tuple[np.ndarray, np.ndarray, float]:
    """Labels, probabilities and mean BCE loss of `model` over `loader`, in evaluation mode. A sharded
    loader gives every rank's predictions, in the loader's order (so every rank must call it)."""
    model.eval().to(device)
    labels, logits = [], []
    autocast_dtype, _ = amp_setup(amp, torch.device(device))
    for x, y in loader:
        with torch.autocast(torch.device(device).type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            logits.append(model(_prepare(x, device, channels_last)).float().cpu())
        labels.append(y.float())
    if not logits:
        raise UserError("data: a set to evaluate has no patches")
    z, y = gather_epoch(loader, torch.cat(logits)), gather_epoch(loader, torch.cat(labels))
    loss = nn.functional.binary_cross_entropy_with_logits(z, y).item()
    return y.numpy(), _probabilities(z), loss


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    """sigmoid in float64: in float32 every logit above about 17 gives 1.0, and the AUC then ties patches the
    model ranks apart."""
    return torch.sigmoid(logits.double()).numpy()


def _check_settings(saved: dict[str, Any], cfg: FitConfig, path: Path | None) -> None:
    """Resume only what this training would train: a checkpoint of other settings is refused, naming them; one
    that differs only in PLACE_SETTINGS goes on, with a warning that the run is not exact."""
    here = asdict(cfg)
    changed = sorted(key for key in saved.keys() | here.keys() if saved.get(key) != here.get(key))

    def described(keys: list[str]) -> str:
        return ", ".join(f"{key}={saved.get(key)!r} there, {here.get(key)!r} here" for key in keys)

    if refused := [key for key in changed if key not in PLACE_SETTINGS]:
        raise UserError(f"checkpoint {path} was written with other settings ({described(refused)}): resume it "
                        "with its own, or remove it to train afresh")
    if changed:
        log.warning("checkpoint %s was written elsewhere (%s): resumed here, not exactly as an unbroken run would "
                    "go on", path, described(changed))


def _epoch_metrics(prefix: str, y: np.ndarray, p: np.ndarray, loss: float) -> dict[str, float]:
    m = {**binary_metrics(y, p, with_pr_auc=False), "loss": loss}
    return {f"{prefix}_{k}": m[k] for k in EPOCH_METRICS}


def _shard_loss(z: torch.Tensor, y: torch.Tensor, shares: list[int]) -> torch.Tensor:
    """This rank's BCE, which DistributedDataParallel averages over the ranks: the mean over its rows while
    every rank holds as many samples (one process: always); else its samples' sum (`dealt`'s padding left
    out) over the global batch's, times the ranks, so the average is the one-process batch mean."""
    mine = shares[distributed.rank()]
    if mine * len(shares) == sum(shares):
        return nn.functional.binary_cross_entropy_with_logits(z, y)
    return nn.functional.binary_cross_entropy_with_logits(z[:mine], y[:mine], reduction="sum") * (
        len(shares) / sum(shares))


def _train_epoch(net: nn.Module, loader: Batches, optimizer: torch.optim.Optimizer, cfg: FitConfig,
                 amp: tuple[torch.dtype | None, torch.amp.GradScaler | None], desc: str) -> dict[str, float]:
    """One pass over `loader` with `net` (the model, or its DistributedDataParallel wrapper); the
    train_* metrics on every rank's predictions, the loss averaged over every rank's samples."""
    device = torch.device(cfg.device)
    autocast_dtype, scaler = amp
    net.train()
    labels, logits, losses, count = [], [], [], 0
    for step, (x, y) in enumerate(tqdm(loader, desc=desc, disable=distributed.quiet(), leave=False)):
        y = y.float().to(device)
        shares = batch_shares(loader, step, len(y))
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            z = net(_prepare(x, cfg.device, cfg.channels_last)).float()
            loss = _shard_loss(z, y, shares)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        labels.append(y.cpu())
        logits.append(z.detach().cpu())
        losses.append(loss.item() * sum(shares) / len(shares))  # the BCE summed over this rank's samples
        count += shares[distributed.rank()]
    loss_sum, count = distributed.all_reduce_sum([sum(losses), float(count)])
    return _epoch_metrics("train", gather_epoch(loader, torch.cat(labels)).numpy(),
                          _probabilities(gather_epoch(loader, torch.cat(logits))), loss_sum / count)


def fit(model: nn.Module, train: Batches, val: Batches, cfg: FitConfig, *,
        checkpoint_path: Path | None = None, progress: Progress | None = None) -> FitResult:
    """Train the weights of `model` that require grad; afterwards `model` holds the best epoch's weights.

    Every epoch's train_* and val_* metrics go to `progress.epoch_done` at once (one batched tracking
    call), after that epoch's checkpoint is durable: with `checkpoint_path` the full state (weights,
    optimiser, best weights, patience counter, every rank's RNG, the metric history) is written after
    each epoch as one safetensors file (`checkpoints`), and picked up by the next call (or the earlier
    format's file beside it, `checkpoints.resumable`), which hands the history to `progress.resumed` (one of
    other settings is refused, one written on another device resumes: `_check_settings`); the last epoch's
    leaves the optimiser out (no resume trains on from it), and best weights that are the epoch's own are
    stored once. The training thread only copies the state into reused buffers (without
    waiting, on a GPU); `progress` writes it, in the background for a tracked run. A NaN or infinite loss
    stops training (NonFiniteError) before it is checkpointed. `progress` is called on rank 0 only.
    """
    device = torch.device(cfg.device)
    model.to(device)
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise UserError("trainable: the policy leaves no weight to train")
    optimizer = adam(trainable, cfg.lr, cfg.weight_decay)
    amp = amp_setup(cfg.amp, device)
    report = progress if progress is not None and distributed.is_main() else None

    state: dict[str, Any] = {"epoch": 0, "best_auc": -math.inf, "best_epoch": -1, "best_val": {},
                             "best_model": None, "bad_epochs": 0, "history": []}
    snapshots = Snapshots()
    saved = distributed.load_checkpoint(resumable(checkpoint_path))
    if saved is not None:
        _check_settings(saved["config"], cfg, checkpoint_path)
        model.load_state_dict(saved["model"])
        if saved["optimizer"] is not None:
            load_optimizer_state(optimizer, saved["optimizer"])
        runtime.restore_rng(distributed.own_state(saved["rng"], f"checkpoint {checkpoint_path}"))
        state = saved["state"]
        if state["best_model"] is not None:
            state["best_model"] = snapshots.take(state["best_model"])
        log.info("resuming training at epoch %d from %s", state["epoch"] + 1, checkpoint_path)
        if report:
            report.resumed(state["history"])
    else:
        torch.manual_seed(cfg.seed + distributed.rank())  # each rank its own dropout masks
    start_epoch = state["epoch"]

    with _intra_op_threads(model, device), distributed.data_parallel(model) as net:
        while state["epoch"] < cfg.epochs and state["bad_epochs"] < cfg.patience:
            epoch = state["epoch"]
            set_epoch(train, epoch)
            train_metrics = _train_epoch(net, train, optimizer, cfg, amp, f"epoch {epoch + 1}/{cfg.epochs}")
            distributed.broadcast_buffers(model)
            val_metrics = _epoch_metrics("val", *predict(model, val, cfg.device, cfg.amp, cfg.channels_last))
            metrics = {**train_metrics, **val_metrics}
            check_finite(metrics, ("train_loss", "val_loss"), f"at epoch {epoch + 1} (lr={cfg.lr:g})")
            auc = val_metrics["val_auc"]
            improved = not math.isnan(auc) and auc > state["best_auc"]
            writes = checkpoint_path is not None and distributed.is_main()
            weights = snapshots.take(model.state_dict()) if improved or writes else None
            if improved:
                state.update(best_auc=auc, best_epoch=epoch, best_val=val_metrics, bad_epochs=0, best_model=weights)
            else:
                state["bad_epochs"] += 1
            state["epoch"] = epoch + 1
            state["history"].append((epoch, metrics))
            log.info("epoch %d/%d: train loss %.4f, val loss %.4f, val AUC %.4f, val F1 %.4f", epoch + 1,
                     cfg.epochs, train_metrics["train_loss"], val_metrics["val_loss"], auc, val_metrics["val_f1"])
            if checkpoint_path is not None:
                rngs = distributed.all_gather_object(runtime.rng_states(device))
                if writes:
                    done = state["epoch"] >= cfg.epochs or state["bad_epochs"] >= cfg.patience
                    checkpoint = {"config": asdict(cfg), "model": weights,
                                  "optimizer": None if done else optimizer.state_dict(), "rng": rngs, "state": state}
                    save_checkpoint(report, snapshots.take(checkpoint), checkpoint_path, epoch)
            if report:
                report.epoch_done([(epoch, metrics)], epoch)

    if state["best_model"] is not None:
        state["best_model"].ready()
        model.load_state_dict(state["best_model"].tree)
    return FitResult(best_epoch=state["best_epoch"], best_val=state["best_val"], epochs_run=state["epoch"],
                     start_epoch=start_epoch, stopped_early=state["bad_epochs"] >= cfg.patience)
