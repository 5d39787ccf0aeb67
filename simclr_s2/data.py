"""Datasets and the batch loader that training code iterates: `for x, y in make_loader(...)`.

Three sources give identical tensors: `PatchDataset` reads GeoTIFFs per sample (small data, no
store), `PackedDataset` reads a packed store a batch at a time, and `MemoryDataset` holds the
finished tensors of either in RAM (resampled once, then every epoch is a memory gather).
`BatchLoader` batches any of them in the calling process: the store's batch read is one gather plus
one multi-threaded torch resample per band group, which a per-sample `__getitem__` would break up,
and DataLoader worker processes would only add a copy of every batch between processes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from simclr_s2 import distributed
from simclr_s2.bigearthnet.bands import PATCH_SIZE, check_resampling, resolve_bands
from simclr_s2.bigearthnet.packed import PackedStore, open_or_pack
from simclr_s2.bigearthnet.reader import patch_dir, read_pixels
from simclr_s2.errors import UserError

IN_MEMORY_MAX_BYTES = 2 * 1024**3
"""With `in_memory` None, a loader keeps its finished float32 tensors in RAM when they take at most this."""

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, torch.Tensor]


def _labels(labels: Sequence[float] | np.ndarray | None, n: int) -> torch.Tensor:
    """float32 labels; None (unlabelled, e.g. SimCLR pretraining) gives NaN so a misuse shows in the loss."""
    if labels is None:
        return torch.full((n,), float("nan"))
    y = torch.as_tensor(np.asarray(labels, dtype=np.float32))
    if y.shape != (n,):
        raise UserError(f"labels: expected {n} labels (one per patch), got shape {tuple(y.shape)}")
    return y


class BatchSource(Protocol):
    """What BatchLoader needs: a length and a batched read of positions."""

    def __len__(self) -> int: ...

    def read_batch(self, indices: np.ndarray) -> Batch: ...


class PatchDataset(Dataset[Batch]):
    """Direct GeoTIFF path: one `read_pixels` per sample -> (x float32 (C, 120, 120), y float32 scalar)."""

    def __init__(
        self,
        archive_root: Path,
        names: Sequence[str],
        labels: Sequence[float] | np.ndarray | None,
        bands: str | Sequence[str] = "study",
        resampling: str = "bicubic",
        normalised: bool = True,
    ) -> None:
        self.archive_root = Path(archive_root)
        self.names = tuple(names)
        self.labels = _labels(labels, len(self.names))
        self.bands = resolve_bands(bands)
        self.resampling = check_resampling(resampling)
        self.normalised = normalised

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> Batch:
        x = read_pixels(patch_dir(self.archive_root, self.names[i]), self.bands, self.resampling, self.normalised)
        return torch.from_numpy(x), self.labels[i]

    def read_batch(self, indices: np.ndarray) -> Batch:
        x = torch.stack([self[int(i)][0] for i in indices])
        return x, self.labels[torch.as_tensor(indices, dtype=torch.long)]


class PackedDataset(Dataset[Batch]):
    """Packed-store path: positions 0..n-1 map to store `rows`; `read_batch` is the fast path."""

    def __init__(
        self,
        store: PackedStore,
        labels: Sequence[float] | np.ndarray | None,
        rows: Sequence[int] | np.ndarray | None = None,
        resampling: str = "bicubic",
        normalised: bool = True,
    ) -> None:
        self.store = store
        self.rows = np.arange(len(store)) if rows is None else np.asarray(rows, dtype=np.int64)
        self.labels = _labels(labels, len(self.rows))
        self.resampling = check_resampling(resampling)
        self.normalised = normalised

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> Batch:
        x, y = self.read_batch(np.array([i]))
        return x[0], y[0]

    def read_batch(self, indices: np.ndarray) -> Batch:
        idx = np.asarray(indices, dtype=np.int64)
        x = self.store.read_batch(self.rows[idx], self.resampling, self.normalised)
        return x, self.labels[torch.from_numpy(idx)]


class MemoryDataset(Dataset[Batch]):
    """Finished (x, y) tensors in RAM; `materialise` fills it from any BatchSource."""

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


def materialise(source: BatchSource, chunk: int = 256) -> MemoryDataset:
    """Read every position of `source` once, in order, into one preallocated RAM tensor."""
    n = len(source)
    x = y = None
    for start in tqdm(range(0, n, chunk), desc="loading into memory", unit="chunk",
                      disable=distributed.quiet()):
        xb, yb = source.read_batch(np.arange(start, min(start + chunk, n)))
        if x is None or y is None:
            x, y = torch.empty((n, *xb.shape[1:])), torch.empty(n)
        x[start : start + len(xb)], y[start : start + len(yb)] = xb, yb
    if x is None or y is None:
        raise UserError("materialise: the source holds no patches")
    return MemoryDataset(x, y)


class BatchLoader:
    """Iterable of (x, y) batches over a BatchSource, in the calling process.

    Shuffling is a torch.Generator seeded from (seed, epoch): epoch e has the same order in every
    run, and a resumed run can `set_epoch` to continue where it stopped. Each iteration uses the
    current epoch and then advances it.

    Under torchrun each rank iterates a `sharded` copy: `batch_size` stays the global batch, and rank r
    takes every world-th sample of it, so the ranks together train on the batches one process would.
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
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch_size: expected a positive integer, got {batch_size}")
        if not 0 <= rank < world:
            raise ValueError(f"BatchLoader: rank {rank} is not in a world of {world}")
        if batch_size % world:
            raise UserError(f"batch_size: {batch_size} does not split evenly over {world} processes; "
                            f"use a multiple of {world}")
        self.source = source
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.rank = rank
        self.world = world
        self.epoch = 0

    def sharded(self, rank: int | None = None, world: int | None = None) -> BatchLoader:
        """This loader as one rank of `world` sees it (default: this process's place in the torchrun job)."""
        shard = BatchLoader(self.source, self.batch_size, self.shuffle, self.seed, self.drop_last,
                            rank=distributed.rank() if rank is None else rank,
                            world=distributed.world() if world is None else world)
        shard.epoch = self.epoch
        return shard

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

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

    def __iter__(self) -> Iterator[Batch]:
        positions = self.dealt(self.epoch)
        self.epoch += 1
        step = self.batch_size // self.world
        for b in range(len(self)):
            yield self.source.read_batch(positions[b * step : (b + 1) * step])

    def gather(self, local: torch.Tensor) -> torch.Tensor:
        """Per-sample results of one epoch (rows in the order this rank was dealt them) from every rank,
        put back in the epoch's order with the padding dropped: what one process would have."""
        if self.world == 1:
            return local
        return torch.stack(distributed.all_gather(local), 1).flatten(0, 1)[: self.samples]


