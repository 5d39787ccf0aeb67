"""predict's throughput and memory: windows/s of a scene mapped end to end (streamed band reads, offset,
resampling, scaling, the model in batches, the maps written as COGs), beside a bare `torch.inference_mode()`
forward pass of the same model over as many windows already in memory (at most BARE_WINDOWS: its rate is
steady), same batch, half before the mapping and half after, with the load average; and the peak resident
memory of the process against predict's 2 GB goal.

The scene is synthetic: per-band COGs of --side x --height 10 m pixels on a Sentinel-2 grid (UTM 33N, the
study's 10 bands at 10 and 20 m, SCL at 20 m, all clear), written by a child process so that the peak
memory is the mapping's; the classifier is the study's ResNet-18 with random weights (speed does not
depend on them). On a CUDA machine both run there. --full maps a whole 10,980 x 10,980 px tile (8,281
windows: about an hour on 2 loaded cores); memory depends on the width, which --side 10980 --height 1200
gives in a few minutes.

    python benchmarks/bench_predict.py [--side 1920] [--height SIDE] [--full] [--stride 120] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import rasterio
import rasterio.shutil
import torch
from figures import Clock, Figure, report
from rasterio.transform import from_origin

from simclr_s2.bigearthnet.bands import PATCH_SIZE, RESOLUTION_M, STUDY_BANDS, InputTransform
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.scenes.inference import map_scene
from simclr_s2.scenes.product import open_scene
from simclr_s2.scenes.scl import DEFAULT_MASK
from simclr_s2.scenes.windows import SceneReader

TILE = 10980  # a Sentinel-2 tile's side in 10 m pixels
GOAL_MB = 2048
BARE_WINDOWS = 1024


def write_scene(folder: Path, width: int, height: int) -> Path:
    """Per-band COGs (B02.tif ... SCL.tif) of a clear synthetic scene of `width` x `height` 10 m pixels."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    resolutions = {**{b: RESOLUTION_M[b] for b in STUDY_BANDS}, "SCL": 20}
    for band, resolution in resolutions.items():
        shape = (height * 10 // resolution, width * 10 // resolution)
        array = np.full(shape, 4, np.uint8) if band == "SCL" else rng.integers(100, 4000, shape, np.uint16)
        draft = folder / f".{band}.tif"
        with rasterio.open(draft, "w", driver="GTiff", width=shape[1], height=shape[0], count=1, dtype=array.dtype,
                           crs="EPSG:32633", transform=from_origin(300000, 5300040, resolution, resolution)) as dataset:
            dataset.write(array, 1)
        del array
        rasterio.shutil.copy(draft, folder / f"{band}.tif", driver="COG")
        draft.unlink()
    return folder


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=1920, help="scene width in 10 m pixels")
    p.add_argument("--height", type=int, help="scene height in 10 m pixels (default: --side)")
    p.add_argument("--full", action="store_true", help=f"a whole tile: {TILE} x {TILE} px")
    p.add_argument("--stride", type=int, default=PATCH_SIZE, help="window step in 10 m pixels")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    width = TILE if args.full else args.side
    height = TILE if args.full else args.height or args.side
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", len(STUDY_BANDS)).eval().to(device)
    transform = InputTransform(STUDY_BANDS)
    shape = (args.batch_size, len(STUDY_BANDS), PATCH_SIZE, PATCH_SIZE)
    inputs = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)

    def bare_pass(windows: int, clock: Clock) -> None:
        with torch.inference_mode():
            clock.start()
            for start in range(0, windows, args.batch_size):
                model(inputs[: min(args.batch_size, windows - start)])
            if device == "cuda":
                torch.cuda.synchronize()
            clock.stop()

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        with ProcessPoolExecutor(1) as child:
            folder = child.submit(write_scene, Path(tmp) / "scene", width, height).result()
        out = Path(tmp) / "maps"
        out.mkdir()
        scene, clock, bare = open_scene(str(folder)), Clock(), Clock()
        with SceneReader(scene, STUDY_BANDS, DEFAULT_MASK) as reader:
            windows = len(reader.grid.window_rows(args.stride)) * len(reader.grid.window_columns(args.stride))
            bare_pass(min(windows, args.batch_size), Clock())  # warm-up
            baseline = min(windows, BARE_WINDOWS)
            bare_pass(baseline // 2, bare)
            before = peak_rss_mb()
            clock.start()
            result = map_scene(reader, model, transform, stride=args.stride, threshold=0.5, folder=out,
                               batch_size=args.batch_size, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            clock.stop()
            peak = peak_rss_mb()
        bare_pass(baseline - baseline // 2, bare)

    print(f"\n{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), {device}; scene {width} x {height} px, "
          f"stride {args.stride}: {result.windows} windows, batch {args.batch_size}, ResNet-18, study bands; "
          "load = 1-minute load average when each figure was taken; per CPU-s: per second of this process's "
          "CPU time\n")
    print(f"peak resident memory: {peak:,.0f} MB (goal {GOAL_MB:,} MB; {before:,.0f} MB before mapping: "
          f"torch, the model, the bare passes), load average {os.getloadavg()[0]:.2f}\n")
    report([Figure(f"predict, scene {width} x {height} px, stride {args.stride}, {device} (windows/s)",
                   clock.rate(result.windows), "bare inference_mode forward, same model, windows, batch",
                   bare.rate(baseline))])


if __name__ == "__main__":
    main()
