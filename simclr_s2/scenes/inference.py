"""A scene through the classifier, window row by window row: a window with any masked pixel is not scored
(BigEarthNet's patches, as this project uses them, hold no cloud, shadow or snow: such a window is outside
what the model learnt), the others go to the model in batches, read one batch ahead in a background
thread (decoding and resampling release the GIL while the model runs).

With stride 120 the windows tile the scene and the maps have one cell per window (1.2 km). With a smaller
stride a 10 m pixel's probability is the mean over the scored windows covering it, and the maps are at
10 m: rows are written as soon as no later window can cover them, so memory holds 120 rows of the scene's
width whatever its height. Masked pixels, and pixels no scored window covers, are no data."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from rasterio.transform import Affine
from tqdm import tqdm

from simclr_s2 import faults
from simclr_s2.bigearthnet.bands import PATCH_SIZE, InputTransform
from simclr_s2.scenes.maps import MapWriter, Tally
from simclr_s2.scenes.windows import SceneReader

T = TypeVar("T")
_END = object()


@dataclass(frozen=True)
class Batch:
    """Windows of one window row (`index`, at 10 m row `y`): DN of the clean ones at columns `xs`; `last`
    when the row has no more; `windows`: how many windows, scored or not, it accounts for (progress)."""

    index: int
    y: int
    masked: np.ndarray  # the row's 120 x width mask
    xs: list[int]
    dn: np.ndarray | None
    last: bool
    windows: int


def _batches(reader: SceneReader, stride: int, batch_size: int) -> Iterator[Batch]:
    columns = reader.grid.window_columns(stride)
    for index, y in enumerate(reader.grid.window_rows(stride)):
        masked = reader.masked(y, y + PATCH_SIZE)
        clean = [x for x in columns if not masked[:, x:x + PATCH_SIZE].any()]
        starts = range(0, len(clean), batch_size) or range(1)
        for start in starts:
            xs = clean[start:start + batch_size]
            last = start == starts[-1]
            yield Batch(index, y, masked, xs, reader.windows(y, xs) if xs else None, last,
                        len(xs) + (len(columns) - len(clean) if last else 0))


def ahead(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, each produced in one background thread up to `depth` items before it is asked for."""
    with ThreadPoolExecutor(1, thread_name_prefix="scene-reader") as pool:
        pending = deque(pool.submit(next, items, _END) for _ in range(depth))
        try:
            while (item := pending.popleft().result()) is not _END:
                pending.append(pool.submit(next, items, _END))
                yield item
        finally:
            for future in pending:
                future.cancel()


@torch.inference_mode()
def score(model: torch.nn.Module, inputs: np.ndarray, device: str) -> np.ndarray:
    """Probabilities of a batch of model inputs, as `train.predict` computes them (channels_last, float32)."""
    x = torch.from_numpy(inputs).to(device).contiguous(memory_format=torch.channels_last)
    return torch.sigmoid(model(x).float()).cpu().numpy()


class _Coverage:
    """Sums and counts of the scored windows' probabilities over the 120 rows the current window row covers;
    rows leave from the top once final."""

    def __init__(self, width: int) -> None:
        self.sum = np.zeros((PATCH_SIZE, width), np.float64)
        self.count = np.zeros((PATCH_SIZE, width), np.int32)

    def add(self, xs: list[int], probabilities: np.ndarray) -> None:
        for x, p in zip(xs, probabilities, strict=True):
            self.sum[:, x:x + PATCH_SIZE] += p
            self.count[:, x:x + PATCH_SIZE] += 1

    def take(self, n: int) -> np.ndarray:
        """float32 (n, width) means of the top `n` rows (NaN where no window covered them), then shift."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(self.count[:n] > 0, self.sum[:n] / self.count[:n], np.nan).astype(np.float32)
        for a in (self.sum, self.count):
            a[:PATCH_SIZE - n] = a[n:]
            a[PATCH_SIZE - n:] = 0
        return mean


@dataclass(frozen=True)
class Result:
    tally: Tally
    windows: int
    scored: int
    maps: list[Path]
    resolution_m: int


def map_scene(reader: SceneReader, model: torch.nn.Module, transform: InputTransform, *, stride: int,
              threshold: float, folder: Path, batch_size: int, device: str) -> Result:
    """Score every clean window of the scene and write the maps into `folder`."""
    grid = reader.grid
    reader.check_stride(stride)
    model.eval().to(device)
    rows, columns = grid.window_rows(stride), grid.window_columns(stride)
    fine = stride < PATCH_SIZE
    width, height = _cells(columns), _cells(rows)
    maps = MapWriter(folder, grid.crs, grid.transform, grid.width, grid.height, threshold) if fine else \
        MapWriter(folder, grid.crs, grid.transform @ Affine.scale(PATCH_SIZE), width, height, threshold)
    tally, coverage, cells, scored = Tally(threshold), _Coverage(grid.width), np.full(width, np.nan), 0
    try:
        with tqdm(total=len(rows) * len(columns), unit="window", desc=f"predict {reader.scene.id}",
                  disable=None) as bar:
            for batch in ahead(_batches(reader, stride, batch_size)):
                if batch.dn is not None:
                    p = score(model, transform(batch.dn, out=batch.dn), device)
                    coverage.add(batch.xs, p)
                    if not fine:
                        cells[[x // PATCH_SIZE for x in batch.xs]] = p
                    scored += len(p)
                bar.update(batch.windows)
                if not batch.last:
                    continue
                if not fine:
                    maps.write(batch.index, cells[None].astype(np.float32))
                    cells[:] = np.nan
                n = PATCH_SIZE if batch.index == len(rows) - 1 else stride
                _final(coverage.take(n), batch.masked[:n], batch.y, tally, maps if fine else None)
                faults.point("map_row", batch.index)  # a run killed with its draft maps half written
        tail = rows[-1] + PATCH_SIZE if rows else 0
        if tail < grid.height:  # rows below the last window row: no window covers them
            masked = reader.masked(tail, grid.height)
            _final(np.full(masked.shape, np.nan, np.float32), masked, tail, tally, maps if fine else None)
        paths = maps.finish()
    finally:
        maps.close()
    return Result(tally, len(rows) * len(columns), scored, paths, 10 if fine else 10 * PATCH_SIZE)


def _cells(windows: range) -> int:
    """Cells of a 1.2 km map along a side: one a window, and one of no data covering a scene narrower than a
    window (GDAL makes no map of 0 cells; a cell row never written is filled with the maps' no data)."""
    return max(len(windows), 1)


def _final(probability: np.ndarray, masked: np.ndarray, row: int, tally: Tally, maps: MapWriter | None) -> None:
    """Rows that no later window covers: masked pixels to no data, counted, and written at 10 m."""
    probability[masked] = np.nan
    tally.add(probability, masked)
    if maps is not None:
        maps.write(row, probability)
