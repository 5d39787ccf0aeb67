"""What a tuning study may search and optimise, apart from Optuna: the settings layer checks a `tune`
command's ranges and metric while it parses them, before Optuna or torch is imported."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from simclr_s2.errors import UserError
from simclr_s2.learning.config import TRAINABLE

if TYPE_CHECKING:
    import optuna

TARGETS = ("finetune", "baseline")
METRICS = ("val_f1", "val_auc")
PRUNERS = ("median", "hyperband")


def check_metric(metric: str) -> str:
    """A validation metric to maximise; test metrics are refused, tuning on them would leak the test set."""
    if metric.startswith("test_"):
        raise UserError(f"metric: {metric} is a test metric, never tuned on (it would leak the test set); "
                        f"use one of {', '.join(METRICS)}")
    if metric not in METRICS:
        raise UserError(f"metric: expected one of {', '.join(METRICS)}, got {metric}")
    return metric


@dataclass(frozen=True)
class SearchSpace:
    """Ranges of the tuned settings: lr on a log scale, weight decay and dropout uniform, batch size and
    trainable part categorical (the trainable part only where the target takes it as a parameter: a
    baseline answers it as a class value, it trains everything)."""

    lr_min: float = 1e-5
    lr_max: float = 1e-2
    weight_decay_max: float = 1e-3
    dropout_min: float = 0.0
    dropout_max: float = 0.6
    batch_sizes: tuple[int, ...] = (16, 32, 64)
    trainables: tuple[str, ...] = ("head2", "head")

    def __post_init__(self) -> None:
        if not 0 < self.lr_min <= self.lr_max:
            raise UserError(f"lr_min, lr_max: expected 0 < lr_min <= lr_max, got {self.lr_min}, {self.lr_max}")
        if self.weight_decay_max < 0:
            raise UserError(f"weight_decay_max: expected a value >= 0, got {self.weight_decay_max}")
        if not 0 <= self.dropout_min <= self.dropout_max < 1:
            raise UserError(f"dropout_min, dropout_max: expected 0 <= dropout_min <= dropout_max < 1, "
                            f"got {self.dropout_min}, {self.dropout_max}")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise UserError(f"batch_sizes: expected whole numbers >= 1, got {list(self.batch_sizes)}")
        unknown = [t for t in self.trainables if t not in TRAINABLE]
        if not self.trainables or unknown:
            raise UserError(f"trainables: expected some of {', '.join(TRAINABLE)}, got {list(self.trainables)}")

    def suggest(self, trial: optuna.Trial, parameters: Collection[str]) -> dict[str, Any]:
        """One trial's settings, named as the finetune/baseline entry points name them; `parameters` are
        the names the tuned entry point takes, so the target's spec decides, not its name."""
        params: dict[str, Any] = {
            "lr": trial.suggest_float("lr", self.lr_min, self.lr_max, log=True),
            "weight_decay": trial.suggest_float("weight_decay", 0.0, self.weight_decay_max),
            "dropout": trial.suggest_float("dropout", self.dropout_min, self.dropout_max),
            "batch_size": trial.suggest_categorical("batch_size", list(self.batch_sizes)),
        }
        if "trainable" in parameters:
            params["trainable"] = trial.suggest_categorical("trainable", list(self.trainables))
        return params


def storage_problem(spec: str) -> str | None:
    """What is wrong with a `storage` value (auto, or a database URL SQLAlchemy parses), None when nothing:
    checked while the command line is parsed, before any work."""
    if spec == "auto":
        return None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        make_url(spec)
    except ArgumentError:
        return "expected auto or a database URL such as postgresql://user@host/db or sqlite:///path/optuna.db"
    return None

