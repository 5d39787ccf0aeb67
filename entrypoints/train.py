"""finetune / baseline: train the study's irrigation classifier on one scheme and data fraction, evaluate it
on the shared test set and register it.

  finetune  starts from a pretrained SimCLR encoder; the trainable part is a parameter (head2, head, all)
  baseline  the same network, randomly initialised, every layer trained

Several GPUs or machines: launch with torchrun (`torchrun --nproc-per-node 4 entrypoints/train.py finetune
...`); --batch-size stays the global batch, and rank 0 alone evaluates, logs and registers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import mlflow
import numpy as np

from simclr_s2 import distributed
from simclr_s2.cli import bool_flag, parser, positive_float, positive_int, run_entry_point
from simclr_s2.models import ARCHS, TRAINABLE
from simclr_s2.tracking.classifier import ClassifierSpec, train_classifier
from simclr_s2.tracking.evaluation import log_evaluation
from simclr_s2.tracking.registry import CLASSIFIER_MODEL, log_and_register
from simclr_s2.tracking.runs import stage_run


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--split", default="auto", help="create_splits output: folder or runs:/<id>/splits; auto = demo")
    p.add_argument("--scheme", default="basic")
    p.add_argument("--fraction", type=positive_int, default=100)
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--lr", type=positive_float, default=5e-5)
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--dropout", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--register", type=bool_flag, default=True)


def build_parser() -> argparse.ArgumentParser:
    p = parser(__doc__)
    sub = p.add_subparsers(dest="stage", required=True)
    finetune = sub.add_parser("finetune")
    _add_common(finetune)
    finetune.add_argument("--pretrained", default="auto",
                          help="models:/simclr-s2-encoder@ben, runs:/<id>/model or a state-dict file; auto = demo")
    finetune.add_argument("--trainable", choices=TRAINABLE, default="head2")
    finetune.add_argument("--bands", default="auto", help="auto = the encoder's own band set")
    finetune.add_argument("--patience", type=positive_int, default=25)
    finetune.add_argument("--feature-cache", choices=("auto", "true", "false"), default="auto")
    baseline = sub.add_parser("baseline")
    _add_common(baseline)
    baseline.add_argument("--arch", choices=ARCHS, default="resnet18")
    baseline.add_argument("--bands", default="study")
    baseline.add_argument("--patience", type=positive_int, default=15)
    return p


def main(argv: Sequence[str] | None) -> None:
    args = build_parser().parse_args(argv)
    params = {k: v for k, v in vars(args).items() if k not in ("stage", "register")}
    spec = ClassifierSpec(stage=args.stage, **params)
    who = spec.pretrained.rsplit("@", 1)[-1] if spec.stage == "finetune" else spec.arch
    run_name = f"{spec.stage}-{who}-{spec.scheme}-{spec.fraction}pct-s{spec.seed}"
    with distributed.session(), stage_run(
            spec.stage, {**params, "register": args.register}, run_name=run_name, resumable=True,
            system_metrics=True, tags={"scheme": spec.scheme, "fraction": spec.fraction, "seed": spec.seed}) as run:
        trained = train_classifier(spec, checkpoint_path=run.checkpoint_dir / "train.pt", log_fn=run.log_metrics)
        if not distributed.is_main():
            return
        run_name = run_name.replace(f"-{who}-", f"-{trained.pretrained if spec.stage == 'finetune' else who}-", 1)
        mlflow.set_tag("mlflow.runName", run_name)
        split = trained.split
        test = log_evaluation(trained.model, trained.batches(split.test, False), split.test.names, "test",
                              trained.device)
        summary = {**{k: f"{v:.4f}" for k, v in trained.result.best_val.items()},
                   **{k: f"{test[k]:.4f}" for k in ("test_accuracy", "test_f1", "test_auc", "test_precision",
                                                    "test_recall")}}
        print(f"{run_name}: best epoch {trained.result.best_epoch + 1}, val F1 {summary['val_f1']}, "
              f"test F1 {summary['test_f1']}, test accuracy {summary['test_accuracy']}")
        if args.register:
            example = trained.batches(split.val, False).source.read_batch(np.arange(2))[0].numpy()
            log_and_register(trained.model, CLASSIFIER_MODEL, example, tags={
                "stage": spec.stage, "scheme": spec.scheme, "fraction": spec.fraction,
                "pretrained": trained.pretrained, "arch": trained.arch, "seed": spec.seed,
                "trainable": trained.policy, "bands": trained.bands, "run_id": run.run_id, **summary})


if __name__ == "__main__":
    run_entry_point(main)
