"""predict's throughput: windows/s of a scene mapped end to end (streamed band reads, offset, resampling,
scaling, the model in batches, the maps written as COGs), beside a bare `torch.inference_mode()` forward
pass of the same model over as many windows already in memory, same batch, with the load average.

The scene is synthetic: per-band COGs of --side x --side 10 m pixels on a Sentinel-2 grid (UTM 33N, the
study's 10 bands at 10 and 20 m, SCL at 20 m, all clear), and the classifier the study's ResNet-18 with
random weights (speed does not depend on them). On a CUDA machine both run there.

    python benchmarks/bench_predict.py [--side 1920] [--stride 120] [--batch-size 64]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
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


def write_scene(folder: Path, side: int) -> Path:
    """Per-band COGs (B02.tif ... SCL.tif) of a clear synthetic scene `side` 10 m pixels wide."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rasters = {b: (rng.integers(100, 4000, (side * 10 // RESOLUTION_M[b],) * 2).astype(np.uint16), RESOLUTION_M[b])
               for b in STUDY_BANDS}
    rasters["SCL"] = (np.full((side // 2,) * 2, 4, np.uint8), 20)
    for band, (array, resolution) in rasters.items():
        draft = folder / f".{band}.tif"
        with rasterio.open(draft, "w", driver="GTiff", width=array.shape[1], height=array.shape[0], count=1,
                           dtype=array.dtype, crs="EPSG:32633",
                           transform=from_origin(300000, 5300040, resolution, resolution)) as dataset:
            dataset.write(array, 1)
        rasterio.shutil.copy(draft, folder / f"{band}.tif", driver="COG")
        draft.unlink()
    return folder


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--side", type=int, default=1920, help="scene side in 10 m pixels")
    p.add_argument("--stride", type=int, default=PATCH_SIZE, help="window step in 10 m pixels")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    model = IrrigationClassifier.from_scratch("resnet18", len(STUDY_BANDS)).eval().to(device)
    transform = InputTransform(STUDY_BANDS)

    with tempfile.TemporaryDirectory(prefix="bench_predict_") as tmp:
        folder = write_scene(Path(tmp) / "scene", args.side)
        out = Path(tmp) / "maps"
        out.mkdir()
        scene, clock = open_scene(str(folder)), Clock()
        with SceneReader(scene, STUDY_BANDS, DEFAULT_MASK) as reader:
            map_scene(reader, model, transform, stride=args.stride, threshold=0.5, folder=out,  # warm-up
                      batch_size=args.batch_size, device=device)
            for f in out.iterdir():
                f.unlink()
        with SceneReader(scene, STUDY_BANDS, DEFAULT_MASK) as reader:
            clock.start()
            result = map_scene(reader, model, transform, stride=args.stride, threshold=0.5, folder=out,
                               batch_size=args.batch_size, device=device)
            if device == "cuda":
                torch.cuda.synchronize()
            clock.stop()
    mapped = clock.rate(result.windows)

    shape = (args.batch_size, len(STUDY_BANDS), PATCH_SIZE, PATCH_SIZE)
    inputs = torch.randn(shape, device=device).contiguous(memory_format=torch.channels_last)
    bare = Clock()
    with torch.inference_mode():
        model(inputs)  # warm-up
        bare.start()
        for start in range(0, result.windows, args.batch_size):
            model(inputs[: min(args.batch_size, result.windows - start)])
        if device == "cuda":
            torch.cuda.synchronize()
        bare.stop()

    print(f"\n{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} CPUs, torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), {device}; scene {args.side} x {args.side} px, "
          f"stride {args.stride}: {result.windows} windows, batch {args.batch_size}, ResNet-18, study bands; "
          "load = 1-minute load average when each figure was taken; per CPU-s: per second of this process's "
          "CPU time\n")
    report([Figure(f"predict, scene {args.side} px, stride {args.stride}, {device} (windows/s)", mapped,
                   "bare inference_mode forward, same model, windows, batch", bare.rate(result.windows))])


if __name__ == "__main__":
    main()
