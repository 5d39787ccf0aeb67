"""Datasets and the batch loader that training code iterates: `for x, y in make_loader(...)`.

Two sources give the same model inputs, up to the packed store's stated rounding of resampled bands
(packed.py): `PatchDataset` reads GeoTIFFs per sample (small data, no store), `PackedDataset` reads rows of a
packed store, already resampled, a batch at a time, and `StoreRoundedPatchDataset` reads the GeoTIFFs rounded
as a store holds them (the same inputs as the store, bit for bit). `BatchLoader` batches any source in the
calling process and prepares the next batches in background threads while the model trains on this one:
reading and converting rows release the GIL, and DataLoader worker processes would only add a copy of every
batch between processes. On a busy machine (no core to spare) those threads only take turns with training for
the same cores, so by default the loader then reads inline. On CUDA the loader copies the store's uint16 rows
(half the bytes of float32) to the device on a side stream and converts them there.
"""

from __future__ import annotations

import copy
import os
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from torch.utils.data import Dataset

from simclr_s2.bigearthnet.bands import (
    ZSCORE,
    Bands,
    InputTransform,
    Resampling,
    check_resampling,
    check_scaling,
)
from simclr_s2.bigearthnet.packed import PackedStore, open_or_pack, quantise
from simclr_s2.bigearthnet.reader import patch_dir, read_pixels
from simclr_s2.errors import UserError
from simclr_s2.learning import distributed

Batch = tuple[torch.Tensor, torch.Tensor]
AUTO_PREFETCH = 2  # batches read ahead while a core is free (prefetch=None)
# batches a source is told of (`advise`) before the one being read: a disk that reads a batch about as fast
# as it is converted has two batches' time for it, so a hiccup of one does not stall the loader
NAMED_AHEAD = 2


def _labels(labels: Sequence[float] | np.ndarray | None, n: int) -> torch.Tensor:
    """float32 labels; None (unlabelled, e.g. SimCLR pretraining) gives NaN so a misuse shows in the loss."""
    if labels is None:
        return torch.full((n,), float("nan"))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if y.shape != (n,):
        raise UserError(f"labels: expected {n} labels (one per patch), got shape {tuple(y.shape)}")
    return y


class BatchSource(Protocol):
    """What BatchLoader needs: a length and a batched read of positions -> CPU (x float32, y float32)."""

    def __len__(self) -> int: ...

    def read_batch(self, indices: np.ndarray) -> Batch: ...


@runtime_checkable
class DeviceSource(Protocol):
    """A source whose batches a loader finishes on its device: `read_stored` gives the compact stored form
    (in pinned memory, for an asynchronous copy), `finish` turns it into `read_batch`'s x where it lies."""

    def read_stored(self, indices: np.ndarray, pin_memory: bool) -> Batch: ...

    def finish(self, stored: torch.Tensor) -> torch.Tensor: ...


class PatchDataset(Dataset[Batch]):
    """Direct GeoTIFF path: one `read_pixels` per sample -> (x float32 (C, 120, 120), y float32 scalar)."""

    def __init__(
        self,
        archive_root: Path,
        names: Sequence[str],
        labels: Sequence[float] | np.ndarray | None,
        bands: Bands | str = "study",
        resampling: Resampling = "bicubic",
        scaling: str = ZSCORE,
    ) -> None:
        self.archive_root = Path(archive_root)
        self.names = tuple(names)
        self.labels = _labels(labels, len(self.names))
        self.transform = InputTransform(bands, scaling)
        self.resampling = resampling

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Batch:
        dn = self.dn(i)
        return torch.from_numpy(self.transform(dn, out=dn)), self.labels[i]

    def dn(self, i: int) -> np.ndarray:
        """float32 DN of sample i, resampled, before scaling."""
        folder = patch_dir(self.archive_root, self.names[i])
        return read_pixels(folder, self.transform.bands, self.resampling, False)

    def read_batch(self, indices: np.ndarray) -> Batch:
        x = torch.stack([self[int(i)][0] for i in indices])
        return x, self.labels[torch.as_tensor(indices, dtype=torch.long)]


