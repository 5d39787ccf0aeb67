"""A tiny training (a linear model on fixed tensors) through the real tracker and the real training loop:
in-process for the tracker's tests, and in a child process that resume tests kill at named fault points
(`train_in_child`, or `python tests/tracking/tiny_training.py <epochs>`: context from the environment)."""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from simclr_s2.learning.datasets import BatchLoader, MemoryDataset
from simclr_s2.learning.train import FitConfig, fit
from simclr_s2.settings.context import Context
from simclr_s2.tracking.tracker import Step, Tracker


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(5, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x).squeeze(-1)


def step(epochs: int) -> Step:
    return Step("tiny", {"epochs": str(epochs)}, code="tiny-code")


def train(ctx: Context, epochs: int = 4, lr: float = 0.05) -> str:
    """Train `epochs` epochs (patience never stops it) in the run of `step(epochs)`; returns its id."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(64, 5, generator=generator)
    y = (x[:, 0] > 0).float()
    with Tracker(ctx).open(step(epochs), run_name="tiny") as run:
        torch.manual_seed(0)
        model = Tiny()
        fit(model, BatchLoader(MemoryDataset(x, y), 16, shuffle=True, seed=0), BatchLoader(MemoryDataset(x, y), 16),
            FitConfig(epochs=epochs, lr=lr, patience=epochs, channels_last=False),
            checkpoint_path=run.checkpoint_dir / "train.pt", progress=run.progress())
    return run.run_id


def context_env(ctx: Context) -> dict[str, str]:
    """The environment from which a process started by a test builds the same context as `ctx`."""
    return {**os.environ, "MLFLOW_TRACKING_URI": ctx.tracking_uri, "MLFLOW_EXPERIMENT_NAME": ctx.experiment_name}


def train_in_child(epochs: int, env: dict[str, str]) -> None:
    """`train` in a process of its own, its context from `env`, where the SIMCLR_S2_* settings are set too
    (e.g. a fault point that kills it): a forkserver's child, so the kill costs no interpreter start-up."""
    os.environ.update({k: v for k, v in env.items() if k.startswith("SIMCLR_S2_")})
    train(Context.from_env(env), epochs)


if __name__ == "__main__":
    print(train(Context.from_env(), int(sys.argv[1])))
