"""Samples/s of the data paths on the same demo patches, in one run: GeoTIFFs vs packed store vs bare memory.

    python benchmarks/bench_loader.py [--patches 300] [--batch-size 32] [--bands study] [--resampling bicubic]
                                      [--threads N]

(a) per-sample GeoTIFF reading the way common BigEarthNet loaders do it (torchgeo's BigEarthNet:
    glob the patch folder, rasterio-open every band file, read it resampled to 120 x 120 by GDAL),
    through a torch DataLoader with 0 and 2 worker processes; plus this project's own direct path.
(b) the packed store through `BatchLoader` (memory-mapped, page cache warm), and with the finished
    tensors held in memory (`in_memory`).
(c) a bare read of the same bytes from numpy arrays already in RAM: the same gather + `stack_bands`
    + `normalise` with no loader around it; and the gather alone, without resampling.
"""

from __future__ import annotations

import argparse
import glob
import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from torch.utils.data import DataLoader, Dataset

from simclr_s2.bigearthnet.bands import normalise, resolve_bands, stack_bands
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.packed import group_bands, pack
from simclr_s2.data import BatchLoader, PackedDataset, PatchDataset, materialise


class GeoTiffPerSample(Dataset):
    """The common loader: a glob and one rasterio open per band per sample, GDAL resampling to 120 x 120."""

    def __init__(self, root: Path, names: list[str], labels: np.ndarray, bands: tuple[str, ...]) -> None:
        self.root, self.names, self.labels, self.bands = root, names, labels, bands

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        folder = self.root / self.names[i]
        paths = {Path(p).stem.rsplit("_", 1)[1]: p for p in glob.glob(str(folder / "*.tif"))}
        images = []
        for band in self.bands:
            with rasterio.open(paths[band]) as ds:
                images.append(
                    ds.read(1, out_shape=(120, 120), out_dtype="int32", resampling=Resampling.bilinear)
                )
        x = normalise(torch.from_numpy(np.stack(images)).float(), self.bands)
        return x, torch.tensor(self.labels[i], dtype=torch.float32)


def _cpu_seconds() -> float:
    """CPU time of this process (all threads) and of its reaped children (DataLoader workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def throughput(batches: Callable[[], Iterable], min_seconds: float) -> tuple[float, float]:
    """(samples per wall second, samples per CPU second) over whole epochs, repeated for `min_seconds`.

    The second figure barely moves when other jobs share the machine; the first is what training sees.
    """
    n, start, cpu = 0, time.perf_counter(), _cpu_seconds()
    while True:
        for x, _ in batches():
            n += len(x)
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds:
            return n / elapsed, n / (_cpu_seconds() - cpu)


def bare_epochs(arrays: dict[int, np.ndarray], bands: tuple[str, ...], batch: int, method: str | None):
    """(c): one shuffled epoch straight from in-RAM arrays; method None stops after the gather."""
    groups = group_bands(bands)
    order = np.random.default_rng(0).permutation(len(next(iter(arrays.values()))))
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        native = {}
        for res, arr in arrays.items():
            rows = arr[idx]
            native.update({b: rows[:, k] for k, b in enumerate(groups[res])})
        if method is None:
            yield idx, None  # the gathers above are the work measured
        else:
            yield torch.from_numpy(normalise(stack_bands(native, bands, method), bands)), None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--bands", default="study")
    p.add_argument("--resampling", default="bicubic")
    p.add_argument("--seconds", type=float, default=3.0, help="minimum time per measurement")
    p.add_argument(
        "--threads", type=int, default=0, help="torch threads in this process (0: torch's default)"
    )
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    bands, bs, secs = resolve_bands(args.bands), args.batch_size, args.seconds

    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo_archive(Path(tmp) / "archive", n_patches=args.patches, seed=0)
        names = sorted(d.name for d in root.iterdir())
        labels = np.random.default_rng(0).integers(0, 2, len(names)).astype(np.float32)
        t = time.perf_counter()
        store = pack(root, names, Path(tmp) / "store", bands, "bench", workers=None)
        pack_s = time.perf_counter() - t
        ram = {res: np.array(a) for res, a in store.arrays.items()}
        generator = torch.Generator().manual_seed(0)

        def common(workers: int) -> DataLoader:
            ds = GeoTiffPerSample(root, names, labels, bands)
            return DataLoader(ds, batch_size=bs, shuffle=True, num_workers=workers, generator=generator)

        packed = BatchLoader(PackedDataset(store, labels, resampling=args.resampling), bs, shuffle=True)
        t = time.perf_counter()
        memory = BatchLoader(
            materialise(PackedDataset(store, labels, resampling=args.resampling)), bs, shuffle=True
        )
        load_s = time.perf_counter() - t
        rows = [
            ("a0", "GeoTIFF per sample, torch DataLoader, num_workers=0", lambda: common(0)),
            ("a2", "GeoTIFF per sample, torch DataLoader, num_workers=2", lambda: common(2)),
            (
                "a'",
                "GeoTIFF per sample, this project's direct path (PatchDataset)",
                lambda: BatchLoader(
                    PatchDataset(root, names, labels, bands, args.resampling), bs, shuffle=True
                ),
            ),
            ("b", "packed store (memory-mapped) through BatchLoader", lambda: packed),
            ("b_mem", "packed store, finished tensors in memory (in_memory)", lambda: memory),
            (
                "c",
                "bare: in-RAM arrays, same gather + resample + normalise",
                lambda: bare_epochs(ram, bands, bs, args.resampling),
            ),
            ("c_gather", "bare: in-RAM gather only, no resample", lambda: bare_epochs(ram, bands, bs, None)),
        ]
        results = {}
        for key, label, make in rows:
            results[key] = (label, throughput(make, secs))

    print(
        f"\nmachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch threads "
        f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f} at the end; torch {torch.__version__}"
    )
    print(
        f"{args.patches} demo patches, bands {','.join(bands)}, {args.resampling}, batch {bs}; "
        f"packing took {pack_s:.1f} s ({args.patches / pack_s:.0f} patches/s), "
        f"loading finished tensors into memory {load_s:.2f} s\n"
    )
    print("| path | samples/s | samples per CPU-s |\n|---|---:|---:|")
    for key, (label, (rate, per_cpu)) in results.items():
        print(f"| ({key}) {label} | {rate:,.0f} | {per_cpu:,.0f} |")
    r = {k: v[1][0] for k, v in results.items()}
    c = {k: v[1][1] for k, v in results.items()}
    for name, v in (("samples/s", r), ("per CPU-s", c)):
        print(
            f"{name:>10}: b/a0 = {v['b'] / v['a0']:.1f}x   b/a2 = {v['b'] / v['a2']:.1f}x   "
            f"b_mem/a0 = {v['b_mem'] / v['a0']:.0f}x   c/b = {v['c'] / v['b']:.2f}x"
        )


if __name__ == "__main__":
    main()