class StoreRoundedPatchDataset(PatchDataset):
    """GeoTIFF reads rounded to the store's uint16 as packing rounds them (packed.quantise): a set scores the
    same from the files as from a store, for commands that read a set without packing it."""

    def dn(self, i: int) -> np.ndarray:
        return quantise(super().dn(i)).astype(np.float32)  # whole numbers below 2**24: exact


class PackedDataset(Dataset[Batch]):
    """Packed-store path: positions 0..n-1 map to store `rows`; `read_batch` is the fast path."""

    def __init__(
        self,
        store: PackedStore,
        labels: Sequence[float] | np.ndarray | None,
        rows: Sequence[int] | np.ndarray | None = None,
        scaling: str = ZSCORE,
    ) -> None:
        self.store = store
        self.rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = _labels(labels, len(self.rows))
        self.transform = InputTransform(store.bands, scaling)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Batch:
        x, y = self.read_batch(np.array([i]))
        return x[0], y[0]

    def read_batch(self, indices: np.ndarray) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        x = self.store.read_inputs(self.rows[idx], self.transform)
        return torch.from_numpy(x), self.labels[torch.from_numpy(idx)]

    def read_stored(self, indices: np.ndarray, pin_memory: bool) -> Batch:
        """The rows' uint16 DN, read straight into (pinned) torch memory."""
        idx = np.asarray(indices, dtype=np.int64)
        dn = torch.empty((len(idx), *self.store.row_shape), dtype=torch.uint16, pin_memory=pin_memory)
        self.store.read_dn(self.rows[idx], out=dn.numpy())
        return dn, self.labels[torch.from_numpy(idx)]

    def finish(self, stored: torch.Tensor) -> torch.Tensor:
        return self.transform(stored)

    def advise(self, indices: np.ndarray) -> None:
        """A batch the loader will read soon (NAMED_AHEAD batches ahead, or the first ones of an epoch): the store
        asks the disk for it now if it is not in the page cache."""
        self.store.advise(self.rows[np.asarray(indices, dtype=np.int64)])


