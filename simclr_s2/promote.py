"""Choosing which classifier an alias (`champion`) points to: the best candidate by a validation metric of
its kept epoch.

The test set never decides: it is the one honest estimate left once a model is chosen (the original's
later stage trained on it), so a test metric is refused. A tie at the top is refused too: picking either
would be arbitrary, and a person should narrow the candidates or pick another metric.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from simclr_s2.errors import UserError
from simclr_s2.train import EPOCH_METRICS

VALIDATION_METRICS = tuple(f"val_{m}" for m in EPOCH_METRICS)
LOWER_IS_BETTER = frozenset({"val_loss"})
MAX_TAG_CHARS = 4000  # under MLflow's 5000/8000-character limits for tag values


def run_metric(metric: str) -> str:
    """The run metric behind `metric`: the trainer logs the kept epoch's validation metrics as best_val_*
    (a run's plain val_* is its last epoch, which early stopping did not keep)."""
    if metric.startswith("test_"):
        raise UserError(f"metric: {metric} is a test-set metric and the test set never picks a model; "
                        f"use one of {', '.join(VALIDATION_METRICS)}")
    if metric not in VALIDATION_METRICS:
        raise UserError(f"metric: expected one of {', '.join(VALIDATION_METRICS)}, got {metric!r}")
    return f"best_{metric}"


def check_alias(alias: str) -> None:
    """Refuse what MLflow would refuse, before anything is searched or changed."""
    if not re.fullmatch(r"[\w-]{1,255}", alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        raise UserError(f"alias: expected letters, digits, '_' or '-', not 'latest' nor v<number>, got {alias!r}")


def previous_alias(alias: str) -> str:
    """Where the version `alias` held before goes: `previous` for the champion, `<alias>-previous` else."""
    return "previous" if alias == "champion" else f"{alias}-previous"


@dataclass(frozen=True)
class Candidate:
    version: str
    label: str  # for people: "v7 (ben 10pct s0)"
    value: float  # NaN when its run lacks the metric


@dataclass(frozen=True)
class Choice:
    metric: str
    ranked: tuple[Candidate, ...]  # scored candidates, best first
    unscored: tuple[Candidate, ...]

    @property
    def winner(self) -> Candidate:
        return self.ranked[0]


def choose(candidates: Sequence[Candidate], metric: str, what: str) -> Choice:
    """The best of `candidates` by `metric`; `what` names the filters in messages. An empty set, a set
    where no run has the metric, or a tie at the top is a UserError, and nothing is chosen."""
    if not candidates:
        raise UserError(f"promote: no registered classifier matches {what}; run finetune or baseline first")
    scored = [c for c in candidates if not math.isnan(c.value)]
    unscored = tuple(c for c in candidates if math.isnan(c.value))
    if not scored:
        raise UserError(f"metric: none of the {len(candidates)} candidates ({what}) has {metric} on its run")
    ranked = sorted(scored, key=lambda c: c.value, reverse=metric not in LOWER_IS_BETTER)
    tied = [c for c in ranked if math.isclose(c.value, ranked[0].value, rel_tol=1e-9, abs_tol=1e-12)]
    if len(tied) > 1:
        raise UserError(f"promote: tie on {metric} = {ranked[0].value:.4f} between "
                        f"{', '.join(c.label for c in tied)} ({what}); narrow with fraction or pretrained, "
                        f"or choose another metric; nothing changed")
    return Choice(metric, tuple(ranked), unscored)


def reason_tags(choice: Choice, alias: str, what: str) -> dict[str, str]:
    """Why the winner got `alias`, as tags for the version and the promote run."""
    listed = ", ".join(f"v{c.version}={c.value:.4f}" for c in choice.ranked)
    return {"promoted_alias": alias, "promoted_metric": choice.metric, "promoted_value": repr(choice.winner.value),
            "promoted_candidates": str(len(choice.ranked)),
            "promoted_candidate_list": listed if len(listed) <= MAX_TAG_CHARS else listed[:MAX_TAG_CHARS] + "...",
            "promoted_filter": what, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")}


def decision(choice: Choice, alias: str, former: str | None, dry_run: bool) -> str:
    """The one line the promote entry point prints."""
    w = choice.winner
    why = f"{choice.metric} {w.value:.4f}, best of {len(choice.ranked)} candidates"
    if choice.unscored:
        why += f"; {len(choice.unscored)} without the metric skipped"
    if former == w.version:
        return f"{w.label} already holds @{alias} ({why}); nothing changed"
    moved = f"v{former} -> @{previous_alias(alias)}" if former else f"no former @{alias}"
    if dry_run:
        return f"dry run: would promote {w.label} to @{alias} ({why}); {moved}; nothing changed"
    return f"promoted {w.label} to @{alias} ({why}); {moved}"
