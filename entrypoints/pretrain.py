"""pretrain: train a SimCLR encoder (ResNet + projection head, NT-Xent) and register it with an alias.

Several GPUs or machines: launch with torchrun (`torchrun --nproc-per-node 4 entrypoints/pretrain.py ...`);
--batch-size stays the global batch (NT-Xent's negatives come from all of it), and rank 0 alone logs and
registers.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch

from simclr_s2 import distributed
from simclr_s2.bigearthnet.bands import resolve_bands
from simclr_s2.bigearthnet.index import index_archive_root
from simclr_s2.cli import parser, positive_float, positive_int, run_entry_point
from simclr_s2.errors import UserError
from simclr_s2.models import ARCHS, build_simclr
from simclr_s2.simclr import OPTIMIZERS, pretrain
from simclr_s2.tracking import steps
from simclr_s2.tracking.inputs import loader, read_index, test_names
from simclr_s2.tracking.registry import ENCODER_MODEL, log_and_register
from simclr_s2.tracking.runs import stage_run


@dataclass(frozen=True)
class PretrainingData:
    archive_root: Path
    names: list[str]
    digest: str
    excluded: int  # test patches of the excluded splits


def _pretraining_data(args: argparse.Namespace) -> PretrainingData:
    """The patches to pretrain on: the index's, less every excluded test set, at most max_patches."""
    index, index_path, digest = read_index(args.index)
    excluded = set() if args.exclude_split == "none" else test_names(args.exclude_split)
    names = sorted(set(index["name"]) - excluded)
    if args.max_patches:
        rng = np.random.default_rng(args.seed)
        names = sorted(rng.choice(names, size=min(args.max_patches, len(names)), replace=False).tolist())
    return PretrainingData(index_archive_root(index_path), names, digest, len(excluded))


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--index", default="auto", help="index file or runs:/ URI; auto = the demo archive's")
    p.add_argument("--exclude-split", default="auto",
                   help="splits (comma-separated folders or runs:/ URIs) whose test sets are left out; "
                        "auto = the demo splits when index is auto; none = nothing")
    p.add_argument("--name", default="ben", help="alias of the registered encoder, e.g. ben, ca-sgd, ca-adam")
    p.add_argument("--arch", choices=ARCHS, default="resnet18")
    p.add_argument("--bands", default="study")
    p.add_argument("--epochs", type=positive_int, default=2)
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--temperature", type=positive_float, default=0.1)
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam")
    p.add_argument("--lr", type=positive_float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-patches", type=int, default=0, help="0 = every eligible patch")
    args = p.parse_args(argv)
    bands = resolve_bands(args.bands)
    if args.exclude_split == "auto" and args.index != "auto":
        raise UserError("exclude_split: name the splits whose test sets pretraining must not see, or none")
    with distributed.session():
        if args.index == "auto":  # the demo: pin the data, so the run's key says exactly what it used
            args.index, args.exclude_split = distributed.main_only(
                lambda: (steps.demo_index_uri(), steps.demo_test_sets()))
        with stage_run("pretrain", vars(args), run_name=f"pretrain-{args.name}-{args.arch}-s{args.seed}",
                       tags={"arch": args.arch, "seed": args.seed, "pretrained": args.name},
                       resumable=True, system_metrics=True) as stage:
            data = distributed.main_only(lambda: _pretraining_data(args))
            if len(data.names) < args.batch_size:
                raise UserError(f"batch_size: {args.batch_size} is more than the {len(data.names)} patches "
                                f"to pretrain on")
            if distributed.is_main():
                mlflow.log_params({"resolved_index": args.index, "index_digest": data.digest,
                                   "patches": len(data.names), "excluded_test_patches": data.excluded})
            batches = loader(data.archive_root, data.names, None, args.bands, args.batch_size, shuffle=True,
                             seed=args.seed, digest=data.digest).sharded()
            torch.manual_seed(args.seed)  # the initial weights too (torch seeds each process anew)
            model = build_simclr(args.arch, len(bands))
            result = pretrain(model, batches, args.epochs, optimizer=args.optimizer, lr=args.lr,
                              temperature=args.temperature, seed=args.seed,
                              checkpoint_path=stage.checkpoint_dir / "pretrain.pt", log_fn=stage.epoch_logger(),
                              device=distributed.device(), amp=torch.cuda.is_available())
            if not distributed.is_main():
                return
            mlflow.log_artifact(str(stage.checkpoint_dir / "pretrain.pt"), "checkpoints")
            example = batches.source.read_batch(np.arange(2))[0].numpy()
            version = log_and_register(model, ENCODER_MODEL, example, aliases=(args.name,), tags={
                "stage": "pretrain", "arch": args.arch, "bands": args.bands, "data_digest": data.digest,
                "optimizer": args.optimizer, "epochs": args.epochs, "name": args.name, "seed": args.seed,
                "final_loss": f"{result.epoch_losses[-1]:.5f}"})
            print(f"encoder: models:/{ENCODER_MODEL}@{args.name} (version {version}), "
                  f"loss {result.epoch_losses[0]:.4f} -> {result.epoch_losses[-1]:.4f}")


if __name__ == "__main__":
    run_entry_point(main)