class MemoryDataset(Dataset[Batch]):
    """Finished (x, y) tensors in RAM: cached features, synthetic data in tests and benchmarks."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        if len(x) != len(y):
            raise ValueError(f"MemoryDataset: {len(x)} inputs but {len(y)} labels")
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Batch:
        return self.x[i], self.y[i]

    def read_batch(self, indices: np.ndarray) -> Batch:
        # numpy's gather: its large allocations come with transparent huge pages, and on the machines
        # measured here torch's fresh 4 KiB pages cost ~10x the copy itself.
        idx = np.asarray(indices, dtype=np.int64)
        return torch.from_numpy(self.x.numpy()[idx]), torch.from_numpy(self.y.numpy()[idx])


class BatchLoader:
    """Iterable of (x, y) batches over a BatchSource, in the calling process.

    Shuffling is a torch.Generator seeded from (seed, epoch): epoch e has the same order in every
    run, and a resumed run can `set_epoch` to continue where it stopped. Each iteration uses the
    current epoch and then advances it.

    `prefetch` background threads read the batches after the current one (each batch's content depends only
    on its positions, and batches are yielded in order, so threads change nothing but speed); 0 reads each
    batch when it is asked for; None decides per epoch (`read_ahead`). On a CUDA
    `device` x arrives there (y stays on the CPU), copied and, for a DeviceSource, finished on a side stream.

    Under torchrun each rank iterates a `sharded` copy: `batch_size` stays the global batch, and rank r
    takes every world-th sample of it, so the ranks together train on the batches one process would: the
    padding that evens out an epoch's last batch (`dealt`) is left out of the loss (`shares`).
    """

    def __init__(
        self,
        source: BatchSource,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        rank: int = 0,
        world: int = 1,
        *,
        device: str | torch.device | None = None,
        prefetch: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size: expected a positive integer, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"BatchLoader: rank {rank} is not in a world of {world}")
        if batch_size % world:
            raise UserError(
                f"batch_size: {batch_size} does not split evenly over {world} processes; "
                f"use a multiple of {world}"
            )
        if prefetch is not None and prefetch < 0:
            raise UserError(f"prefetch: expected a number of batches read ahead (0: none), got {prefetch}")
        self.source = source
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world = world
        self.device = torch.device(device or "cpu")
        self.prefetch = prefetch
        self.epoch = 0

    def sharded(self, rank: int | None = None, world: int | None = None) -> BatchLoader:
        """This loader as one rank of `world` sees it (default: this process's place in the torchrun job)."""
        shard = BatchLoader(
            self.source,
            self.batch_size,
            self.shuffle,
            self.seed,
            self.drop_last,
            rank=distributed.rank() if rank is None else rank,
            world=distributed.world() if world is None else world,
            device=self.device,
            prefetch=self.prefetch,
        )
        shard.epoch = self.epoch
        return shard

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def dropping_last(self) -> BatchLoader:
        """This loader without its last batch when that one is partial (drop_last)."""
        loader = copy.copy(self)
        loader.drop_last = True
        return loader

    def __len__(self) -> int:
        """Steps per epoch: the same on every rank."""
        n = len(self.source)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def samples(self) -> int:
        """Distinct positions one epoch visits, over all ranks."""
        return min(len(self.source), len(self) * self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """Positions in the order epoch `epoch` visits them."""
        n = len(self.source)
        if not self.shuffle:
            return np.arange(n)
        seed = int(np.random.SeedSequence((self.seed, epoch)).generate_state(1, np.uint64)[0] >> 1)
        return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()

    def dealt(self, epoch: int) -> np.ndarray:
        """This rank's positions in epoch `epoch`: the epoch's order, wrapped round to a multiple of
        `world` (as DistributedSampler pads) so every rank takes as many steps with as many samples,
        then every world-th one from `rank`."""
        order = self.order(epoch)[: self.samples]
        return np.resize(order, -(-len(order) // self.world) * self.world)[self.rank :: self.world]

    def shares(self, step: int) -> list[int]:
        """Every rank's rows of batch `step` that are samples, in rank order: the rest, the last rows of an epoch's
        last batch, are `dealt`'s padding, which a training loss must leave out."""
        per_rank = self.batch_size // self.world
        dealt = [-(-(self.samples - r) // self.world) for r in range(self.world)]  # each rank's samples this epoch
        return [min(per_rank, max(0, n - step * per_rank)) for n in dealt]

    def read_ahead(self) -> int:
        """Batches read ahead in threads this epoch: `prefetch`; for None, AUTO_PREFETCH unless the CPU
        machine is busy (1-minute load average at least its cores), where reading inline was 1.17x faster
        (issue 23). On CUDA the threads also overlap the copies to the device: always on."""
        if self.prefetch is not None:
            return self.prefetch
        busy = self.device.type != "cuda" and os.getloadavg()[0] >= len(os.sched_getaffinity(0))
        return 0 if busy else AUTO_PREFETCH

    def __iter__(self) -> Iterator[Batch]:
        positions = self.dealt(self.epoch)
        self.epoch += 1
        step = self.batch_size // self.world
        stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        batches = [positions[b * step : (b + 1) * step] for b in range(len(self))]
        ahead = self.read_ahead()
        if not ahead:
            for b, batch in enumerate(batches):
                yield self._arrived(*self._load(batch, stream, _named(batches, b)))
            return
        pool = ThreadPoolExecutor(ahead, thread_name_prefix="batch-loader")
        pending: deque[Future] = deque()
        try:
            for b, batch in enumerate(batches):
                pending.append(pool.submit(self._load, batch, stream, _named(batches, b)))
                if len(pending) > ahead:
                    yield self._arrived(*pending.popleft().result())
            while pending:
                yield self._arrived(*pending.popleft().result())
        finally:  # the consumer stopped early or a read failed: read nothing more
            pool.shutdown(wait=True, cancel_futures=True)

    def _load(
        self, positions: np.ndarray, stream: torch.cuda.Stream | None, named: list[np.ndarray]
    ) -> tuple[Batch, torch.cuda.Event | None]:
        """One batch, in a loader thread: on the CPU, or copied (and finished) on `stream`. A source that
        can (`advise`) is told of the batches `named` first, so its disk reads them meanwhile."""
        if hasattr(self.source, "advise"):
            for upcoming in named:
                self.source.advise(upcoming)
        if stream is None:
            return self.source.read_batch(positions), None
        on_device = isinstance(self.source, DeviceSource)
        x, y = self.source.read_stored(positions, True) if on_device else self.source.read_batch(positions)
        with torch.cuda.stream(stream):
            x = x.to(self.device, non_blocking=True)
            x = self.source.finish(x) if on_device else x
            ready = torch.cuda.Event()
            ready.record(stream)
        return (x, y), ready

    def _arrived(self, batch: Batch, ready: torch.cuda.Event | None) -> Batch:
        """The batch, safe to use on the current stream: it waits for the side stream's copy, and the
        allocator keeps x's memory until the current stream is done with it."""
        if ready is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_event(ready)
            batch[0].record_stream(current)
        return batch

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Per-sample results of one epoch (rows in the order this rank was dealt them) from every rank,
        put back in the epoch's order with the padding dropped: what one process would have."""
        if self.world == 1:
            return local
        return torch.stack(distributed.all_gather(local), 1).flatten(0, 1)[: self.samples]


def _named(batches: list[np.ndarray], b: int) -> list[np.ndarray]:
    """The batches a source is told of before batch b is read, each batch once in an epoch: the one
    NAMED_AHEAD after it, and for the first batch also those before that (nothing named them before)."""
    return batches[b + NAMED_AHEAD : b + NAMED_AHEAD + 1] if b else batches[: NAMED_AHEAD + 1]


def gather_epoch(batches: Iterable[Batch], local: torch.Tensor) -> torch.Tensor:
    """`BatchLoader.gather` for a BatchLoader; any other iterable is not sharded, so `local` is all of it."""
    return batches.gather(local) if isinstance(batches, BatchLoader) else local


def batch_shares(batches: Iterable[Batch], step: int, rows: int) -> list[int]:
    """`BatchLoader.shares` for a BatchLoader; any other iterable is not sharded: every rank's `rows` are samples."""
    return batches.shares(step) if isinstance(batches, BatchLoader) else [rows] * distributed.world()


def set_epoch(batches: Iterable[Batch], epoch: int) -> None:
    """Tell a loader that can be told (`BatchLoader.set_epoch`) the epoch it is about to give: its order then
    depends on (seed, epoch) only, so a resumed run, a new process, sees the batches an unbroken one does."""
    if hasattr(batches, "set_epoch"):
        batches.set_epoch(epoch)


def make_loader(
    archive_root: Path,
    names: Sequence[str],
    labels: Sequence[float] | np.ndarray | None,
    bands: Bands | str = "study",
    resampling: str = "bicubic",
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    store_dir: Path | None = None,
    *,
    index_digest: str | None = None,
    store_names: Sequence[str] | None = None,
    drop_last: bool = False,
    workers: int | None = None,
    scaling: str = ZSCORE,
    device: str | torch.device | None = None,
    prefetch: int | None = None,
) -> BatchLoader:
    """The loader training code calls: the packed store when `store_dir` is given (packing it if needed),
    the GeoTIFFs otherwise.

    `store_names` is the list the store holds (default `names`): pack the union of a scheme's splits
    once and every split and fraction reads its rows from it. `workers`: processes that pack.
    `scaling`: one of bands.SCALINGS. `device`: where x is delivered (on CUDA the store's rows are
    converted there). `prefetch`: batches read ahead in background threads (None: BatchLoader.read_ahead
    decides). None of these change the batches.
    """
    if not names:
        raise UserError("make_loader: names is empty; expected at least one patch")
    bands = Bands.parse(bands)
    resampling = check_resampling(resampling)
    check_scaling(scaling)
    source: BatchSource
    if store_dir is None:
        source = PatchDataset(archive_root, names, labels, bands, resampling, scaling)
    else:
        if not index_digest:
            raise UserError(
                f"make_loader: store_dir {store_dir} needs index_digest (it decides when the store is stale)"
            )
        packed = names if store_names is None else store_names
        store = open_or_pack(archive_root, packed, Path(store_dir), bands, index_digest, workers, resampling)
        source = PackedDataset(store, labels, store.rows(names), scaling)
    return BatchLoader(source, batch_size, shuffle, seed, drop_last, device=device, prefetch=prefetch)
