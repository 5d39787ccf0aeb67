"""Datasets and loaders: both paths give the same batches (up to the store's stated rounding), shuffling is
reproducible per (seed, epoch), and reading ahead in threads changes nothing but speed."""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_s2.bigearthnet import packed
from simclr_s2.bigearthnet.bands import STD, STUDY_BANDS
from simclr_s2.bigearthnet.index import index_digest
from simclr_s2.bigearthnet.reader import read_patch, read_pixels
from simclr_s2.errors import UserError
from simclr_s2.learning.datasets import (
    AUTO_PREFETCH,
    NAMED_AHEAD,
    BatchLoader,
    DeviceSource,
    PackedDataset,
    PatchDataset,
    StoreRoundedPatchDataset,
    make_loader,
)

# packed.py: a store's DN are the direct path's rounded, so z-scored inputs differ by at most 0.5 / STD
ROUNDING = torch.tensor([0.5 / STD[b] for b in STUDY_BANDS])[:, None, None] + 1e-5


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
    """A BatchSource whose x is the positions themselves, to test ordering without reading pixels;
    `delay` makes later batches finish first, `fail_at` makes reading that position fail."""

    def __init__(self, n: int, delay: float = 0.0, fail_at: int | None = None) -> None:
        self.n, self.delay, self.fail_at = n, delay, fail_at

    def __len__(self) -> int:
        return self.n

    def read_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fail_at in indices:
            raise OSError(f"cannot read position {self.fail_at}")
        time.sleep(self.delay * (indices[0] % 3 == 0))
        idx = torch.as_tensor(indices)
        return idx, idx.float()


def _order(loader: BatchLoader) -> list[int]:
    return [int(i) for x, _ in loader for i in x]


def _loader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("batch-loader")]


def test_batch_loader_lengths_and_shapes() -> None:
    loader = BatchLoader(Positions(10), batch_size=4)
    assert len(loader) == 3 and [len(x) for x, _ in loader] == [4, 4, 2]
    dropped = BatchLoader(Positions(10), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(x) for x, _ in dropped] == [4, 4]
    assert _order(loader) == list(range(10))  # no shuffle: archive order
    with pytest.raises(UserError, match="batch_size"):
        BatchLoader(Positions(10), batch_size=0)
    with pytest.raises(UserError, match="prefetch"):
        BatchLoader(Positions(10), batch_size=4, prefetch=-1)


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


def test_reading_ahead_keeps_the_order_and_stops_with_the_consumer() -> None:
    expected = _order(BatchLoader(Positions(40), 4, shuffle=True, seed=3, prefetch=1))
    for prefetch in (2, 5):  # slow and fast batches finish out of order in the threads
        loader = BatchLoader(Positions(40, delay=0.01), 4, shuffle=True, seed=3, prefetch=prefetch)
        assert _order(loader) == expected
        shard = loader.sharded(1, 2)
        assert (shard.prefetch, shard.device, shard.epoch) == (prefetch, torch.device("cpu"), 1)
    for x, _ in BatchLoader(Positions(40, delay=0.01), 4, prefetch=3):
        break
    assert _loader_threads() == []  # an abandoned epoch leaves no thread reading


def test_a_busy_machine_reads_inline_and_a_free_core_reads_ahead(monkeypatch) -> None:
    cores = len(os.sched_getaffinity(0))
    expected = _order(BatchLoader(Positions(40), 4, shuffle=True, seed=3, prefetch=0))
    for load, threads in ((float(cores), 0), (cores - 1.0, AUTO_PREFETCH)):
        monkeypatch.setattr(os, "getloadavg", lambda load=load: (load, load, load))
        loader = BatchLoader(Positions(40, delay=0.01), 4, shuffle=True, seed=3)
        assert loader.read_ahead() == threads
        batches = iter(loader)
        next(batches)
        assert len(_loader_threads()) == threads  # inline: no thread at all
        batches.close()
        assert _order(BatchLoader(Positions(40), 4, shuffle=True, seed=3, prefetch=threads)) == expected


