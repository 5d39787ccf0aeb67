"""tune: Optuna search over the learning rate, weight decay, dropout, batch size and trainable part of a
finetune (or baseline) for one scheme and fraction, maximising a validation metric. Every trial is a
nested MLflow run; hopeless trials are pruned. Workers started anywhere with the same study_name and a
shared storage URL join one study of n_trials in total; rerunning an interrupted study resumes it.

SIMCLR_S2_TUNE_HEARTBEAT_S (default 60): seconds between a trial's heartbeats; a trial silent for twice
that is failed when a worker next starts a trial.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from optuna.pruners import BasePruner

from simclr_s2.cli import bool_flag, int_list, parser, positive_float, positive_int, run_entry_point
from simclr_s2.errors import UserError
from simclr_s2.tracking.runs import stage_run, work_home
from simclr_s2.tracking.tuning import run_final, tune
from simclr_s2.tune import (
    DEFAULT_HEARTBEAT_S,
    PRUNERS,
    TARGETS,
    SearchSpace,
    StudySettings,
    default_study_name,
    make_pruner,
    masked,
    storage_url,
)

HEARTBEAT_ENV = "SIMCLR_S2_TUNE_HEARTBEAT_S"


def name_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    p.add_argument("--target", choices=TARGETS, default="finetune")
    p.add_argument("--pretrained", default="auto", help="encoder for finetune (ignored for baseline); auto = demo")
    p.add_argument("--split", default="auto", help="create_splits output: folder or runs:/<id>/splits; auto = demo")
    p.add_argument("--scheme", default="basic")
    p.add_argument("--fraction", type=positive_int, default=10)
    p.add_argument("--metric", default="val_f1", help="val_f1 or val_auc (never a test metric)")
    p.add_argument("--n-trials", type=positive_int, default=20, help="trials in the study, over all workers")
    p.add_argument("--timeout-s", type=float, default=0, help="this worker's time budget; 0 = none")
    p.add_argument("--epochs", type=positive_int, default=20)
    p.add_argument("--study-name", default="auto", help="auto = <target>-<scheme>-<fraction>pct")
    p.add_argument("--storage", default="auto", help="auto = SQLite file in the work home, or a database URL")
    p.add_argument("--pruner", choices=PRUNERS, default="median")
    p.add_argument("--lr-min", type=positive_float, default=1e-5)
    p.add_argument("--lr-max", type=positive_float, default=1e-2)
    p.add_argument("--weight-decay-max", type=float, default=1e-3)
    p.add_argument("--dropout-min", type=float, default=0.0)
    p.add_argument("--dropout-max", type=float, default=0.6)
    p.add_argument("--batch-sizes", type=int_list, default="16,32,64")
    p.add_argument("--trainables", type=name_list, default="head2,head", help="ignored for baseline")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--final-run", type=bool_flag, default=True)
    return p


def heartbeat_s() -> int:
    text = os.environ.get(HEARTBEAT_ENV, str(DEFAULT_HEARTBEAT_S))
    if not text.isdigit() or int(text) < 1:
        raise UserError(f"{HEARTBEAT_ENV}: expected a whole number of seconds >= 1, got {text}")
    return int(text)


def main(argv: Sequence[str] | None, pruner: BasePruner | None = None) -> None:
    """`pruner` replaces the one --pruner names (tests use it to force pruning)."""
    args = build_parser().parse_args(argv)
    if args.timeout_s < 0:
        raise UserError(f"timeout_s: expected seconds >= 0 (0 = no limit), got {args.timeout_s}")
    space = SearchSpace(lr_min=args.lr_min, lr_max=args.lr_max, weight_decay_max=args.weight_decay_max,
                        dropout_min=args.dropout_min, dropout_max=args.dropout_max,
                        batch_sizes=tuple(args.batch_sizes), trainables=args.trainables)
    settings = StudySettings(target=args.target, pretrained=args.pretrained, split=args.split, scheme=args.scheme,
                             fraction=args.fraction, metric=args.metric, epochs=args.epochs, space=space)
    name = default_study_name(args.target, args.scheme, args.fraction) if args.study_name == "auto" \
        else args.study_name
    storage = storage_url(args.storage, work_home())
    params = {**vars(args), "batch_sizes": ",".join(map(str, args.batch_sizes)),
              "trainables": ",".join(args.trainables), "storage": masked(args.storage)}
    with stage_run("tune", params, run_name=f"tune-{name}-s{args.seed}",
                   tags={"scheme": args.scheme, "fraction": args.fraction, "seed": args.seed}) as run:
        result = tune(settings, study_name=name, storage=storage, n_trials=args.n_trials,
                      timeout_s=args.timeout_s or None, seed=args.seed,
                      pruner=pruner or make_pruner(args.pruner, args.epochs), heartbeat_s=heartbeat_s())
        best = result.best
        print(f"study {name}: best {args.metric} {best.value:.4f} (trial {best.number}) with {best.params}")
        if args.final_run:
            final = run_final(result, run.run_id)
            print(f"final {args.target} run {final.info.run_id} with the best settings")


if __name__ == "__main__":
    run_entry_point(main)
