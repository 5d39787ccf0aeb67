"""Fine-tuning speed on synthetic in-memory patches: what the feature cache saves under `head2`, and what
`fit` with MLflow tracking costs under `all` against a bare PyTorch loop of the same model.

(1) `head2`: the plain path runs the frozen encoder forward on every patch every epoch (`fit` on the
    whole classifier); the cached path computes the frozen prefix's features once
    (`cached_training_set`, train and validation) and then trains the suffix on them. Per-epoch times
    come from `fit`'s end-of-epoch callback; the E-epoch totals include the one-off feature time.
(2) `all`: the same batches through a bare loop (Adam, BCEWithLogits, channels_last, no metrics, no
    tracking), the bare loop plus the plain validation forward `fit` needs every epoch for early
    stopping, `fit` untracked, and `fit` inside a real MLflow run (temporary sqlite store) opened by the
    platform's tracker exactly as the finetune entry point opens it: a checkpoint every epoch, uploaded as
    an artifact with the epoch's metrics logged in one batch, both in the background, system metrics on;
    and the same run with at most one checkpoint per --checkpoint-interval seconds (the last epoch's
    always written), as SIMCLR_S2_CHECKPOINT_INTERVAL_S sets it. images/s counts training images over the
    whole wall time (validation and tracking included; the tracked run's time includes waiting for its
    last upload). The variants run interleaved, several times each: on a shared machine the load drifts by
    more than the overhead measured, so the best run is the estimate of each one's own cost and the median
    shows the spread.

    python benchmarks/bench_finetune.py            # resnet18, 256 + 64 patches, head2 10 epochs, all 4 x 3
    python benchmarks/bench_finetune.py --quick    # 64 + 16 patches, head2 3 epochs, all 1 epoch x 2

Checkpoint formats before and after a change: run (2) alone on the two trees in turn, each ratio against
the bare loop measured in the same process (docs/performance.md, "Checkpoints"):

    PYTHONPATH=/tmp/before python benchmarks/bench_finetune.py --skip-head2 --variants bare_val,tracked
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path

import torch
from figures import Figure, Rate, load_average, report
from torch import nn

from simclr_s2.learning.config import ARCHS
from simclr_s2.learning.datasets import BatchLoader, MemoryDataset
from simclr_s2.learning.feature_cache import cached_training_set
from simclr_s2.learning.models import IrrigationClassifier, apply_trainable
from simclr_s2.learning.runtime import Recorder
from simclr_s2.learning.train import FitConfig, fit
from simclr_s2.settings.context import Context
from simclr_s2.tracking.tracker import StageRun, Step, Tracker

BANDS, SIZE = 10, 120


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    except OSError:
        return "?"


def _data(n: int, seed: int) -> MemoryDataset:
    """Normalised-looking patches (zero mean, unit variance per band) with balanced, shuffled labels."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, BANDS, SIZE, SIZE, generator=g)
    y = (torch.arange(n) % 2).float()[torch.randperm(n, generator=g)]
    return MemoryDataset(x, y)


def _model(arch: str, policy: str) -> IrrigationClassifier:
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch(arch, BANDS)
    apply_trainable(model, policy)
    return model.to(memory_format=torch.channels_last)


def _warm_up(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    """One training step on a throwaway optimiser and one evaluation forward, then the weights as they
    were: every timed path starts from the same weights with oneDNN's kernels (training and inference
    ones) and the allocator already warm."""
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    x = x.contiguous(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-5, fused=True)
    nn.functional.binary_cross_entropy_with_logits(model(x), y).backward()
    optimizer.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        model(x)
    model.load_state_dict(saved)


class EpochClock(Recorder):
    """A Progress that records when each epoch ended."""

    def __init__(self) -> None:
        super().__init__(on_epoch=self._tick)
        self.start, self.cpu_start = time.perf_counter(), time.process_time()
        self.ends: list[float] = []
        self.cpu_ends: list[float] = []

    def _tick(self, epoch: int) -> None:
        self.ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())

    def epoch_seconds(self, cpu: bool = False) -> list[float]:
        marks = [self.cpu_start, *self.cpu_ends] if cpu else [self.start, *self.ends]
        return [b - a for a, b in pairwise(marks)]


