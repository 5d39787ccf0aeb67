"""Index throughput on a v2.0 archive (bands checked, reference maps decoded) against a v1.0 archive of the
same patches (bands checked, JSON parsed), in one run on one machine, and the ratio of the two.

Both archives are demo archives of one seed (demo.py), so they hold the same pixels in the two layouts.
Each index is built `--repeats` times, v1 and v2 alternating, and the fastest build of each counts; beside
each figure stands the 1-minute load average (os.getloadavg) when it finished, since other work on a
shared machine slows wall-clock rates. The rate per CPU-second (this process and its finished workers)
hardly depends on that load. The official v1.0 lists are loaded before the clock starts, as they are
amortised over the real 590,326 patches. The archives sit in the page cache after writing, so disk reads
of a cold real archive are not counted. A last line times one reference map decoded by geotiff.py (what
the index does) against rasterio.
Run: python benchmarks/bench_index.py --patches 3000 --workers 2
"""

from __future__ import annotations

import argparse
import os
import tempfile
import timeit
from pathlib import Path

import rasterio
from figures import Clock, Figure, Rate, load_average, report

from simclr_s2.bigearthnet import official
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.geotiff import read_geotiff_uint16
from simclr_s2.bigearthnet.index import build_index, load_index
from simclr_s2.bigearthnet.reader import reference_map_file


def _build(archive: Path, out: Path, workers: int) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, 1-minute load average at its end) of one index build."""
    clock = Clock()
    clock.start()
    result = build_index(archive, out, workers=workers)
    clock.stop()
    assert result.n_rejected == 0, f"{archive}: {result.n_rejected} patches rejected"
    return clock.wall, clock.cpu, load_average()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=3000, help="patches in each archive")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="index processes")
    p.add_argument("--repeats", type=int, default=3, help="builds of each index; the fastest counts")
    args = p.parse_args()
    print(f"{args.patches} patches, {args.workers} worker process(es), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        archives = {
            layout: write_demo_archive(
                Path(tmp) / layout, args.patches, seed=0, workers=args.workers, layout=layout
            )
            for layout in ("v1", "v2")
        }
        for load_list in (official.snow_patches, official.cloud_shadow_patches, official.official_split):
            load_list()  # cached per process: the v1.0 index reads them in this one
        official.countries()
        runs: dict[str, list[tuple[float, float, float]]] = {"v1": [], "v2": []}
        for _ in range(args.repeats):  # alternating, so a burst of other work hits both alike
            for layout, archive in archives.items():
                runs[layout].append(_build(archive, Path(tmp) / f"{layout}.parquet", args.workers))
        rates, figures = {}, {}
        for layout, label in (
            ("v1", "v1.0 index (JSON + band headers)"),
            ("v2", "v2.0 index (maps + band headers)"),
        ):
            wall, cpu, load = min(runs[layout])
            rates[layout] = args.patches / wall
            figures[layout] = Rate(rates[layout], args.patches / cpu, load)
            print(
                f"{label:<36} {rates[layout]:>7.0f} patches/s wall (load {load:.2f})"
                f" {args.patches / cpu:>7.0f}/s per CPU-s",
                flush=True,
            )
        cpu_ratio = min(runs["v1"])[1] / min(runs["v2"])[1]
        print(f"v2 / v1: {rates['v2'] / rates['v1']:.2f} wall, {cpu_ratio:.2f} per CPU-second")
        report([Figure(f"index v2.0 (reference maps + band headers), {args.patches} patches, "
                       f"{args.workers} processes (patches/s)", figures["v2"],
                       "v1.0 index (JSON + band headers)", figures["v1"])])

        name = load_index(Path(tmp) / "v2.parquet")["name"].iloc[0]
        path = str(reference_map_file(archives["v2"], name))

        def with_rasterio() -> None:
            with rasterio.open(path) as ds:
                ds.read(1)

        n = 2000
        ours = timeit.timeit(lambda: read_geotiff_uint16(path), number=n) / n
        theirs = timeit.timeit(with_rasterio, number=n // 4) / (n // 4)
        decode = f"geotiff.py {ours * 1e6:.0f} us, rasterio {theirs * 1e6:.0f} us"
        print(f"one reference map: {decode} (load {load_average():.2f})")


if __name__ == "__main__":
    main()
