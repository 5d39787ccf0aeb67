"""Datasets and loaders: every path yields the same batches; shuffling is reproducible per (seed, epoch)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_s2.bigearthnet.index import index_digest
from simclr_s2.bigearthnet.reader import read_patch
from simclr_s2.data import BatchLoader, MemoryDataset, PackedDataset, PatchDataset, make_loader, materialise
from simclr_s2.errors import UserError


@pytest.fixture(scope="module")
def archive(demo_archive: Path) -> Path:
    return demo_archive


@pytest.fixture(scope="module")
def names(archive: Path) -> list[str]:
    return sorted(p.name for p in archive.iterdir() if p.is_dir())[:10]


@pytest.fixture(scope="module")
def digest(demo_index: Path) -> str:
    return index_digest(demo_index)


class Positions:
    """A BatchSource whose x is the positions themselves, to test ordering without reading pixels."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def read_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices)
        return idx, idx.float()


def _order(loader: BatchLoader) -> list[int]:
    return [int(i) for x, _ in loader for i in x]


def test_batch_loader_lengths_and_shapes() -> None:
    loader = BatchLoader(Positions(10), batch_size=4)
    assert len(loader) == 3 and [len(x) for x, _ in loader] == [4, 4, 2]
    dropped = BatchLoader(Positions(10), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(x) for x, _ in dropped] == [4, 4]
    assert _order(loader) == list(range(10))  # no shuffle: archive order
    with pytest.raises(UserError, match="batch_size"):
        BatchLoader(Positions(10), batch_size=0)


def test_shuffling_is_seeded_per_epoch() -> None:
    a, b = (BatchLoader(Positions(50), 8, shuffle=True, seed=7) for _ in range(2))
    epochs_a = [_order(a) for _ in range(3)]
    assert epochs_a == [_order(b) for _ in range(3)]  # same seed, same sequence of epochs
    assert all(sorted(e) == list(range(50)) for e in epochs_a)  # each epoch visits every position once
    assert epochs_a[0] != epochs_a[1] != epochs_a[2]
    resumed = BatchLoader(Positions(50), 8, shuffle=True, seed=7)
    resumed.set_epoch(2)
    assert _order(resumed) == epochs_a[2]  # a resumed run continues with the same order
    assert _order(BatchLoader(Positions(50), 8, shuffle=True, seed=8)) != epochs_a[0]


def test_patch_dataset_is_read_patch(archive: Path, names: list[str]) -> None:
    ds = PatchDataset(
        archive, names, labels=np.arange(len(names)) % 2, bands="B04,B8A", resampling="bilinear"
    )
    x, y = ds[3]
    assert x.dtype == torch.float32 and x.shape == (2, 120, 120) and y.dtype == torch.float32 and y == 1.0
    assert torch.equal(x, torch.from_numpy(read_patch(archive / names[3], ("B04", "B8A"), "bilinear")[0]))
    assert torch.isnan(PatchDataset(archive, names, labels=None)[0][1])  # unlabelled, e.g. pretraining
    with pytest.raises(UserError, match="labels"):
        PatchDataset(archive, names, labels=[1, 0])


def test_materialise_keeps_order_across_chunks(archive: Path, names: list[str]) -> None:
    ds = PatchDataset(archive, names[:5], labels=[0, 1, 0, 1, 1], bands="B02,B05")
    mem = materialise(ds, chunk=2)
    assert isinstance(mem, MemoryDataset) and len(mem) == 5
    x, y = ds.read_batch(np.arange(5))
    assert torch.equal(mem.x, x) and torch.equal(mem.y, y)


def test_every_loader_path_gives_identical_batches(archive, names, digest, tmp_path, caplog) -> None:
    subset, labels = names[1:9], np.linspace(0, 1, 8)
    common = {"bands": "study", "resampling": "bicubic", "batch_size": 3, "shuffle": True, "seed": 11}
    with caplog.at_level(logging.INFO):
        loaders = {
            "direct": make_loader(archive, subset, labels, **common, in_memory=False),
            "direct in memory": make_loader(archive, subset, labels, **common, in_memory=True),
            "store": make_loader(
                archive,
                subset,
                labels,
                **common,
                store_dir=tmp_path / "s",
                index_digest=digest,
                in_memory=False,
            ),
            # the store holds every patch (e.g. a scheme's union of splits); the loader reads its subset
            "store of a superset, in memory": make_loader(
                archive,
                subset,
                labels,
                **common,
                store_dir=tmp_path / "all",
                index_digest=digest,
                store_names=names,
            ),
        }
    assert isinstance(loaders["store"].source, PackedDataset)
    assert isinstance(loaders["store of a superset, in memory"].source, MemoryDataset)  # auto: small enough
    reference = [list(loaders["direct"]) for _ in range(2)]  # two epochs
    assert len(reference[0]) == 3 and reference[0][0][0].shape == (3, 10, 120, 120)
    assert not torch.equal(reference[0][0][1], reference[1][0][1])  # epochs differ
    for name, loader in loaders.items():
        for epoch in range(2):
            batches = list(loader) if name != "direct" else reference[epoch]
            for (x, y), (rx, ry) in zip(batches, reference[epoch], strict=True):
                assert torch.equal(x, rx) and torch.equal(y, ry), name
    assert "holding 8 finished patches in memory" in caplog.text


def test_make_loader_rejects_bad_requests(archive, names, digest, tmp_path) -> None:
    with pytest.raises(UserError, match="index_digest"):
        make_loader(archive, names, None, store_dir=tmp_path / "s")
    with pytest.raises(UserError, match="empty"):
        make_loader(archive, [], None)
    with pytest.raises(UserError, match="resampling"):
        make_loader(archive, names, None, resampling="lanczos")
    with pytest.raises(UserError, match="not_a_patch"):
        make_loader(
            archive,
            ["not_a_patch"],
            None,
            store_dir=tmp_path / "s",
            index_digest=digest,
            store_names=names[:2],
        )