def head2_cache(arch: str, train: MemoryDataset, val: MemoryDataset, batch: int, epochs: int) -> None:
    cfg = FitConfig(epochs=epochs, patience=epochs)
    warm_x, warm_y = train.read_batch(torch.arange(batch).numpy())

    model = _model(arch, "head2")
    _warm_up(model, warm_x, warm_y)
    plain = EpochClock()
    fit(model, BatchLoader(train, batch, shuffle=True), BatchLoader(val, batch), cfg, progress=plain)
    load = load_average()

    model = _model(arch, "head2")
    _warm_up(model, warm_x, warm_y)
    start = time.perf_counter()
    cached = cached_training_set(
        model, "head2", BatchLoader(train, batch), BatchLoader(val, batch), batch, seed=0
    )
    assert cached is not None
    features_s = time.perf_counter() - start
    suffix, train_features, val_features = cached
    clock = EpochClock()
    fit(suffix, train_features, val_features, cfg, progress=clock)

    plain_epochs, cached_epochs = plain.epoch_seconds(), clock.epoch_seconds()
    plain_total, cached_total = sum(plain_epochs), features_s + sum(cached_epochs)
    plain_epoch, cached_epoch = statistics.median(plain_epochs), statistics.median(cached_epochs)
    print(
        f"\n(1) head2, {arch}: {len(train)} train + {len(val)} val patches, batch {batch}, {epochs} epochs "
        f"(s/epoch: median and best of {epochs}; features: train and val, once)"
    )
    print(
        f"{'path':<8} {'features s':>10} {'s/epoch':>9} {'best':>8} {'train img/s':>11} "
        f"{f'{epochs} epochs s':>12}"
    )
    print(
        f"{'plain':<8} {'-':>10} {plain_epoch:>9.3f} {min(plain_epochs):>8.3f} "
        f"{len(train) / plain_epoch:>11.1f} {plain_total:>12.2f}"
    )
    print(
        f"{'cached':<8} {features_s:>10.2f} {cached_epoch:>9.4f} {min(cached_epochs):>8.4f} "
        f"{len(train) / cached_epoch:>11.0f} {cached_total:>12.2f}"
    )
    print(
        f"speed-up: {plain_epoch / cached_epoch:.0f}x per epoch (median; "
        f"best {min(plain_epochs) / min(cached_epochs):.0f}x), "
        f"{plain_total / cached_total:.1f}x over {epochs} epochs including the feature pass; the cache pays "
        f"for itself after {features_s / max(plain_epoch - cached_epoch, 1e-9):.1f} epochs"
    )
    report([Figure(f"fine-tune head2, {arch}: training epochs on cached features (img/s, median epoch)",
                   Rate(len(train) / cached_epoch, None, load_average()),
                   "the same epochs through the frozen encoder", Rate(len(train) / plain_epoch, None, load))])


