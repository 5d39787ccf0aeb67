"""Choose the demo's pretraining recipe by validation: each recipe (pretrain parameters) x seed pretrains a
demo encoder and fine-tunes it as the demo does (head2 on cached features, STUDY.md's protocol), then prints
its validation AUC and F1 (the best epoch's, by validation AUC), its test F1 and its pretraining CPU-seconds,
and each recipe's means over the seeds. `--head-lr` fine-tunes each encoder at several learning rates (the
head's rate is then part of the recipe); `--recalibrate both` fine-tunes each with and without its BatchNorm
statistics recomputed on the training patches (the stage's `bn_recalibrate`; by default with, as the stage's
`auto` does for a frozen encoder). The choice reads only the validation columns; test F1 is shown so the
chosen recipe's can be reported, never to choose.

It reads a finished demo's store (`make demo` with SIMCLR_S2_HOME and SIMCLR_S2_DATA set, or the defaults):
the index's packed store and the `basic` splits. Each run is a process of `--threads` threads (default one: 2
threads on 2 busy cores wait on each other), so with one its encoder is not bit for bit the stage's, which
trains on the machine's cores (`--threads 2 --jobs 1` on 2 cores reproduces `make demo`'s figures).

    python benchmarks/demo_recipes.py --home ~/.simclr_s2 --data data \\
        --recipe '{}' --recipe '{"crop_min_scale": 0.3}' --seeds 0 1 2 --jobs 2
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np


def one(home: Path, data: Path, recipe: dict, seed: int, head_lrs: list[float] | None, threads: int,
        recalibrations: tuple[bool, ...]) -> list[dict]:
    """Pretrain with `recipe` and `seed`, fine-tune as the demo does (at each of `head_lrs`, else STUDY.md's
    rate; with the encoder's BatchNorm statistics recomputed on the training patches or not, each of
    `recalibrations`); the figures of that encoder, one row a fine-tune."""
    import torch

    torch.set_num_threads(threads)
    from simclr_s2.bigearthnet.bands import Bands
    from simclr_s2.bigearthnet.index import load_index
    from simclr_s2.bigearthnet.packed import PackedStore
    from simclr_s2.learning.batchnorm import recalibrate
    from simclr_s2.learning.datasets import BatchLoader, PackedDataset
    from simclr_s2.learning.feature_cache import cached_training_set
    from simclr_s2.learning.metrics import binary_metrics
    from simclr_s2.learning.models import IrrigationClassifier, apply_trainable, build_simclr
    from simclr_s2.learning.simclr import pretrain
    from simclr_s2.learning.train import FitConfig, fit, predict
    from simclr_s2.settings import specs
    from simclr_s2.settings.spec import build
    from simclr_s2.stages.leakage import outside_evaluation
    from simclr_s2.study.splits import load_sets
    from simclr_s2.tracking.artifacts import Fetcher

    spec = build(specs.Pretrain, {**recipe, "seed": seed})
    bands = Bands.parse(spec.bands)
    index = load_index(data / specs.DEMO_INDEX / "index.parquet")
    store = max((PackedStore.open(p.parent) for p in (home / "packed").glob("*/meta.json")), key=len)
    splits = data / "demo" / "splits"
    names = outside_evaluation(index, Fetcher(home / "downloads", ""), str(splits))

    def batches(chosen: list[str], labels: np.ndarray | None, shuffle: bool, batch_size: int, seed: int) -> BatchLoader:
        return BatchLoader(PackedDataset(store, labels, store.rows(chosen)), batch_size, shuffle, seed)

    cpu = time.process_time()
    torch.manual_seed(seed)
    model = build_simclr(spec.arch, len(bands))
    losses = pretrain(model, batches(names, None, True, spec.batch_size, seed), spec.epochs, optimizer=spec.optimizer,
                      lr=spec.lr, temperature=spec.temperature, seed=seed, augment=spec.augment()).epoch_losses
    cpu = time.process_time() - cpu
    sets = load_sets(splits, "basic")
    train, val, test = (sets.get(100, name) for name in ("train", "val", "test"))
    torch.manual_seed(0)  # the demo fine-tune's seed
    untrained = IrrigationClassifier.from_simclr(model, dropout=0.5)
    rows = []
    for recalibrated in recalibrations:
        classifier = copy.deepcopy(untrained)
        apply_trainable(classifier, "head2")
        if recalibrated:  # as bn_recalibrate=auto does for a frozen encoder
            recalibrate(classifier.encoder, batches(train.names, train.labels.astype(np.float32), False, 32, 0))
        head, train_x, val_x = cached_training_set(
            classifier, "head2", batches(train.names, train.labels.astype(np.float32), False, 32, 0),
            batches(val.names, val.labels.astype(np.float32), False, 32, 0), 32, 0)
        start = {k: v.clone() for k, v in head.state_dict().items()}
        for lr in head_lrs or [FitConfig.lr]:  # each rate from the same untrained head and seed
            head.load_state_dict(start)
            torch.manual_seed(0)
            best = fit(head, train_x, val_x, FitConfig(lr=lr)).best_val
            y, p, _ = predict(classifier, batches(test.names, test.labels.astype(np.float32), False, 32, 0))
            label = {**recipe, **({"head_lr": lr} if head_lrs else {}),
                     **({"recalibrated": recalibrated} if len(recalibrations) > 1 else {})}
            rows.append({"recipe": json.dumps(label), "seed": seed, "pretrain_cpu_s": cpu, "losses": losses,
                         "val_auc": best["val_auc"], "val_f1": best["val_f1"],
                         "test_f1": binary_metrics(y, p)["f1"], "load": os.getloadavg()[0]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--home", type=Path, default=Path(os.environ.get("SIMCLR_S2_HOME", "~/.simclr_s2")).expanduser())
    p.add_argument("--data", type=Path, default=Path(os.environ.get("SIMCLR_S2_DATA", "data")))
    p.add_argument("--recipe", action="append", default=None, help="pretrain parameters as JSON (repeat)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--jobs", type=int, default=2, help="runs at once")
    p.add_argument("--threads", type=int, default=1, help="torch threads a run")
    p.add_argument("--head-lr", type=float, action="append", default=None,
                   help="the head's learning rate (repeat; default STUDY.md's)")
    p.add_argument("--recalibrate", choices=("true", "false", "both"), default="true",
                   help="recompute the frozen encoder's BatchNorm statistics first (true: as the stage's auto does), "
                        "not, or both ways")
    args = p.parse_args()
    recalibrations = {"true": (True,), "false": (False,), "both": (False, True)}[args.recalibrate]
    recipes = [json.loads(r) for r in args.recipe or ["{}"]]
    with ProcessPoolExecutor(args.jobs) as pool:
        futures = [pool.submit(one, args.home, args.data, r, s, args.head_lr, args.threads, recalibrations)
                   for r in recipes for s in args.seeds]
        rows = [row for f in futures for row in f.result()]
    print(f"{'recipe':40} seed  pretrain CPU-s  val AUC  val F1  test F1  load")
    for r in rows:
        print(f"{r['recipe']:40} {r['seed']:4} {r['pretrain_cpu_s']:15.1f} {r['val_auc']:8.4f} {r['val_f1']:7.4f} "
              f"{r['test_f1']:8.4f}  {r['load']:.1f}")
    means = {}
    for r in rows:
        means.setdefault(r["recipe"], []).append((r["val_auc"], r["val_f1"], r["test_f1"]))
    print("means over seeds (choose by val AUC, then val F1):")
    for recipe, values in sorted(means.items(), key=lambda kv: tuple(-np.mean(kv[1], axis=0)[:2])):
        auc, f1, test = np.mean(values, axis=0)
        print(f"  {recipe:40} val AUC {auc:.4f}  val F1 {f1:.4f}  (test F1 {test:.4f}, not for choosing)")


if __name__ == "__main__":
    main()
