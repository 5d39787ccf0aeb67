"""SimCLR pretraining: the NT-Xent loss, LARS, and a resumable training loop.

The loop knows nothing of MLflow: it reports each epoch's metrics through a `runtime.Progress` once that
epoch's checkpoint is durable, and keeps its metric history in the checkpoint, from which a killed run
continues exactly where the checkpoint left it, with every step reported once.

Under torchrun every rank trains on its shard of each global batch (`BatchLoader.sharded`) with
DistributedDataParallel; the projections of all ranks are gathered, so NT-Xent sees the negatives of the
whole global batch, as one process would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from simclr_s2.errors import UserError
from simclr_s2.learning import distributed
from simclr_s2.learning.augment import augment as augment_views
from simclr_s2.learning.checkpoints import Snapshots, resumable
from simclr_s2.learning.config import OPTIMIZERS, AugmentConfig
from simclr_s2.learning.datasets import BatchLoader, batch_shares, set_epoch
from simclr_s2.learning.models import SimCLRModel
from simclr_s2.learning.models import channels_last as to_channels_last
from simclr_s2.learning.runtime import (
    Progress,
    StepMetrics,
    adam,
    amp_setup,
    check_finite,
    load_optimizer_state,
    restore_rng,
    rng_states,
    save_checkpoint,
)

logger = logging.getLogger(__name__)

# The study's encoders: SGD with cosine decay from 0.1, Adam 5e-4; LARS: SimCLR's 0.3 x batch / 256
# is left to the caller, 0.3 is its base rate.
DEFAULT_LR = {"sgd": 0.1, "adam": 5e-4, "lars": 0.3}

def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent, the normalised temperature-scaled cross-entropy loss of SimCLR.

    Chen, Kornblith, Norouzi, Hinton 2020, "A Simple Framework for Contrastive Learning of Visual
    Representations", eq. (1): for a positive pair (i, j) among the 2N augmented examples,

        l(i, j) = -log [ exp(sim(z_i, z_j) / tau) / sum_{k=1}^{2N} 1[k != i] exp(sim(z_i, z_k) / tau) ]

    with sim(u, v) = u^T v / (||u|| ||v||); "the final loss is computed across all positive pairs,
    both (i, j) and (j, i), in a mini-batch": L = 1/(2N) sum_{k=1}^{N} [l(2k-1, 2k) + l(2k, 2k-1)].

    z1[n] and z2[n] are the projections of two views of sample n. Each row of the 2N x 2N similarity
    matrix, its diagonal masked out, is a softmax over k != i whose target is i's positive, so L is
    one cross-entropy.
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent_loss: expected two (N, D) tensors of one shape, got {tuple(z1.shape)}, {tuple(z2.shape)}"
        )
    if temperature <= 0:
        raise UserError(f"temperature: expected a positive value, got {temperature}")
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    logits = (z @ z.T) / temperature
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives)


class LARS(torch.optim.Optimizer):
    """SGD with momentum and Layer-wise Adaptive Rate Scaling.

    You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional Networks" (arXiv:1708.03888):
    each layer's learning rate is scaled by its trust ratio eta * ||w|| / ||grad + wd * w||, so every
    layer moves by a similar fraction of its weights whatever its gradient scale. As in SimCLR, groups
    with `lars=False` (biases and BatchNorm, see `param_groups`) skip the scaling and weight decay.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        eta: float = 0.001,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "eta": eta, "lars": True}
        )

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = p.grad
                if group["lars"]:
                    update = update.add(p, alpha=group["weight_decay"])
                    w_norm, u_norm = torch.linalg.vector_norm(p), torch.linalg.vector_norm(update)
                    trust = torch.where((w_norm > 0) & (u_norm > 0), group["eta"] * w_norm / u_norm, 1.0)
                    update = update * trust
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p)
                buf = state["momentum_buffer"].mul_(group["momentum"]).add_(update, alpha=group["lr"])
                p.sub_(buf)
        return loss


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weights (decayed, LARS-scaled) apart from biases and BatchNorm parameters (neither), as SimCLR
    does; 1-D parameters are exactly the biases and normalisation weights in these networks."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lars": False},
    ]