def bare_loop(model: nn.Module, train: BatchLoader, val: BatchLoader | None, epochs: int) -> None:
    """`epochs` of plain training steps on `fit`'s batches (and, with `val`, a forward over it after each)."""
    torch.manual_seed(0)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=5e-5, fused=True)
    loss_fn = nn.BCEWithLogitsLoss()
    for epoch in range(epochs):
        train.set_epoch(epoch)
        model.train()
        for x, y in train:
            loss = loss_fn(model(x.contiguous(memory_format=torch.channels_last)), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        loss.item()
        if val is not None:
            model.eval()
            with torch.no_grad():
                for x, _ in val:
                    model(x.contiguous(memory_format=torch.channels_last))


BARE, BARE_VAL, UNTRACKED, TRACKED, TRACKED_HELD = (
    "bare loop",
    "bare loop + val forward",
    "fit, untracked",
    "fit + MLflow + checkpoints",
    "same, checkpoint interval",
)
VARIANTS = {"bare": BARE, "bare_val": BARE_VAL, "untracked": UNTRACKED, "tracked": TRACKED, "held": TRACKED_HELD}


def all_overhead(
    arch: str, train: MemoryDataset, val: MemoryDataset, batch: int, epochs: int, repeats: int, tmp: Path,
    interval_s: float, variants: tuple[str, ...]
) -> None:
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    ctx = Context.from_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}", "SIMCLR_S2_HOME": str(tmp)})
    cfg = FitConfig(epochs=epochs, patience=epochs)
    warm_x, warm_y = train.read_batch(torch.arange(batch).numpy())

    @contextmanager
    def tracked(r: int, name: str) -> Iterator[StageRun]:
        """The finetune entry point's run: system metrics on, checkpoints uploaded and metrics logged in
        the background (at most one checkpoint per `interval_s` for TRACKED_HELD); leaving the block
        waits for every upload (the run ends only then)."""
        run_ctx = replace(ctx, checkpoint_interval_s=interval_s if name == TRACKED_HELD else 0.0)
        step = Step("bench", {"round": str(r), "variant": name})
        with Tracker(run_ctx).open(step, run_name=f"bench-{r}", system_metrics=True) as run:
            yield run

    seconds: dict[str, list[float]] = {name: [] for name in variants}
    loads: dict[str, float] = {}
    for r in range(repeats):  # interleaved, each round starting one variant later, against drifting load
        for i in range(len(variants)):
            name = variants[(i + r) % len(variants)]
            model = _model(arch, "all")
            _warm_up(model, warm_x, warm_y)
            train_batches, val_batches = BatchLoader(train, batch, shuffle=True), BatchLoader(val, batch)
            start = time.perf_counter()
            if name in (BARE, BARE_VAL):
                bare_loop(model, train_batches, val_batches if name == BARE_VAL else None, epochs)
            elif name == UNTRACKED:
                fit(model, train_batches, val_batches, cfg)
            else:
                with tracked(r, name) as run:
                    checkpoint = run.checkpoint_dir / "train.pt"
                    fit(model, train_batches, val_batches, cfg, checkpoint_path=checkpoint, progress=run.progress())
                    if name == TRACKED:  # with an interval it is written when the run ends (then removed)
                        checkpoint_mib = checkpoint.stat().st_size / 2**20
            seconds[name].append(time.perf_counter() - start)
            loads[name] = load_average()

    best = {name: min(s) for name, s in seconds.items()}
    median = {name: statistics.median(s) for name, s in seconds.items()}
    images = len(train) * epochs
    print(
        f"\n(2) all, {arch}: {len(train)} train + {len(val)} val patches, batch {batch}, "
        f"epochs per run: {epochs} ({median[BARE_VAL] / epochs:.1f} s each, bare loop + val, median), "
        f"interleaved runs per variant: {repeats}"
        + (f" (checkpoint {checkpoint_mib:.0f} MiB per epoch)" if TRACKED in variants else "")
    )
    print(
        f"{'variant':<27} {'best s':>7} {'median s':>8} {'img/s best':>10} {'img/s median':>12} "
        f"{'x bare+val':>10} {'(median)':>8} {'load':>5}"
    )
    for name in variants:
        print(
            f"{name:<27} {best[name]:>7.2f} {median[name]:>8.2f} {images / best[name]:>10.1f} "
            f"{images / median[name]:>12.1f} {best[BARE_VAL] / best[name]:>10.3f} "
            f"{median[BARE_VAL] / median[name]:>8.3f} {loads[name]:>5.1f}"
        )
    rates = {v: Rate(images / best[v], None, loads[v]) for v in variants}
    report([Figure(f"fine-tune all, {arch}, {epochs} epochs per run, tracked, {when} (img/s, best of "
                   f"{repeats}; overhead = 1 / ratio - 1)", rates[v], "bare loop + val forward", rates[BARE_VAL])
            for v, when in ((TRACKED, "checkpoint every epoch"),
                            (TRACKED_HELD, f"SIMCLR_S2_CHECKPOINT_INTERVAL_S={interval_s:g}")) if v in variants])


