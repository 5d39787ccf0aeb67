"""Streaming pack rate: patches per second packed straight from BigEarthNet-S2.tar.zst (stream.stream_pack)
against decompressing and walking the same tar stream alone (stream.members reading the same members), in
one run on one machine, with the 1-minute load average beside each.

The archive is a v2 demo archive (demo.py) made into a .tar.zst as the record's (one zstd frame with its
checksum), so its band files have the real sizes and layout; it sits in the page cache, so disk reads of a
cold 63 GB file are not counted. The walk is the floor of any streaming pack (every byte is decompressed and
every member header parsed); the ratio says what reading, resampling and writing the rows add to it. It is
timed two ways: in one thread (the baseline the issue set: decompression and walk take turns) and with the
decompression in a thread of its own, as `members` and so the pack run it. The pack runs as the product
runs it by default (`--workers 0`: one process per core, the walking process counted, so on 2 cores the walk
and one decoding process). Walks and packs are run `--repeats` times, alternating; each pack's ratio to the
one-thread walk of the same repeat is printed, with their median (the issue's measure: at least 0.8x).

On a busy machine the ratio measures CPU shares more than the pack, so the CPU time is split too: the
packing process's main thread (the serial part: the tar walk, gathering each patch's files and handing them
to the workers), its other threads (zstd, the pool's) and the workers'. On n free cores a pack takes at
least max(main thread, other threads, all / n) per patch; that bound, against the one-thread walk's CPU
time, is printed as the projection for 2 and 16 cores and for the whole archive (549,488 patches, every one
packed). The CPU figures are medians over the repeats, the walls the fastest.
Run: python benchmarks/bench_stream.py --patches 2000 --repeats 5
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from figures import Clock, Figure, report

from simclr_s2.bigearthnet.bands import Bands
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.reader import V2_PATCHES
from simclr_s2.bigearthnet.stream import members, stream_pack, write_tar_zst

FULL_ARCHIVE = 549_488
"""Patches in BigEarthNet-S2.tar.zst (v2.0)."""

ONE_THREAD = "in one thread"
WALKS = {ONE_THREAD: False, "zstd in a thread of its own": True}
"""The walks timed, by whether `members` decompresses ahead in a thread of its own."""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patches", type=int, default=1000, help="patches in the archive, all packed")
    p.add_argument("--workers", type=int, default=0,
                   help="packing processes, the walking one counted (stream_pack's workers; 0 = one per core)")
    p.add_argument("--bands", default="study", help="bands packed (study: 10 of the 12)")
    p.add_argument("--repeats", type=int, default=3, help="runs of each: the fastest wall, the median CPU")
    args = p.parse_args()
    bands = Bands.parse(args.bands)
    cores = len(os.sched_getaffinity(0))
    print(f"{args.patches} patches, {len(bands)} bands, workers={args.workers} (0 = one process per core), "
          f"{cores} cores")
    with tempfile.TemporaryDirectory() as tmp:
        root = write_demo_archive(Path(tmp) / "root", args.patches, seed=0, workers=cores, layout="v2")
        archive = write_tar_zst(root, V2_PATCHES, Path(tmp) / "BigEarthNet-S2.tar.zst")
        names = sorted(p.name for p in (root / V2_PATCHES).glob("*/*"))
        suffixes = tuple(f"_{band}.tif" for band in bands)
        print(f"archive: {archive.stat().st_size / 2**20:.1f} MiB compressed")
        walks: dict[str, list[Clock]] = {kind: [] for kind in WALKS}
        packs: list[tuple[Clock, float, float]] = []
        for i in range(args.repeats):
            for kind, ahead in WALKS.items():
                walk = Clock()
                walk.start()
                read = sum(len(data) for _, data in members(archive, lambda m: m.name.endswith(suffixes), ahead))
                walk.stop()
                walks[kind].append(walk)
                print(f"walk, {kind}: {walk.wall:.2f} s, load {os.getloadavg()[0]:.1f}")
            store = Path(tmp) / f"store{i}"
            pack, main, own = Clock(), time.thread_time(), time.process_time()
            pack.start()
            stream_pack(archive, names, store, bands, "b" * 64, root, workers=args.workers)
            pack.stop()
            packs.append((pack, time.thread_time() - main, time.process_time() - own))
            print(f"pack: {pack.wall:.2f} s, {walks[ONE_THREAD][-1].wall / pack.wall:.2f}x the one-thread walk, "
                  f"load {os.getloadavg()[0]:.1f}")
            shutil.rmtree(store)
        best_walk = {kind: min(runs, key=lambda c: c.wall) for kind, runs in walks.items()}
        walk, walk_ahead = best_walk.values()
        print(f"walk: {read / 2**20:.1f} MiB of band files read from the stream in {walk.wall:.2f} s in one thread, "
              f"{walk_ahead.wall:.2f} s with the decompression in its own")
        ratios = [w.wall / p.wall for w, (p, _, _) in zip(walks[ONE_THREAD], packs, strict=True)]
        print(f"pack / one-thread walk, each repeat (walls side by side): {' '.join(f'{r:.2f}x' for r in ratios)}; "
              f"median {np.median(ratios):.2f}x")
        walk_cpu = np.median([c.cpu for c in walks[ONE_THREAD]]) / args.patches
        # CPU: medians of the runs (steadier than the fastest run's)
        _project(walk_cpu, *(np.median(t) / args.patches for t in zip(*((m, o, c.cpu) for c, m, o in packs))))
        best = min(packs, key=lambda r: r[0].wall)[0]
        report([Figure(f"stream pack from .tar.zst, {args.patches} patches, {len(bands)} bands, workers="
                       f"{args.workers} (patches/s)", best.rate(args.patches),
                       f"decompress + walk the tar stream alone, {kind}", base.rate(args.patches))
                for kind, base in best_walk.items()])


def _project(walk: float, main: float, own: float, total: float) -> None:
    """Print CPU seconds per patch and what they bound on free cores (see the module's docstring)."""
    print(f"CPU per patch: walk in one thread {walk * 1e3:.2f} ms; pack {total * 1e3:.2f} ms, of which the "
          f"packing process's main thread {main * 1e3:.2f} ms, its other threads {(own - main) * 1e3:.2f} ms and the "
          f"workers {(total - own) * 1e3:.2f} ms")
    for cores in (2, 16):
        bounds = {"the main thread": main, "the other threads": own - main, f"all the CPU / {cores}": total / cores}
        by, bound = max(bounds.items(), key=lambda kv: kv[1])
        print(f"  on {cores} free cores: at best {walk / bound:.2f}x the walk (bound by {by}); the whole archive in "
              f"{FULL_ARCHIVE * bound / 3600:.2f} h")


if __name__ == "__main__":
    main()
