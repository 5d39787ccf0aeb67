"""Data-parallel training: two CPU processes (gloo, started by torchrun) give the one-process losses and
metrics for the same global batches: the supervised loop (plain, resumed from rank 0's checkpoint, and over
cached features) and SimCLR pretraining. Run as a script, this file is that torchrun job's worker.

BatchNorm: gloo has no SyncBatchNorm, so a BatchNorm that trains would see only its rank's half of each
batch. The supervised cases therefore use the `head` and `head2` policies (the encoder's BatchNorm frozen
in evaluation mode) and the pretraining model has none; dropout is 0 (each rank draws its own masks).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from simclr_s2.app.cli import leave
from simclr_s2.errors import UserError
from simclr_s2.learning import distributed
from simclr_s2.learning.config import AugmentConfig
from simclr_s2.learning.datasets import BatchLoader, MemoryDataset
from simclr_s2.learning.feature_cache import cached_training_set
from simclr_s2.learning.models import IrrigationClassifier, apply_trainable
from simclr_s2.learning.runtime import Recorder
from simclr_s2.learning.simclr import pretrain
from simclr_s2.learning.train import FitConfig, fit

REPO = Path(__file__).resolve().parents[2]
NO_VIEWS = AugmentConfig(crop_p=0, hflip_p=0, vflip_p=0, rot90_p=0, jitter_p=0, blur_p=0, noise_p=0)
"""Views equal to the patch: random views cannot match across world sizes (each rank draws for its part)."""


def _data(n: int, seed: int, size: int = 24) -> MemoryDataset:
    g = torch.Generator().manual_seed(seed)
    y = (torch.arange(n) % 2).float()
    return MemoryDataset(torch.randn(n, 10, size, size, generator=g) + y[:, None, None, None] * 0.5, y)


def _classifier(policy: str) -> IrrigationClassifier:
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", 10, dropout=0.0)
    apply_trainable(model, policy)
    return model


def _checksum(model: nn.Module) -> float:
    return sum(p.detach().double().abs().sum().item() for p in model.parameters() if p.requires_grad)


def _batches(source: MemoryDataset, shuffle: bool) -> BatchLoader:
    return BatchLoader(source, 8, shuffle=shuffle, seed=0).sharded()


def scenarios(workdir: Path) -> dict[str, dict[str, Any]]:
    """Every case, trained in this process as one rank of the job: what it logged (rank 0 only) and a
    checksum of its trained weights. 29 train (31 pretraining) patches in batches of 8 end on a batch of 5 (7), and
    15 validation patches: the ranks' shards are uneven, so one patch is dealt twice, left out of the loss and
    dropped when gathered."""
    train, val = _data(29, 1), _data(15, 2)
    cfg = FitConfig(epochs=2, lr=1e-3, patience=10, seed=0)
    out: dict[str, dict[str, Any]] = {}

    log = Recorder()
    model = _classifier("head")
    checkpoint = workdir / "train.pt"
    fit(model, _batches(train, True), _batches(val, False), cfg, checkpoint_path=checkpoint, progress=log)
    resumed = _classifier("head")
    again = fit(resumed, _batches(train, True), _batches(val, False), cfg, checkpoint_path=checkpoint, progress=log)
    out["plain"] = {"logs": log.metrics(), "checksum": _checksum(model),
                    "resumed": [again.start_epoch, _checksum(resumed)]}

    log = Recorder()
    model = _classifier("head2")
    suffix, train_b, val_b = cached_training_set(model, "head2", _batches(train, False), _batches(val, False), 8, 0)
    fit(suffix, train_b, val_b, cfg, progress=log)
    out["cached"] = {"logs": log.metrics(), "checksum": _checksum(model)}

    log = Recorder()
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Conv2d(10, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 16))
    pretrain(encoder, _batches(_data(31, 3, size=16), True), 2, optimizer="sgd", lr=0.05, augment=NO_VIEWS,
             progress=log)
    out["pretrain"] = {"logs": log.metrics(), "checksum": _checksum(encoder)}
    return out


def test_two_processes_give_the_one_process_result(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
              "--log-dir", str(tmp_path / "torchrun")]  # else torchrun leaves a folder in /tmp each time
    job = subprocess.Popen([*launch, __file__, str(tmp_path)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    (tmp_path / "alone").mkdir()
    alone = scenarios(tmp_path / "alone")  # meanwhile, one process
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-3000:]
    main, other = json.loads((tmp_path / "ranks.json").read_text())

    for case, expected in alone.items():
        assert other[case]["logs"] == [], case  # only rank 0 logs
        assert other[case]["checksum"] == main[case]["checksum"], case  # the ranks hold one model
        assert main[case]["checksum"] == pytest.approx(expected["checksum"], rel=1e-4), case
        assert len(main[case]["logs"]) == len(expected["logs"]) > 0, case
        for got, want in zip(main[case]["logs"], expected["logs"]):
            for key, value in want.items():
                assert got[key] == pytest.approx(value, rel=1e-4, abs=1e-5, nan_ok=True), f"{case} {key}"
    # the second call found rank 0's checkpoint of epoch 2 on every rank and restored the best weights
    assert main["plain"]["resumed"] == other["plain"]["resumed"] == [2, main["plain"]["checksum"]]


@pytest.mark.parametrize(("n", "drop_last"), [(30, False), (31, False), (3, False), (31, True)])
def test_ranks_together_take_the_one_process_batches(n: int, drop_last: bool) -> None:
    positions = MemoryDataset(torch.zeros(n, 1), torch.arange(n).float())
    alone = [y.tolist() for _, y in BatchLoader(positions, 8, shuffle=True, seed=3, drop_last=drop_last)]
    ranks = [[y for _, y in BatchLoader(positions, 8, shuffle=True, seed=3, drop_last=drop_last).sharded(r, 2)]
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == len(alone)
    shard = BatchLoader(positions, 8, shuffle=True, seed=3, drop_last=drop_last).sharded(1, 2)
    for step, batch in enumerate(alone):
        assert len(ranks[0][step]) == len(ranks[1][step])  # equal steps: DDP's average is the batch mean
        dealt = torch.stack([ranks[0][step], ranks[1][step]], 1).flatten().tolist()
        assert dealt[: len(batch)] == batch and len(dealt) - len(batch) < 2  # wrapped round at most once
        # the loss leaves out the rows past the one-process batch, each rank's last
        assert shard.shares(step) == [sum(2 * j + r < len(batch) for j in range(len(ranks[r][step]))) for r in (0, 1)]


def test_a_batch_must_split_over_the_processes() -> None:
    with pytest.raises(UserError, match="batch_size: 9 does not split evenly over 2 processes"):
        BatchLoader(_data(4, 0), 9).sharded(0, 2)


if __name__ == "__main__":
    torch.set_num_threads(1)
    with distributed.session():
        ranks = distributed.all_gather_object(scenarios(Path(sys.argv[1])))
        if distributed.is_main():
            (Path(sys.argv[1]) / "ranks.json").write_text(json.dumps(ranks))
    # Leave as a command does (`cli.leave`: no interpreter teardown). With the teardown, rank 0 once aborted
    # after its work was written ("terminate called without an active exception", two suites at once).
    leave(0)