def checkpoint_cost(arch: str, repeats: int, tmp: Path) -> None:
    """(3) One epoch's checkpoint, the earlier way against this one, interleaved: the CPU seconds the
    training thread spends (a deep copy of the best weights and a fresh copy of the state, against copies
    into reused buffers) and those the writer spends (torch.save against safetensors, both fsynced), on a
    model with its Adam state. CPU time, not wall time: on a shared machine it is the steadier figure, and
    on 2 cores the writer's CPU is taken from training too."""
    # imported here: (2) also runs on trees from before these modules, to compare with them
    from simclr_s2.learning.checkpoints import Snapshots
    from simclr_s2.learning.runtime import Checkpoint, save_atomically

    @dataclass(frozen=True)
    class TorchSave:
        """The earlier checkpoint: a torch.save pickle of a copy of the state."""

        tree: dict

        def write(self, path: Path) -> None:
            torch.save(self.tree, path)

    model = _model(arch, "all")
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-5, fused=True)
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    snapshots = Snapshots()

    def earlier() -> Checkpoint:
        best = copy.deepcopy(model.state_dict())
        return TorchSave(copy.deepcopy({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                        "best": best}))

    def now() -> Checkpoint:
        weights = snapshots.take(model.state_dict())
        return snapshots.take({"model": weights, "optimizer": optimizer.state_dict(), "best": weights})

    times: dict[str, list[tuple[float, float]]] = {"earlier": [], "now": []}
    for r in range(repeats):
        for name, take in (("earlier", earlier), ("now", now))[:: 1 if r % 2 == 0 else -1]:
            start = time.thread_time()
            checkpoint = take()
            taken = time.thread_time()
            save_atomically(checkpoint, tmp / f"{name}.ckpt")
            times[name].append((taken - start, time.thread_time() - taken))
            del checkpoint
    sizes = {name: (tmp / f"{name}.ckpt").stat().st_size / 2**20 for name in times}
    print(f"\n(3) one checkpoint, {arch} with Adam state, best of {repeats} interleaved "
          f"(load {load_average():.1f})")
    print(f"{'way':<8} {'training thread CPU s':>21} {'writer CPU s':>12} {'MiB':>6}")
    for name, pairs in times.items():
        print(f"{name:<8} {min(t for t, _ in pairs):>21.3f} {min(w for _, w in pairs):>12.3f} {sizes[name]:>6.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", default="resnet18", choices=ARCHS)
    parser.add_argument(
        "--patches", type=int, default=256, help="training patches (validation: a quarter as many)"
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10, help="head2 epochs, plain and cached")
    parser.add_argument(
        "--all-epochs", type=int, default=4, help="`all` epochs per run, bare loop and fit alike"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved `all` runs per variant")
    parser.add_argument(
        "--quick", action="store_true", help="64 patches, head2 3 epochs, `all` 1 epoch x 2 runs"
    )
    parser.add_argument("--checkpoint-interval", type=float, default=60.0,
                        help="seconds between checkpoints in the variant that holds them"
                             " (SIMCLR_S2_CHECKPOINT_INTERVAL_S)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    parser.add_argument("--skip-head2", action="store_true", help="run (2) alone")
    parser.add_argument("--checkpoint-cost", action="store_true", help="run (3) alone")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help=f"the variants of (2), comma-separated, among {','.join(VARIANTS)} (bare_val always runs)")
    args = parser.parse_args()
    if args.quick:
        args.patches, args.epochs, args.all_epochs, args.repeats = 64, 3, 1, 2
    if args.threads:
        torch.set_num_threads(args.threads)

    train, val = _data(args.patches, seed=0), _data(max(args.patches // 4, 1), seed=1)
    print(
        f"machine: {_cpu_model()}, {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), torch "
        f"{torch.__version__} with {torch.get_num_threads()} threads; load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())} at the start"
    )
    print(
        f"settings: arch={args.arch} train={len(train)} val={len(val)} input={BANDS}x{SIZE}x{SIZE} float32 "
        f"batch={args.batch_size} head2 epochs={args.epochs} all epochs={args.all_epochs} x {args.repeats} "
        "runs, lr=5e-5, channels_last=True, one warm-up step per model"
    )
    if args.checkpoint_cost:
        with tempfile.TemporaryDirectory(prefix="bench_finetune_") as tmp:
            checkpoint_cost(args.arch, args.repeats, Path(tmp))
        return
    if not args.skip_head2:
        head2_cache(args.arch, train, val, args.batch_size, args.epochs)
    names = [v for v in args.variants.split(",") if v]
    if unknown := sorted(set(names) - set(VARIANTS)):
        parser.error(f"--variants: {','.join(unknown)} not among {','.join(VARIANTS)}")
    chosen = {VARIANTS[v] for v in names} | {BARE_VAL}
    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as tmp:
        all_overhead(args.arch, train, val, args.batch_size, args.all_epochs, args.repeats, Path(tmp),
                     args.checkpoint_interval, tuple(v for v in VARIANTS.values() if v in chosen))
    print(f"\nload average {' '.join(f'{v:.2f}' for v in os.getloadavg())} at the end")


if __name__ == "__main__":
    main()
