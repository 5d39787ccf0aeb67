"""Streaming pack rate: patches per second packed straight from BigEarthNet-S2.tar.zst (stream.stream_pack)
against decompressing and walking the same tar stream alone (stream.members reading the same members), in
one run on one machine, with the 1-minute load average beside each.

The archive is a v2 demo archive (demo.py) made into a .tar.zst as the record's (one zstd frame with its
checksum), so its band files have the real sizes and layout; it sits in the page cache, so disk reads of a
cold 63 GB file are not counted. The walk is the floor of any streaming pack (every byte is decompressed and
every member header parsed); the ratio says what reading, resampling and writing the rows add to it. It is
timed two ways: in one thread (the baseline the issue set: decompression and walk take turns) and with the
decompression in a thread of its own, as `members` and so the pack now run it. The pack is timed twice: as
it runs, and with its worker processes at nice 10, so that on 2 cores the walking process's main thread (the
pack's bound there, by the CPU figures) wins the cores it shares with them: which of the two is faster on
quiet cores decides whether the workers should run so. Walks and packs are run `--repeats` times,
alternating, and the fastest of each counts; each pack's ratio to the one-thread walk of the same repeat is
printed for each repeat too, with their median (the issue's measure: at least 0.8x).

On a busy machine the ratio measures CPU shares more than the pack, so the CPU time is split too: the
packing process's main thread (the serial part: the tar walk, gathering each patch's files and handing them
to the workers), its other threads (zstd, the pool's) and the workers'. On n free cores a pack takes at
least max(main thread, other threads, all / n) per patch; that bound, against the one-thread walk's CPU
time, is printed as the projection for 2 and 16 cores and for the whole archive (549,488 patches, every one
packed). The CPU figures are medians over the repeats, the walls the fastest.
Run: python benchmarks/bench_stream.py --patches 1000 --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from unittest import mock

import numpy as np
from figures import Clock, Figure, report

from simclr_s2.bigearthnet import packed
from simclr_s2.bigearthnet.bands import Bands
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.reader import V2_PATCHES
from simclr_s2.bigearthnet.stream import members, stream_pack, write_tar_zst

FULL_ARCHIVE = 549_488
"""Patches in BigEarthNet-S2.tar.zst (v2.0)."""


_START_WORKER = packed._start_worker


def _niced_worker(parent: int) -> None:
    """A packing worker started as the pack starts them, then lowered to nice 10."""
    _START_WORKER(parent)
    os.nice(10)


ONE_THREAD = "in one thread"
WALKS = {ONE_THREAD: False, "zstd in a thread of its own": True}
"""The walks timed, by whether `members` decompresses ahead in a thread of its own."""
PACKS = {"pack": nullcontext, "pack, workers at nice 10": lambda: mock.patch.object(packed, "_start_worker",
                                                                                _niced_worker)}
"""The packs timed: as it runs, and with its workers at nice 10 (the pool starts them with the mocked start)."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=1000, help="patches in the archive, all packed")
    p.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="packing processes")
    p.add_argument("--bands", default="study", help="bands packed (study: 10 of the 12)")
    p.add_argument("--repeats", type=int, default=2, help="runs of each: the fastest wall, the median CPU")
    args = p.parse_args()
    bands = Bands.parse(args.bands)
    print(f"{args.patches} patches, {len(bands)} bands, {args.workers} worker process(es), {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo_archive(Path(tmp) / "root", args.patches, seed=0, workers=args.workers, layout="v2")
        archive = write_tar_zst(root, V2_PATCHES, Path(tmp) / "BigEarthNet-S2.tar.zst")
        names = sorted(p.name for p in (root / V2_PATCHES).glob("*/*"))
        suffixes = tuple(f"_{band}.tif" for band in bands)
        print(f"archive: {archive.stat().st_size / 2**20:.1f} MiB compressed")
        walks: dict[str, list[Clock]] = {kind: [] for kind in WALKS}
        packs: dict[str, list[tuple[Clock, float, float]]] = {kind: [] for kind in PACKS}
        for i in range(args.repeats):
            for kind, ahead in WALKS.items():
                walk = Clock()
                walk.start()
                read = sum(len(data) for _, data in members(archive, lambda m: m.name.endswith(suffixes), ahead))
                walk.stop()
                walks[kind].append(walk)
                print(f"{kind} {walk.wall:.2f} s, load {os.getloadavg()[0]:.1f}")
            for kind, variant in PACKS.items():
                store = Path(tmp) / f"store{i}"
                pack, main, own = Clock(), time.thread_time(), time.process_time()
                with variant():
                    pack.start()
                    stream_pack(archive, names, store, bands, "b" * 64, root, workers=args.workers)
                    pack.stop()
                packs[kind].append((pack, time.thread_time() - main, time.process_time() - own))
                print(f"{kind} {pack.wall:.2f} s, load {os.getloadavg()[0]:.1f}")
                shutil.rmtree(store)
        best_walk = {kind: min(runs, key=lambda c: c.wall) for kind, runs in walks.items()}
        walk, walk_ahead = best_walk.values()
        print(f"walk: {read / 2**20:.1f} MiB of band files read from the stream in {walk.wall:.2f} s in one thread, "
              f"{walk_ahead.wall:.2f} s with the decompression in its own")
        for kind, runs in packs.items():
            ratios = [w.wall / p.wall for w, (p, _, _) in zip(walks[ONE_THREAD], runs, strict=True)]
            print(f"{kind} / one-thread walk, each repeat (walls side by side): "
                  f"{' '.join(f'{r:.2f}x' for r in ratios)}; median {np.median(ratios):.2f}x")
        best = {kind: min(runs, key=lambda r: r[0].wall) for kind, runs in packs.items()}
        walk_cpu = np.median([c.cpu for c in walks[ONE_THREAD]]) / args.patches
        for kind, runs in packs.items():  # CPU: medians of the runs (steadier than the fastest run's)
            _project(kind, walk_cpu, *(np.median(t) / args.patches for t in zip(*((m, o, c.cpu) for c, m, o in runs))))
        figures = [Figure(f"stream {kind} from .tar.zst, {args.patches} patches, {len(bands)} bands, {args.workers} "
                          "processes (patches/s)", pack.rate(args.patches), f"decompress + walk the tar stream alone, "
                          f"{walk_kind}", base.rate(args.patches))
                   for kind, (pack, _, _) in best.items() for walk_kind, base in best_walk.items()
                   if kind == "pack" or walk_kind == ONE_THREAD]
        report(figures)


def _project(kind: str, walk: float, main: float, own: float, total: float) -> None:
    """Print CPU seconds per patch and what they bound on free cores (see the module's docstring)."""
    print(f"{kind}: CPU per patch: walk in one thread {walk * 1e3:.2f} ms; pack {total * 1e3:.2f} ms, of which the "
          f"packing process's main thread {main * 1e3:.2f} ms, its other threads {(own - main) * 1e3:.2f} ms and the "
          f"workers {(total - own) * 1e3:.2f} ms")
    for cores in (2, 16):
        bounds = {"the main thread": main, "the other threads": own - main, f"all the CPU / {cores}": total / cores}
        by, bound = max(bounds.items(), key=lambda kv: kv[1])
        print(f"  on {cores} free cores: at best {walk / bound:.2f}x the walk (bound by {by}); the whole archive in "
              f"{FULL_ARCHIVE * bound / 3600:.2f} h")


if __name__ == "__main__":
    main()
