"""Patches/s for writing a demo archive, building its index (header check and full raster check) and
reading patches with the GeoTIFF reader, on a generated archive of a chosen size. Packing and the data
path at the study's scale, on copies of real patches, are benchmarks/bench_loader.py's table.

The index rate is given for the scan alone: the official lists (about 2 s to decompress, once per
process) are loaded before the clock starts, as they would be amortised over the real 590,326 patches.
The archive sits in the page cache after writing, so disk reads of a cold real archive are not counted.
Besides wall-clock rates it prints the rate per CPU-second (this process and its finished workers), which
stays meaningful on a machine busy with other work: N cores give about N times that rate.
Run: python benchmarks/bench_data.py --patches 2000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from figures import Clock

from simclr_s2.bigearthnet import official
from simclr_s2.bigearthnet.bands import STUDY_BANDS
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import build_index
from simclr_s2.bigearthnet.reader import read_patch


@contextmanager
def _timed(label: str, n: int) -> Iterator[None]:
    clock = Clock()
    clock.start()
    yield
    clock.stop()
    rate = clock.rate(n)
    per_cpu = "-" if rate.per_cpu_s is None else f"{rate.per_cpu_s:.0f}"
    print(f"{label:<48} {n:>6} patches {clock.wall:>7.2f} s {rate.per_s:>7.0f}/s wall {per_cpu:>7}/s per CPU-s",
          flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=2000, help="size of the generated archive")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="processes")
    p.add_argument("--read", type=int, default=300, help="patches to read with read_patch (one process)")
    p.add_argument("--full-check", type=int, default=300, help="patches to index with check_rasters=True")
    args = p.parse_args()
    print(f"{args.workers} worker process(es), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "archive"
        with _timed("write_demo_archive", args.patches):
            write_demo_archive(root, n_patches=args.patches, seed=0, workers=args.workers)

        start = time.perf_counter()
        (
            official.snow_patches(),
            official.cloud_shadow_patches(),
            official.official_split(),
            official.countries(),
        )
        print(f"official lists loaded once per process in {time.perf_counter() - start:.2f} s")

        with _timed("build_index (TIFF header check, default)", args.patches):
            build_index(root, Path(tmp) / "index.parquet", workers=args.workers)

        names = sorted(os.listdir(root))
        small = Path(tmp) / "small"
        small.mkdir()
        for name in names[: args.full_check]:
            (small / name).symlink_to(root / name)
        with _timed("build_index (check_rasters=True)", args.full_check):
            build_index(small, Path(tmp) / "full.parquet", workers=args.workers, check_rasters=True)

        for resampling in ("bicubic", "nearest"):
            with _timed(f"read_patch (10 study bands, {resampling}, 1 process)", args.read):
                for name in names[: args.read]:
                    read_patch(root / name, STUDY_BANDS, resampling)


if __name__ == "__main__":
    main()
