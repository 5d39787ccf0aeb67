"""Choosing which classifier an alias (`champion`) points to: the best candidate by a validation metric of
its kept epoch.

The test set never decides: it is the one honest estimate left once a model is chosen (the original's
later stage trained on it), so a test metric is refused. A tie at the top (common on small validation sets,
where F1 is often 1.0) is broken by a stated rule, never by the order of a search: the lower validation
loss of the kept epoch (a finer measure on the same patches), then the earlier registered version (the
first to reach that score).

Candidates are ranked within one condition of measurement: one data fraction (its validation set holds
40 patches at 1 % and 4,077 at 100 %, so their values are not comparable) and one test set (test-set
digest), unless the caller explicitly allows crossing them. A non-finite value (NaN, inf) is never ranked,
nor is a constant or near-constant predictor (metrics.near_constant, judged by its run on the balanced
validation set at its operating threshold and tagged VAL_NEAR_CONSTANT: balanced F1 rewards predicting one
class everywhere); the flag only removes a candidate, it never orders the others. The test set's own flag
(`near_constant`) is compare's, for display: judged on test, it must not pick a model either.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from simclr_s2.errors import UserError
from simclr_s2.learning.config import EPOCH_METRICS

VALIDATION_METRICS = tuple(f"val_{m}" for m in EPOCH_METRICS)
LOWER_IS_BETTER = frozenset({"val_loss"})
MAX_TAG_CHARS = 4000  # under MLflow's 5000/8000-character limits for tag values
VAL_NEAR_CONSTANT = "val_near_constant"  # a version's tag: near-constant on validation; never ranked


def run_metric(metric: str) -> str:
    """The run metric behind `metric`: the trainer logs the kept epoch's validation metrics as best_val_*
    (a run's plain val_* is its last epoch, which early stopping did not keep)."""
    if metric.startswith("test_"):
        raise UserError(f"metric: {metric} is a test-set metric and the test set never picks a model; "
                        f"use one of {', '.join(VALIDATION_METRICS)}")
    if metric not in VALIDATION_METRICS:
        raise UserError(f"metric: expected one of {', '.join(VALIDATION_METRICS)}, got {metric!r}")
    return f"best_{metric}"


def alias_problem(alias: str) -> str | None:
    """What MLflow would refuse in an alias (None: nothing), told before anything is searched, trained or
    registered: a spec's check for promote's alias and the encoders' names."""
    if not re.fullmatch(r"[\w-]{1,255}", alias) or alias.lower() == "latest" or re.fullmatch(r"[vV]\d+", alias):
        return "expected letters, digits, '_' or '-', not 'latest' nor v<number>"
    return None


PREVIOUS = "previous"


def previous_alias(alias: str) -> str:
    """Where the version `alias` held before goes: `previous` for the champion, `<alias>-previous` else."""
    return PREVIOUS if alias == "champion" else f"{alias}-{PREVIOUS}"


def former_alias_problem(alias: str) -> str | None:
    """Why promote must not move `alias` (None: nothing): it is one previous_alias gives, where promote keeps a
    former holder, so the next promote of the alias it serves would write over it."""
    if alias == PREVIOUS or alias.endswith(f"-{PREVIOUS}"):
        return (f"{alias} is where promote keeps a former holder (@{PREVIOUS} of champion, @<alias>-{PREVIOUS} "
                "of another alias); choose another alias")
    return None


@dataclass(frozen=True)
class Candidate:
    version: str
    label: str  # for people: "v7 (ben 10pct s0)"
    value: float  # NaN when its run lacks the metric
    fraction: int  # the data fraction (%) it was trained and validated on
    test_digest: str  # sha256 of the test set its run scored (the split's test.csv)
    loss: float = math.nan  # the kept epoch's validation loss: the tie-break
    near_constant: bool = False  # predicts (nearly) one class on validation: never ranked


TIE_BREAK = "val_loss, then the earlier version"


@dataclass(frozen=True)
class Choice:
    metric: str
    ranked: tuple[Candidate, ...]  # scored candidates, best first (ties broken: see TIE_BREAK)
    unscored: tuple[Candidate, ...]
    tied: int = 1  # how many shared the best value before the tie-break
    flagged: tuple[Candidate, ...] = ()  # near-constant predictors, left out

    @property
    def winner(self) -> Candidate:
        return self.ranked[0]


def choose(candidates: Sequence[Candidate], metric: str, what: str, *, cross_fractions: bool = False,
           cross_test_sets: bool = False) -> Choice:
    """The best of `candidates` by `metric`; `what` names the filters in messages. An empty set, candidates
    of several fractions or test sets (unless crossing them is allowed), or a set where no run has a finite
    value of the metric is a UserError, and nothing is chosen. Ties are broken by TIE_BREAK."""
    if not candidates:
        raise UserError(f"promote: no registered classifier matches {what}; run finetune or baseline first")
    if not cross_fractions:
        _one_group(what, "fraction", "cross_fractions", Counter(c.fraction for c in candidates), "{} %")
    if not cross_test_sets:
        _one_group(what, "test set", "cross_test_sets", Counter(c.test_digest[:12] for c in candidates), "{}")
    flagged = tuple(c for c in candidates if c.near_constant)
    scored = [c for c in candidates if math.isfinite(c.value) and not c.near_constant]
    unscored = tuple(c for c in candidates if not math.isfinite(c.value) and not c.near_constant)
    if not scored:
        raise UserError(f"metric: none of the {len(candidates)} candidates ({what}) has a finite {metric} on its run"
                        + (f" and varied predictions ({len(flagged)} near-constant)" if flagged else ""))
    best_first = -1.0 if metric not in LOWER_IS_BETTER else 1.0
    by_value = sorted(scored, key=lambda c: best_first * c.value)
    tied = [c for c in by_value if math.isclose(c.value, by_value[0].value, rel_tol=1e-9, abs_tol=1e-12)]
    tied.sort(key=lambda c: (c.loss if math.isfinite(c.loss) else math.inf, int(c.version)))
    return Choice(metric, (*tied, *by_value[len(tied):]), unscored, tied=len(tied), flagged=flagged)


def _one_group(what: str, kind: str, flag: str, counts: Counter, shown: str) -> None:
    """Refuse candidates that span several fractions or test sets (`counts`: candidates per value),
    naming each value (formatted by `shown`) with its count: their validation values are not alike."""
    if len(counts) > 1:
        found = ", ".join(f"{shown.format(k)}: {n}" for k, n in sorted(counts.items()))
        raise UserError(f"promote: the candidates ({what}) span {len(counts)} values of {kind} ({found}); "
                        f"rank one {kind} at a time, or set {flag}=true to rank across them; nothing changed")


def reason_tags(choice: Choice, alias: str, what: str) -> dict[str, str]:
    """Why the winner got `alias`, as tags for the version and the promote run."""
    listed = ", ".join(f"v{c.version}={c.value:.4f}" for c in choice.ranked)
    return {"promoted_alias": alias, "promoted_metric": choice.metric, "promoted_value": repr(choice.winner.value),
            "promoted_candidates": str(len(choice.ranked)), "promoted_tied": str(choice.tied),
            "promoted_candidate_list": listed if len(listed) <= MAX_TAG_CHARS else listed[:MAX_TAG_CHARS] + "...",
            "promoted_filter": what, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")}


def decision(choice: Choice, alias: str, former: str | None, dry_run: bool) -> str:
    """The one line the promote entry point prints."""
    w = choice.winner
    why = f"{choice.metric} {w.value:.4f}, best of {len(choice.ranked)} candidates"
    if choice.tied > 1:
        why += f"; a tie of {choice.tied} broken by {TIE_BREAK}"
    if choice.unscored:
        why += f"; {len(choice.unscored)} without the metric skipped"
    if choice.flagged:
        why += f"; {len(choice.flagged)} near-constant predictors left out"
    if former == w.version:
        return f"{w.label} already holds @{alias} ({why}); nothing changed"
    moved = f"v{former} -> @{previous_alias(alias)}" if former else f"no former @{alias}"
    if dry_run:
        return f"dry run: would promote {w.label} to @{alias} ({why}); {moved}; nothing changed"
    return f"promoted {w.label} to @{alias} ({why}); {moved}"