def gather_epoch(batches: Iterable[Batch], local: torch.Tensor) -> torch.Tensor:
    """`BatchLoader.gather` for a BatchLoader; any other iterable is not sharded, so `local` is all of it."""
    return batches.gather(local) if isinstance(batches, BatchLoader) else local


def make_loader(
    archive_root: Path,
    names: Sequence[str],
    labels: Sequence[float] | np.ndarray | None,
    bands: str | Sequence[str] = "study",
    resampling: str = "bicubic",
    batch_size: int = 32,
    shuffle: bool = False,
    seed: int = 0,
    store_dir: Path | None = None,
    *,
    index_digest: str | None = None,
    store_names: Sequence[str] | None = None,
    drop_last: bool = False,
    in_memory: bool | None = None,
    workers: int | None = None,
) -> BatchLoader:
    """The loader training code calls: packed store when `store_dir` is given (packing if needed), GeoTIFFs otherwise.

    `store_names` is the list the store holds (default `names`): pack the union of a scheme's splits
    once and every split and fraction reads its rows from it. `in_memory` keeps the finished tensors
    in RAM (None: when they fit in IN_MEMORY_MAX_BYTES), so later epochs skip reading and resampling.
    `workers`: processes that pack. Every choice gives identical batches.
    """
    if not names:
        raise UserError("make_loader: names is empty; expected at least one patch")
    bands = resolve_bands(bands)
    check_resampling(resampling)
    source: BatchSource
    if store_dir is None:
        source = PatchDataset(archive_root, names, labels, bands, resampling)
    else:
        if not index_digest:
            raise UserError(
                f"make_loader: store_dir {store_dir} needs index_digest (it decides when the store is stale)"
            )
        packed = names if store_names is None else store_names
        store = open_or_pack(archive_root, packed, Path(store_dir), bands, index_digest, workers)
        source = PackedDataset(store, labels, store.rows(names), resampling)
    if in_memory is None:
        in_memory = len(names) * len(bands) * PATCH_SIZE * PATCH_SIZE * 4 <= IN_MEMORY_MAX_BYTES
    if in_memory:
        source = materialise(source)
        log.info("holding %d finished patches in memory (%.0f MiB)", len(source), source.x.nbytes / 2**20)
    return BatchLoader(source, batch_size, shuffle, seed, drop_last)
