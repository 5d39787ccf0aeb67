"""What every training loop needs from the machine: crash-safe checkpoint files, mixed precision, finite
numbers, and the interface through which a loop reports progress to whoever tracks it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import torch

from simclr_s2 import faults
from simclr_s2.errors import NonFiniteError

StepMetrics = tuple[int, dict[str, float]]
"""(step, metrics): one entry of a loop's metric history (the epoch for fine-tuning, the optimiser step
for pretraining)."""


class Progress(Protocol):
    """Where a training loop reports (on rank 0). The loop keeps its whole metric history in its
    checkpoint, so a tracker can always bring a run's history to exactly the checkpoint's steps."""

    def resumed(self, history: Sequence[StepMetrics]) -> None:
        """The loop restored a checkpoint holding `history`: every step before the epoch it continues at."""

    def save(self, checkpoint: Checkpoint, path: Path, epoch: int) -> None:
        """Make `checkpoint` (a snapshot: the loop goes on changing its own state) durable at `path`, now or
        in the background; `epoch_done` for the same epoch follows."""

    def epoch_done(self, entries: Sequence[StepMetrics], epoch: int) -> None:
        """An epoch ended with `entries`; the metrics may be published once its checkpoint is durable."""


class Checkpoint(Protocol):
    """What a Progress makes durable: a checkpoint that writes itself as one file."""

    def write(self, path: Path) -> None:
        """The whole checkpoint as the file `path`."""


def save_checkpoint(progress: Progress | None, checkpoint: Checkpoint, path: Path, epoch: int) -> None:
    """Through `progress` (which may write in the background) or, without one, right here."""
    if progress is not None:
        progress.save(checkpoint, path, epoch)
    else:
        save_atomically(checkpoint, path, epoch)


class Recorder:
    """A Progress that keeps what a loop reports, in memory (notebooks, benchmarks, tests); `on_epoch(epoch)`
    is called after each epoch is recorded."""

    def __init__(self, on_epoch: Callable[[int], None] | None = None) -> None:
        self.entries: list[StepMetrics] = []
        self.restored: list[StepMetrics] | None = None
        self.on_epoch = on_epoch

    def resumed(self, history: Sequence[StepMetrics]) -> None:
        self.restored = list(history)

    def save(self, checkpoint: Checkpoint, path: Path, epoch: int) -> None:
        save_atomically(checkpoint, path, epoch)

    def epoch_done(self, entries: Sequence[StepMetrics], epoch: int) -> None:
        self.entries.extend(entries)
        if self.on_epoch is not None:
            self.on_epoch(epoch)

    def metrics(self) -> list[dict[str, float]]:
        """Each reported entry's metrics, in order."""
        return [dict(m) for _, m in self.entries]


def save_atomically(checkpoint: Checkpoint, path: Path, epoch: int = -1) -> None:
    """Write to a temporary file, fsync, then rename over the old checkpoint: a kill never leaves half a
    file, and a checkpoint that exists is on disk before anything reports its epoch."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    checkpoint.write(tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    faults.point("checkpoint_write", epoch)
    os.replace(tmp, path)


def check_finite(metrics: Mapping[str, float], keys: Sequence[str], where: str) -> None:
    """NonFiniteError naming the first of `keys` that is NaN or infinite: a diverged training stops
    before a checkpoint or a registered model keeps it."""
    for key in keys:
        if key in metrics and not math.isfinite(metrics[key]):
            raise NonFiniteError(f"training diverged: {key} is {metrics[key]} {where}; lower lr or check the data")


def amp_setup(amp: bool, device: torch.device) -> tuple[torch.dtype | None, torch.amp.GradScaler | None]:
    """bf16 autocast on GPUs that have it, else fp16 with a gradient scaler; nothing on the CPU."""
    if not amp or device.type != "cuda":
        return None, None
    if torch.cuda.is_bf16_supported():
        return torch.bfloat16, None
    return torch.float16, torch.amp.GradScaler("cuda")