def make_optimizer(
    model: nn.Module, name: str, lr: float, weight_decay: float = 0.0, momentum: float = 0.9
) -> torch.optim.Optimizer:
    """One of OPTIMIZERS over the model's trainable parameters."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(
            [{k: v for k, v in g.items() if k != "lars"} for g in groups], lr=lr, momentum=momentum, fused=True
        )
    if name == "adam":
        return adam([{k: v for k, v in g.items() if k != "lars"} for g in groups], lr)
    if name == "lars":
        return LARS(groups, lr=lr, momentum=momentum)
    raise UserError(f"optimizer: unknown optimizer {name!r}, expected one of {', '.join(OPTIMIZERS)}")


def make_scheduler(
    optimizer: torch.optim.Optimizer, name: str, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Cosine decay to zero over all steps for SGD and LARS (the study's SGD encoder, SimCLR); a
    constant rate for Adam (the study's Adam encoder)."""
    if name == "adam":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total_steps))
    )


def simclr_step(
    model: nn.Module,
    x: torch.Tensor,
    optimizer: torch.optim.Optimizer,
    *,
    temperature: float,
    augment: AugmentConfig,
    generator: torch.Generator,
    channels_last: bool = True,
    autocast_dtype: torch.dtype | None = None,
    scaler: torch.amp.GradScaler | None = None,
    shares: Sequence[int] | None = None,
) -> float:
    """One SimCLR step on a batch x (N, C, H, W): two views each, one forward pass over the 2N views
    (BatchNorm sees both, as in SimCLR), NT-Xent in float32, backward, optimiser step. Returns the loss.

    With several ranks `model` is the DistributedDataParallel wrapper and the loss is over every rank's
    projections: each rank's gradient of its own rows then sums the ranks' identical losses, and DDP's
    average over the ranks gives exactly the one-process gradient. `shares` (`BatchLoader.shares`): each
    rank's first rows that are samples; the rest, padding, are no patch's negatives."""
    with torch.no_grad():
        views = torch.cat([augment_views(x, augment, generator), augment_views(x, augment, generator)])
    if channels_last:
        views = to_channels_last(views)
    with torch.autocast(views.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        z = model(views)
    z1, z2 = (distributed.all_gather_grad(half) for half in z.float().chunk(2))
    if shares is not None and any(n != len(x) for n in shares):
        samples = torch.cat([torch.arange(len(x)) < n for n in shares]).to(z1.device)
        z1, z2 = z1[samples], z2[samples]
    if len(z1) < 2:
        raise UserError(f"batch_size: NT-Xent needs at least 2 patches a batch (the others are a patch's "
                        f"negatives), got a batch of {len(z1)}")
    loss = nt_xent_loss(z1, z2, temperature)
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return loss.item()


@dataclass
class PretrainResult:
    """What a pretraining call did: every epoch's loss, a mean over its patches (resumed epochs included), the optimiser
    steps done in all, the epoch it started from (0 unless resumed) and every step's metrics."""

    epoch_losses: list[float] = field(default_factory=list)
    global_step: int = 0
    start_epoch: int = 0
    history: list[StepMetrics] = field(default_factory=list)


@dataclass
class _Training:
    """Everything a checkpoint must hold for a resumed run to take the same steps as an uninterrupted
    one: weights, optimiser and schedule, and every rank's RNGs that decide views (and a DataLoader's
    order, from torch's global RNG; a BatchLoader's follows from the epoch, `set_epoch`)."""

    config: dict[str, Any]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    generator: torch.Generator
    snapshots: Snapshots = field(default_factory=Snapshots)

    def save(self, path: Path, result: PretrainResult, progress: Progress | None, last: bool) -> None:
        """Rank 0 hands a snapshot of the checkpoint (`checkpoints`: copied into reused buffers, written as
        one safetensors file) to `progress` (which may write it in the background) or writes it here, always
        to a temporary file renamed over the old one: a kill never leaves half a file. Every rank must call
        it (the RNG states are gathered). The `last` epoch's leaves the optimiser out: its configuration
        holds the epoch count, so no resume trains on from it (two thirds of a ResNet-18's checkpoint)."""
        rng = distributed.all_gather_object(
            {**rng_states(self.generator.device), "augment": self.generator.get_state()}
        )
        if not distributed.is_main():
            return
        checkpoint = {
            "config": self.config,
            "model": self.model.state_dict(),
            "optimizer": None if last else self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": None if self.scaler is None else self.scaler.state_dict(),
            "epoch": len(result.epoch_losses),
            "global_step": result.global_step,
            "epoch_losses": result.epoch_losses,
            "history": result.history,
            "rng": rng,
        }
        save_checkpoint(progress, self.snapshots.take(checkpoint), path, len(result.epoch_losses) - 1)

    def load(self, checkpoint: dict[str, Any], path: Path | None) -> PretrainResult:
        """Restore a checkpoint written by `save` (read from `path`) with the same configuration."""
        old = checkpoint["config"]
        changed = [f"{k}={old.get(k)!r} there, {v!r} here" for k, v in self.config.items() if old.get(k) != v]
        if changed:
            raise UserError(
                f"checkpoint {path} was written by a different pretraining ({', '.join(changed)})"
            )
        self.model.load_state_dict(checkpoint["model"])
        if checkpoint["optimizer"] is not None:
            load_optimizer_state(self.optimizer, checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler is not None and checkpoint["scaler"] is not None:
            self.scaler.load_state_dict(checkpoint["scaler"])
        rng = distributed.own_state(checkpoint["rng"], f"checkpoint {path}")
        restore_rng(rng)
        self.generator.set_state(rng["augment"])
        return PretrainResult(
            list(checkpoint["epoch_losses"]), checkpoint["global_step"], checkpoint["epoch"],
            list(checkpoint["history"]),
        )


def _contrastive(loader: Iterable[Any]) -> Iterable[Any]:
    """`loader` as NT-Xent can learn from it: a patch learns from the other patches of its batch, so a BatchLoader
    of one patch a batch is refused, and its last batch dropped when that holds a single patch (a step that
    teaches nothing and logs a loss of 0). Other loaders are checked batch by batch (`simclr_step`)."""
    if not isinstance(loader, BatchLoader):
        return loader
    if loader.batch_size < 2:
        raise UserError(f"batch_size: NT-Xent needs at least 2 patches a batch, got {loader.batch_size}")
    return loader.dropping_last() if len(loader.source) % loader.batch_size == 1 else loader


def pretrain(
    model: SimCLRModel,
    loader: Iterable[Any],
    epochs: int,
    *,
    optimizer: str = "sgd",
    lr: float | None = None,
    temperature: float = 0.1,
    seed: int = 0,
    augment: AugmentConfig | None = None,
    checkpoint_path: str | Path | None = None,
    progress: Progress | None = None,
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool = True,
    weight_decay: float = 0.0,
    momentum: float = 0.9,
) -> PretrainResult:
    """Train `model` with SimCLR on the batches of `loader` (x or (x, y); labels ignored).

    `lr` None takes DEFAULT_LR[optimizer]. NT-Xent needs two patches a batch (`_contrastive`). Each epoch
    reports, through `progress.epoch_done`, {"loss", "lr"} for every optimiser step (step = steps done so far)
    and {"epoch_loss", "epoch"} at that epoch's last step (the mean over its patches), after the epoch's
    checkpoint is durable. With `checkpoint_path`, the model, optimiser (but after the last epoch), scheduler,
    counters, RNG states and metric history are written after each epoch as one safetensors file
    (`checkpoints`), and a call that finds it (or the earlier torch.save file beside it) continues from it
    (handing the history to `progress.resumed`): the steps after it are the same as an uninterrupted run's (same
    data order, a loader with `set_epoch` being told each epoch, views and numbering). A run killed mid-epoch
    repeats that epoch's steps, with the same numbers, reported once. A NaN or infinite loss stops the loop
    (NonFiniteError). `amp` turns on autocast on CUDA only. Under torchrun, `progress` is called and the
    checkpoint written on rank 0 only, and each rank draws its own views (seeded with seed + rank).
    """
    if optimizer not in OPTIMIZERS:
        raise UserError(
            f"optimizer: unknown optimizer {optimizer!r}, expected one of {', '.join(OPTIMIZERS)}"
        )
    lr = DEFAULT_LR[optimizer] if lr is None else lr
    if not (math.isfinite(lr) and lr > 0):
        raise UserError(f"lr: expected a finite learning rate > 0, got {lr}")
    if not (math.isfinite(temperature) and temperature > 0):
        raise UserError(f"temperature: expected a positive value, got {temperature}")
    if epochs < 1:
        raise UserError(f"epochs: expected at least 1, got {epochs}")
    loader = _contrastive(loader)
    if not isinstance(loader, Sized) or len(loader) == 0:
        raise UserError("data: the pretraining loader has no batches (is the data set empty?)")
    augment = augment or AugmentConfig()
    device = torch.device(device)
    report = progress if progress is not None and distributed.is_main() else None

    model.to(device)
    if channels_last:
        to_channels_last(model)
    opt = make_optimizer(model, optimizer, lr, weight_decay, momentum)
    steps_per_epoch = len(loader)
    autocast_dtype, scaler = amp_setup(amp, device)
    config = {
        "optimizer": optimizer,
        "lr": lr,
        "temperature": temperature,
        "seed": seed,
        "epochs": epochs,
        "steps_per_epoch": steps_per_epoch,
        "weight_decay": weight_decay,
        "momentum": momentum,
        "augment": asdict(augment),
    }
    training = _Training(
        config=config,
        model=model,
        optimizer=opt,
        scheduler=make_scheduler(opt, optimizer, epochs * steps_per_epoch),
        scaler=scaler,
        generator=torch.Generator(device=device),
    )
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    found = resumable(path)
    checkpoint = distributed.load_checkpoint(found, weights_only=True)
    if checkpoint is not None:
        result = training.load(checkpoint, found)
        logger.info(
            "resuming pretraining from %s at epoch %d, step %d", found, result.start_epoch, result.global_step
        )
        if report:
            report.resumed(result.history)
    else:
        result = PretrainResult()
        torch.manual_seed(seed)
        training.generator.manual_seed(seed + distributed.rank())

    with distributed.data_parallel(model) as net:
        for epoch in range(result.start_epoch, epochs):
            net.train()
            set_epoch(loader, epoch)
            total, samples = 0.0, 0
            entries: list[StepMetrics] = []
            bar = tqdm(loader, desc=f"pretrain epoch {epoch + 1}/{epochs}", disable=distributed.quiet(), leave=False)
            for step, batch in enumerate(bar):
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                shares = batch_shares(loader, step, len(x))
                step_lr = opt.param_groups[0]["lr"]
                loss = simclr_step(
                    net,
                    x.to(device, non_blocking=True),
                    opt,
                    temperature=temperature,
                    augment=augment,
                    generator=training.generator,
                    channels_last=channels_last,
                    autocast_dtype=autocast_dtype,
                    scaler=scaler,
                    shares=shares,
                )
                training.scheduler.step()
                result.global_step += 1
                check_finite({"loss": loss}, ("loss",), f"at step {result.global_step} (lr={lr:g})")
                total += loss * sum(shares)  # the loss is the global batch's
                samples += sum(shares)
                entries.append((result.global_step, {"loss": loss, "lr": step_lr}))
            result.epoch_losses.append(total / samples)
            entries.append((result.global_step, {"epoch_loss": result.epoch_losses[-1], "epoch": float(epoch + 1)}))
            result.history.extend(entries)
            logger.info("pretrain epoch %d/%d: loss %.4f", epoch + 1, epochs, result.epoch_losses[-1])
            if path is not None:
                training.save(path, result, report, last=epoch == epochs - 1)
            if report:
                report.epoch_done(entries, epoch)
    return result
