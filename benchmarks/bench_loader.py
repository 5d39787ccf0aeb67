"""The data path at the study's scale in one table: loader samples/s, packing patches/s and the disk's own
read rate, each beside a baseline measured in the same run, with the load average.

Inputs as issue 15 built them: the 6 real BigEarthNet-S2 patches of tests/bigearthnet/fixtures copied to
--patches (6,000) patch folders; the slow baselines read the first --small (600). Batches of --batch-size
shuffled samples of the study's 10 bands (torchgeo's loader reads all 12: it has no band choice).

- loader, page cache warm: the packed store through `BatchLoader` (its default read-ahead), against the same
  work done bare (the store's uint16 rows gathered from its memory map and converted, one thread; the goal:
  at least 0.9x), a bare read of float32 rows from a memory map (one thread, same rows, order and batch;
  the goal: at least 0.8x), the loader reading inline and with 2 read-ahead threads (prefetch 0 / 2), the GeoTIFF
  per-sample path (`PatchDataset`), torchgeo's BigEarthNet (DataLoader, num_workers=0; where installed), and
  finished float32 tensors held in RAM (`MemoryDataset`: what the removed `in_memory` option did).
- loader, cold: the same with the store evicted from the page cache before every epoch (this process's
  own map of it dropped first: the kernel keeps a mapped page whatever it is advised; then posix_fadvise
  DONTNEED; mincore then counts the pages still resident, printed), so every row comes from the disk, as
  for a store larger than RAM; in shuffled order and in file order, each against the disk's sequential
  read of the same file (O_DIRECT, no cache) in rows/s (the goal: at least 0.8x). A shuffled epoch is random
  I/O, so it is also put beside the disk's own rate for it: O_DIRECT reads of the same rows in the same
  order, as many at a time as the loader hints ahead. The cold figures end the output in a few lines.
The loader figures are medians of --repeats runs, taken in turn with their baselines (A B C, C B A, ...).
- packing: `pack` with --workers processes, archive in the page cache, against the same packer reading the
  GeoTIFFs through rasterio (`reader.read_native`, as before issue 15).

    python benchmarks/bench_loader.py [--patches 6000] [--small 600] [--batch-size 32] [--workers 2]
                                      [--seconds 3] [--repeats 3]
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import platform
import shutil
import statistics
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from unittest import mock

import numpy as np
import torch
from figures import Clock, Figure, Rate, report

from simclr_s2.bigearthnet import packed, reader
from simclr_s2.bigearthnet.bands import STUDY_BANDS, InputTransform
from simclr_s2.learning.datasets import NAMED_AHEAD, BatchLoader, MemoryDataset, PackedDataset, PatchDataset

EXAMPLES = Path(__file__).parents[1] / "tests" / "bigearthnet" / "fixtures" / "BigEarthNet-S2-Example.tar.bz2"
DIGEST = "bench" * 8


def copy_examples(root: Path, n: int, tmp: Path) -> list[str]:
    """n patch folders in the v1.0 layout under `root`, each a byte copy of one of the 6 real patches."""
    with tarfile.open(EXAMPLES) as tar:
        tar.extractall(tmp, filter="data")
    examples = sorted((tmp / "BigEarthNet-S2-Example").iterdir())
    names = [f"S2A_MSIL2A_20170613T101031_{i // 1000}_{i % 1000}" for i in range(n)]
    for i, name in enumerate(names):
        source = examples[i % len(examples)]
        (root / name).mkdir(parents=True)
        for f in source.iterdir():
            shutil.copyfile(f, root / name / f.name.replace(source.name, name))
    return names


def rate(epoch: Callable[[], Iterable], seconds: float, before: Callable[[], None] = lambda: None) -> Rate:
    """Samples per second over whole epochs (at least one, and at least `seconds`); `before` runs untimed."""
    n, clock = 0, Clock()
    while clock.wall < seconds or not n:
        before()
        clock.start()
        for x, _ in epoch():
            n += len(x)
        clock.stop()
    return clock.rate(n)


def interleaved(measures: dict[str, Callable[[], Rate]], repeats: int) -> dict[str, Rate]:
    """Each measure `repeats` times, in turn (A B C, then C B A, ...), so a change of load falls on all of
    them alike; the median of each (per second, per CPU-second), with the highest load seen."""
    runs: dict[str, list[Rate]] = {name: [] for name in measures}
    for r in range(repeats):
        for name in list(measures)[:: 1 if r % 2 == 0 else -1]:
            runs[name].append(measures[name]())
    return {name: Rate(statistics.median(x.per_s for x in rs),
                       statistics.median(x.per_cpu_s or 0.0 for x in rs) or None, max(x.load for x in rs))
            for name, rs in runs.items()}


def bare_epoch(rows: np.ndarray, batch: int) -> Iterable:
    """One shuffled epoch of plain float32 gathers from a memory map: no loader, no conversion."""
    order = np.random.default_rng(0).permutation(len(rows))
    for start in range(0, len(order), batch):
        yield torch.from_numpy(rows[order[start : start + batch]]), None


def same_work_epoch(store: packed.PackedStore, transform: InputTransform, batch: int) -> Iterable:
    """One shuffled epoch of the loader's own work, bare: uint16 rows gathered from the memory map and
    converted to float32 model inputs, in one thread."""
    order = np.random.default_rng(0).permutation(len(store))
    for start in range(0, len(order), batch):
        yield torch.from_numpy(transform(store.pixels[order[start : start + batch]])), None


def evict(store: packed.PackedStore) -> float:
    """Drop the store's pixels from the page cache; the fraction of their pages still there after.

    The loader's reads mapped them into this process, and POSIX_FADV_DONTNEED leaves a mapped page in the
    cache (so this benchmark's cold epochs found the store all resident until it said so): this process's
    own map of them is dropped first (MADV_DONTNEED; nothing else maps the file)."""
    store.pixels.base.madvise(mmap.MADV_DONTNEED)
    path = store.path / packed.PIXELS_FILE
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return resident(path)


_LIBC = ctypes.CDLL(None, use_errno=True)
_LIBC.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]


def resident(path: Path) -> float:
    """Fraction of the file's pages in the page cache: mincore(2) over a fresh private map of it (the map
    touches no page; for pages not written to, mincore reports the page cache's)."""
    size = path.stat().st_size
    pages = (ctypes.c_ubyte * -(-size // mmap.PAGESIZE))()
    with open(path, "rb") as fh:
        mapped = mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_COPY)
    start = ctypes.c_char.from_buffer(mapped)
    try:
        if _LIBC.mincore(ctypes.addressof(start), size, pages):
            raise OSError(ctypes.get_errno(), f"mincore {path}")
    finally:
        del start
        mapped.close()
    return sum(p & 1 for p in pages) / len(pages)


def disk_read(path: Path) -> Rate:
    """Bytes per second of one sequential read of `path` with O_DIRECT: the disk, not the page cache."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf, total, clock = mmap.mmap(-1, 8 << 20), 0, Clock()  # page-aligned, as O_DIRECT needs
    clock.start()
    try:
        while n := os.readv(fd, [buf]):
            total += n
    finally:
        os.close(fd)
    clock.stop()
    return clock.rate(total)


def disk_rows(store: packed.PackedStore, order: np.ndarray, depth: int) -> Rate:
    """Rows per second read with O_DIRECT in `order`, `depth` at a time: the disk's rate for the loader's own
    I/O (single rows, as many in flight as it hints), without the page cache or the conversion."""
    path, row_bytes, page = store.path / packed.PIXELS_FILE, store.pixels[0].nbytes, mmap.PAGESIZE
    buffers = threading.local()

    def read(row: int) -> None:
        start = store.pixels.offset + row * row_bytes
        first, end = start // page * page, -(-(start + row_bytes) // page) * page
        if not hasattr(buffers, "page_aligned"):
            buffers.page_aligned = mmap.mmap(-1, row_bytes + 2 * page)
        os.preadv(fd, [memoryview(buffers.page_aligned)[: end - first]], first)

    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    clock = Clock()
    try:
        with ThreadPoolExecutor(depth) as pool:
            clock.start()
            list(pool.map(read, order.tolist()))
            clock.stop()
    finally:
        os.close(fd)
    return clock.rate(len(order))


def torchgeo_rate(root: Path, names: list[str], batch: int, seconds: float) -> tuple[Rate | None, str]:
    """torchgeo's BigEarthNet over `names` (12 bands, GDAL bilinear to 120 px), or why it was not run."""
    try:
        from torchgeo.datasets import BigEarthNet
    except ImportError as e:
        return None, f"torchgeo is not installed here ({e})"
    for split in ("train", "val", "test"):
        (root.parent / f"bigearthnet-{split}.csv").write_text("".join(f"{n},{n}\n" for n in names))
    dataset = BigEarthNet(str(root.parent), split="train", bands="s2", num_classes=43)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0)
    return rate(lambda: ((b["image"], None) for b in loader), seconds), ""


def packing_rate(root: Path, names: list[str], out: Path, workers: int, rasterio_reads: bool) -> Rate:
    reads = (lambda folder, bands: reader.read_native(folder, bands)) if rasterio_reads else packed.read_bands
    clock = Clock()
    with mock.patch.object(packed, "read_bands", reads):
        clock.start()
        packed.pack(root, names, out, "study", DIGEST, workers=workers)
        clock.stop()
    return clock.rate(len(names))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=6000, help="patch folders copied from the 6 real ones")
    p.add_argument("--small", type=int, default=600, help="patches the slow baselines read")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="packing processes")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum time per loader measurement")
    p.add_argument("--repeats", type=int, default=3, help="interleaved repeats of each loader figure (medians)")
    args = p.parse_args()
    bs, secs = args.batch_size, args.seconds
    rows: list[Figure] = []

    with tempfile.TemporaryDirectory(prefix="bench_loader_") as tmp_dir:
        tmp = Path(tmp_dir)
        root = tmp / "BigEarthNet-v1.0"
        start = time.perf_counter()
        names = copy_examples(root, args.patches, tmp)
        small = names[: args.small]
        print(f"copied {len(names)} patch folders in {time.perf_counter() - start:.0f} s", flush=True)

        fast = packing_rate(root, names, tmp / "store", args.workers, rasterio_reads=False)
        slow = packing_rate(root, small, tmp / "store-rasterio", args.workers, rasterio_reads=True)
        rows.append(Figure(f"packing, {len(names)} patches, {args.workers} processes (patches/s)", fast,
                           f"same packer, rasterio reads, {len(small)} patches", slow))
        store = packed.PackedStore.open(tmp / "store")
        labels = np.random.default_rng(0).integers(0, 2, len(names)).astype(np.float32)
        loader = BatchLoader(PackedDataset(store, labels), bs, shuffle=True)

        f32_path = tmp / "float32.npy"
        f32 = np.lib.format.open_memmap(f32_path, mode="w+", dtype=np.float32, shape=store.pixels.shape)
        transform = InputTransform(STUDY_BANDS)
        for s in range(0, len(store), 256):
            f32[s : s + 256] = transform(store.read_dn(np.arange(s, min(s + 256, len(store)))))
        f32.flush()
        del f32
        f32 = np.load(f32_path, mmap_mode="r")

        label = f"loader, packed store of {len(names)}, page cache warm (samples/s, median of {args.repeats})"
        ahead = {p: BatchLoader(PackedDataset(store, labels), bs, shuffle=True, prefetch=p) for p in (2, 0)}
        warm = interleaved({
            "same work": lambda: rate(lambda: same_work_epoch(store, transform, bs), secs),
            "loader": lambda: rate(lambda: loader, secs),
            "bare": lambda: rate(lambda: bare_epoch(f32, bs), secs),
            "threads": lambda: rate(lambda: ahead[2], secs),
            "inline": lambda: rate(lambda: ahead[0], secs),
        }, args.repeats)
        rows.append(Figure(label, warm["loader"], "same work bare: uint16 rows gathered and converted, 1 thread",
                           warm["same work"]))
        rows.append(Figure(label, warm["loader"], "bare float32 memmap read, 1 thread", warm["bare"]))
        rows.append(Figure(f"loader reading 2 batches ahead in threads (samples/s, median of {args.repeats})",
                           warm["threads"], "the same loader reading inline (prefetch 0)", warm["inline"]))
        in_ram = BatchLoader(
            MemoryDataset(torch.from_numpy(np.array(f32)), torch.from_numpy(labels)), bs, shuffle=True
        )
        rows.append(Figure(label, warm["loader"], "float32 tensors in RAM (old in_memory)", rate(lambda: in_ram, secs)))
        geotiff = BatchLoader(PatchDataset(root, small, labels[: len(small)]), bs, shuffle=True)
        rows.append(Figure(label, warm["loader"], f"GeoTIFF per sample (PatchDataset), {len(small)}",
                           rate(lambda: geotiff, secs)))
        torchgeo, why_not = torchgeo_rate(root, small, bs, secs)
        rows.append(Figure(label, warm["loader"], f"torchgeo BigEarthNet, {len(small)}", torchgeo, why_not))

        file_order = BatchLoader(PackedDataset(store, labels), bs)
        left: list[float] = []  # the fraction of the store resident after each eviction

        def cold_epochs(cold_loader: BatchLoader) -> Rate:
            return rate(lambda: cold_loader, secs, before=lambda: left.append(evict(store)))

        def evicted_first(measure: Callable[[], Rate]) -> Rate:
            left.append(evict(store))
            return measure()

        store_file = store.path / packed.PIXELS_FILE
        cold = interleaved({
            "shuffled": lambda: cold_epochs(loader),
            "file order": lambda: cold_epochs(file_order),
            "disk": lambda: evicted_first(lambda: disk_read(store_file)),
            "rows": lambda: evicted_first(lambda: disk_rows(store, loader.order(0), bs * NAMED_AHEAD)),
        }, args.repeats)
        row_bytes = store.pixels[0].nbytes
        disk = cold["disk"]
        disk_rate = Rate(disk.per_s / row_bytes, disk.per_cpu_s and disk.per_cpu_s / row_bytes, disk.load)
        disk_label = f"disk sequential read, O_DIRECT ({disk.per_s / 1e6:,.0f} MB/s), in rows/s"
        for order in ("shuffled", "file order"):
            rows.append(Figure(f"loader, packed store of {len(names)}, cold, {order} (samples/s, median)",
                               cold[order], disk_label, disk_rate))
    print(
        f"\n{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads), batch {bs}, study bands, bicubic; "
        f"store row {row_bytes / 1024:.0f} KiB (uint16); load = 1-minute load average when each figure was "
        "taken; "
        "per CPU-s: per second of this process's CPU time (its threads and packing workers)\n"
    )
    report(rows)
    print(
        f"\ncold (store evicted before every epoch; at most {max(left):.1%} of its pages left resident), medians "
        f"of {args.repeats}, load {min(r.load for r in cold.values()):.1f}-{max(r.load for r in cold.values()):.1f}:"
        f"\n  shuffled:   {cold['shuffled'].per_s:,.0f} samples/s = {cold['shuffled'].per_s / disk_rate.per_s:.2f}x "
        f"the disk's sequential rate ({disk_rate.per_s:,.0f} rows/s; goal 0.8x), "
        f"{cold['shuffled'].per_s / cold['rows'].per_s:.2f}x the disk's rate for the same rows read in the same order, "
        f"{bs * NAMED_AHEAD} at a time ({cold['rows'].per_s:,.0f} rows/s)"
        f"\n  file order: {cold['file order'].per_s:,.0f} samples/s = "
        f"{cold['file order'].per_s / disk_rate.per_s:.2f}x the disk's sequential rate"
        f"\n  what a core to itself would give (samples per CPU-second / the disk's rows/s): shuffled "
        f"{(cold['shuffled'].per_cpu_s or 0) / disk_rate.per_s:.2f}x, file order "
        f"{(cold['file order'].per_cpu_s or 0) / disk_rate.per_s:.2f}x"
    )


if __name__ == "__main__":
    main()