def test_the_next_batches_are_read_while_the_consumer_holds_this_one() -> None:
    class Watched(Positions):
        def __init__(self) -> None:
            super().__init__(40)
            self.started = {b: threading.Event() for b in range(10)}

        def read_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            self.started[int(indices[0]) // 4].set()
            return super().read_batch(indices)

    source = Watched()
    batches = iter(BatchLoader(source, 4, prefetch=2))
    next(batches)  # batch 0 is with the consumer (training on it) ...
    assert source.started[1].wait(10) and source.started[2].wait(10)  # ... while 1 and 2 are read
    assert not source.started[3].is_set()  # at most `prefetch` batches ahead
    batches.close()


def test_a_failed_read_surfaces_at_its_batch() -> None:
    seen = []
    with pytest.raises(OSError, match="position 13"):
        for x, _ in BatchLoader(Positions(40, fail_at=13), 4, prefetch=3):
            seen.append(int(x[0]))
    assert seen == [0, 4, 8] and _loader_threads() == []


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


def test_both_paths_give_the_same_batches(archive, names, digest, tmp_path) -> None:
    subset, labels = names[1:9], np.linspace(0, 1, 8)
    common = {"bands": "study", "resampling": "bicubic", "batch_size": 3, "shuffle": True, "seed": 11}
    direct = make_loader(archive, subset, labels, **common)
    store = make_loader(archive, subset, labels, **common, store_dir=tmp_path / "s", index_digest=digest)
    # the store holds every patch (e.g. a scheme's union of splits); the loader reads its subset
    superset = make_loader(
        archive,
        subset,
        labels,
        **common,
        store_dir=tmp_path / "all",
        index_digest=digest,
        store_names=names,
        prefetch=1,
    )
    assert isinstance(store.source, PackedDataset) and isinstance(store.source, DeviceSource)
    references = [list(direct) for _ in range(2)]  # two epochs
    assert len(references[0]) == 3 and references[0][0][0].shape == (3, 10, 120, 120)
    assert not torch.equal(references[0][0][1], references[1][0][1])  # epochs differ
    for reference in references:
        for (x, y), (sx, sy), (rx, ry) in zip(store, superset, reference, strict=True):
            assert torch.equal(x, sx) and torch.equal(y, sy) and torch.equal(y, ry)
            assert x.dtype == torch.float32 and torch.all((x - rx).abs() <= ROUNDING)
    rounded = StoreRoundedPatchDataset(archive, subset, labels)  # the GeoTIFFs as the store holds them
    positions = np.array([5, 0, 7])
    assert torch.equal(rounded.read_batch(positions)[0], store.source.read_batch(positions)[0])


def test_scalings_against_raw_dn(archive, names, digest, tmp_path) -> None:
    """reflectance/10000 is DN / 10,000 on both paths (the store's DN being the direct path's rounded)."""
    subset = names[:4]
    kwargs = {"batch_size": 4, "scaling": "reflectance/10000"}
    direct = next(iter(make_loader(archive, subset, None, **kwargs)))[0]
    store = make_loader(archive, subset, None, **kwargs, store_dir=tmp_path / "s", index_digest=digest)
    packed = next(iter(store))[0]
    raw = np.stack([read_pixels(archive / n, STUDY_BANDS, normalised=False) for n in subset])
    np.testing.assert_allclose(direct.numpy(), raw / 1e4, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(packed.numpy(), np.clip(np.rint(raw), 0, 65535) / 1e4, rtol=1e-6, atol=1e-7)
    assert np.abs(packed.numpy() - raw / 1e4).max() <= 0.5e-4 + 1e-6
    zscored = next(iter(make_loader(archive, subset, None, batch_size=4)))[0]  # default: today's z-score
    assert torch.equal(zscored, torch.from_numpy(np.stack([read_pixels(archive / n) for n in subset])))
    with pytest.raises(UserError, match="scaling"):
        make_loader(archive, subset, None, scaling="minmax")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("scaling", ["bigearthnet-zscore", "reflectance/10000"])
def test_cuda_loader_gives_the_cpu_batches_converted_on_the_device(archive, names, digest, tmp_path, scaling):
    kwargs = {
        "batch_size": 3,
        "shuffle": True,
        "store_dir": tmp_path / "s",
        "index_digest": digest,
        "scaling": scaling,
    }
    labels = np.arange(len(names)) % 2
    cpu, cuda = (
        make_loader(archive, names, labels, **kwargs),
        make_loader(archive, names, labels, **kwargs, device="cuda"),
    )
    for (x, y), (cx, cy) in zip(cpu, cuda, strict=True):
        assert cx.device.type == "cuda" and cy.device.type == "cpu"
        assert torch.equal(x, cx.cpu()) and torch.equal(y, cy)


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


def test_a_source_that_can_is_told_of_each_batch_once_before_it_is_read() -> None:
    class Advised(Positions):
        def __init__(self) -> None:
            super().__init__(10)
            self.told: list[list[int]] = []
            self.read: list[list[int]] = []

        def advise(self, indices: np.ndarray) -> None:
            self.told.append(indices.tolist())

        def read_batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
            assert indices.tolist() in self.told  # named before it is read
            self.read.append(indices.tolist())
            return super().read_batch(indices)

    expected = _order(BatchLoader(Positions(10), 4, shuffle=True, seed=5))
    for prefetch in (0, 2):
        source = Advised()
        batches = [x.tolist() for x, _ in BatchLoader(source, 4, shuffle=True, seed=5, prefetch=prefetch)]
        assert [i for batch in batches for i in batch] == expected
        assert sorted(source.told) == sorted(batches)  # each batch once, the first one too
    class Logged(Positions):
        def __init__(self) -> None:
            super().__init__(20)
            self.events: list[tuple[str, int]] = []

        def advise(self, indices: np.ndarray) -> None:
            self.events.append(("told", int(indices[0]) // 4))

    inline = Logged()
    for x, _ in BatchLoader(inline, 4, prefetch=0):
        inline.events.append(("read", int(x[0]) // 4))
    assert NAMED_AHEAD == 2 and inline.events == [  # each batch is named 2 batches before it is read
        ("told", 0), ("told", 1), ("told", 2), ("read", 0), ("told", 3), ("read", 1), ("told", 4),
        ("read", 2), ("read", 3), ("read", 4),
    ]


def test_the_store_hints_each_batch_once_while_it_is_out_of_the_page_cache(
    archive, names, digest, tmp_path, monkeypatch
) -> None:
    hinted: list[int] = []
    monkeypatch.setattr(os, "posix_fadvise", lambda fd, offset, length, advice: hinted.append(offset))
    disk = itertools.count()
    monkeypatch.setattr(packed, "_blocks_read", lambda: next(disk))  # every hint sends the disk reads
    common = {"batch_size": 4, "shuffle": True, "store_dir": tmp_path / "s", "index_digest": digest}
    for prefetch in (0, 2):
        loader = make_loader(archive, names, None, **common, prefetch=prefetch)
        source, store = loader.source, loader.source.store
        offsets = store.pixels.offset + source.rows[loader.order(0)] * store.pixels[0].nbytes
        hinted.clear()
        for _ in loader:
            pass
        assert sorted(hinted) == sorted(offsets.tolist())  # every row of the epoch hinted once
        if prefetch == 0:
            assert hinted[4:8] == sorted(hinted[4:8])  # each batch in file order
    monkeypatch.setattr(packed, "_blocks_read", lambda: 0)  # hints that send nothing: the store is cached
    loader = make_loader(archive, names, None, **common, prefetch=0)
    store, rows = loader.source.store, np.array([7, 2, 2, 5])
    hinted.clear()
    for _ in loader:
        pass
    assert len(hinted) == 4  # a fresh store hinted its first batch and, finding it cached, no more
    faults = itertools.count()
    monkeypatch.setattr(packed, "_major_faults", lambda: next(faults))  # a read that waits for the disk
    x = store.read_inputs(rows, loader.source.transform)
    np.testing.assert_array_equal(x, loader.source.transform(store.read_dn(rows)))  # in the rows' order
    assert len(hinted) == 4  # reads never hint ...
    store.advise(rows)
    assert len(hinted) == 8  # ... but the next batch named after one that waited is


def test_a_read_that_waits_while_another_thread_hints_keeps_the_store_cold(
    archive, names, digest, tmp_path, monkeypatch
) -> None:
    loader = make_loader(archive, names, None, batch_size=4, store_dir=tmp_path / "s", index_digest=digest)
    store, transform = loader.source.store, loader.source.transform
    monkeypatch.setattr(packed, "_blocks_read", lambda: 0)  # the hinted rows are cached ...
    faults = itertools.count()
    monkeypatch.setattr(packed, "_major_faults", lambda: next(faults))  # ... but every read waits

    hinted: list[int] = []

    def hint(fd: int, offset: int, length: int, advice: int) -> None:
        if not hinted:  # a loader thread reads a batch, and waits, between these hints
            store.read_inputs(np.array([1, 3]), transform)
        hinted.append(offset)

    monkeypatch.setattr(os, "posix_fadvise", hint)
    store.advise(np.array([7, 2]))
    store.advise(np.array([5, 6]))
    assert len(hinted) == 4  # the wait is not lost: the next batch is hinted too
    store.advise(np.array([0, 4]))
    assert len(hinted) == 4  # hints that found their rows cached, with no wait meanwhile: cached
