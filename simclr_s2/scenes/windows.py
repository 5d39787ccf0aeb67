"""A scene cut into patch-sized windows, read as the archive would have them.

The windows are 120 x 120 px on the scene's 10 m grid, `stride` px apart, whole windows only (a strip
narrower than a window at the right and bottom edges is not scored). A window's pixels are what the
archive pipeline makes of a patch: each band's native pixels under the window, its DN offset added
(clipped at 0, as the archive's uint16 values were before the offset existed), and the 20 m and 60 m
bands resampled to 120 x 120 with the archive's own function (`bands.stack_bands`). That is exact only when
a window starts on a native pixel of every band, so the stride must be a multiple of the coarsest band's
pixel (2 for 20 m bands, 6 for 60 m ones).

Reading is streamed: a band is read in strips of one window row (all bands, the full width: memory bounded
by the scene's width, a few tens of MB for a 10,980 px tile), and a window row that overlaps the previous
one reads only its new rows. GDAL's block cache is bounded while a scene is open (GDAL_CACHE_BYTES): left at
its default (5 % of the machine's memory) it kept every block of a tile read once, 1.4 GB of a 10,980 px
tile on a 23 GB machine, past predict's 2 GB goal."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Self

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.errors import RasterioError
from rasterio.io import DatasetReader
from rasterio.transform import Affine
from rasterio.windows import Window

from simclr_s2.bigearthnet.bands import PATCH_SIZE, RESOLUTION_M, stack_bands
from simclr_s2.scenes.product import SCL, Scene, SceneError

GRID_M = 10
RESAMPLING = "bicubic"  # the archive's (bands.stack_bands' default, every loader's)
NODATA_DN = 0  # L2A's NODATA special value (MTD_MSIL2A.xml Special_Values), the v2 archive's band nodata
GDAL_CACHE_BYTES = 256 * 2**20
"""Enough for the blocks under two window rows of every band of a 10,980 px tile (a block row of 512 x 512
COG blocks: 11.5 MB a 10 m band), so no block is decoded twice; reading once, more holds nothing useful."""


@dataclass(frozen=True)
class Grid:
    """The scene's 10 m grid: the maps' grid."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    def offsets(self, size: int, stride: int) -> range:
        return range(0, size - PATCH_SIZE + 1, stride)

    def window_rows(self, stride: int) -> range:
        return self.offsets(self.height, stride)

    def window_columns(self, stride: int) -> range:
        return self.offsets(self.width, stride)


class _Rows:
    """One band's rows read top to bottom: a request overlapping the previous one reads only its new rows."""

    def __init__(self, where: str, dataset: DatasetReader) -> None:
        self.where, self.dataset, self.start = where, dataset, 0  # where: the band and its file, for messages
        self.rows = np.empty((0, dataset.width), dataset.dtypes[0])

    def read(self, start: int, stop: int) -> np.ndarray:
        kept = self.rows[start - self.start:] if self.start <= start < self.start + len(self.rows) else self.rows[:0]
        first = start + len(kept)
        fresh = self._read(first, stop) if stop > first else self.rows[:0]
        self.rows, self.start = np.concatenate([kept[: stop - start], fresh]), start
        return self.rows

    def _read(self, first: int, stop: int) -> np.ndarray:
        """Rows first..stop of the file: one that is damaged, cut short (a partial download) or unreachable is
        named in one line with GDAL's first error ("...got 6720 bytes, expected 7200"), not rasterio's last."""
        try:
            return self.dataset.read(1, window=Window(0, first, self.dataset.width, stop - first))
        except RasterioError as error:
            cause: BaseException = error
            while cause.__cause__ is not None:
                cause = cause.__cause__
            reason = str(cause).partition("\n")[0]
            raise SceneError(f"{self.where}: cannot read its rows {first}..{stop - 1} ({reason}); expected a whole "
                             "readable file: fetch it again") from None


class SceneReader:
    """The scene's bands (those of the model, and SCL when `mask` names classes), open for the length of a
    `with` block, checked against each other: one CRS, one extent, every band at its native resolution."""

    def __init__(self, scene: Scene, bands: Sequence[str], mask: Sequence[int] = ()) -> None:
        self.scene, self.bands, self.mask_classes = scene, tuple(bands), np.asarray(mask, dtype=np.int64)
        needed = [*self.bands, *([SCL] if len(mask) else [])]
        missing = [b for b in needed if b not in scene.bands]
        if missing:
            why = " (mask=none maps without it)" if missing == [SCL] else ""
            raise SceneError(f"scene: {scene.id} ({scene.form}) has no {', '.join(missing)}{why}; the model "
                             f"reads {','.join(self.bands)}; found {', '.join(sorted(scene.bands)) or 'no band'}")
        self._stack = ExitStack()
        try:
            self._stack.enter_context(rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_BYTES))
            self.datasets = {b: self._stack.enter_context(self._open(scene.bands[b])) for b in needed}
            self.grid = self._check()
        except BaseException:
            self._stack.close()
            raise
        self._rows = {b: _Rows(self._where(b), d) for b, d in self.datasets.items()}
        self.factors = {b: round(d.res[0] / GRID_M) for b, d in self.datasets.items()}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self, path: str) -> DatasetReader:
        try:
            return rasterio.open(path)
        except RasterioError as error:
            raise SceneError(f"scene: cannot read {path}: {str(error).splitlines()[0]}") from None

    def _where(self, band: str) -> str:
        return f"scene: {self.scene.id}: {band} ({self.scene.bands[band]})"

    def _check(self) -> Grid:
        first, reference = next(iter(self.datasets.items()))
        for band, d in self.datasets.items():
            where = self._where(band)
            if d.crs is None:
                raise SceneError(f"{where} has no CRS; expected the product's (UTM), without which the maps "
                                 "cannot be placed")
            if not np.issubdtype(d.dtypes[0], np.integer) or (band != SCL and np.dtype(d.dtypes[0]).itemsize < 2):
                raise SceneError(f"{where} holds {d.dtypes[0]} values; expected integer DN of 16 bits or more "
                                 "(reflectance x 10,000, as L2A products store it; 8 bits cannot hold it)")
            if d.crs != reference.crs:
                raise SceneError(f"{where} is in {d.crs}, {first} in {reference.crs}: one CRS expected")
            native = RESOLUTION_M.get(band, d.res[0])
            if not (math.isclose(d.res[0], native) and math.isclose(d.res[1], native)) or native % GRID_M:
                raise SceneError(f"{where} has {d.res[0]:g} x {d.res[1]:g} m pixels, expected its native "
                                 f"{native} m (the archive's, so the archive's resampling applies)")
            if d.transform.b or d.transform.d or d.transform.a < 0 or d.transform.e > 0:
                raise SceneError(f"{where} is rotated or flipped (transform a, b, d, e = {d.transform.a:g}, "
                                 f"{d.transform.b:g}, {d.transform.d:g}, {d.transform.e:g}); expected a north-up grid: "
                                 "a > 0, e < 0, no rotation")
            if any(abs(a - b) > 0.01 for a, b in zip(d.bounds, reference.bounds, strict=True)):
                raise SceneError(f"{where} covers {tuple(d.bounds)}, {first} {tuple(reference.bounds)}: one "
                                 "extent expected")
        left, bottom, right, top = reference.bounds
        return Grid(reference.crs, Affine(GRID_M, 0, left, 0, -GRID_M, top), round((right - left) / GRID_M),
                    round((top - bottom) / GRID_M))

    def check_stride(self, stride: int) -> None:
        """Windows must start on a native pixel of every band the model reads (see the module doc)."""
        step = max(self.factors[b] for b in self.bands)
        if stride % step:
            raise SceneError(f"stride: {stride} does not keep windows on the {step * GRID_M} m pixels of the "
                             f"model's bands; use a multiple of {step}")

    def windows(self, y: int, xs: Sequence[int]) -> np.ndarray:
        """float32 DN (len(xs), C, 120, 120) of the windows at row `y`, columns `xs`, in the model's band order:
        offset added, clipped at 0, resampled to 10 m (stack_bands)."""
        native = {}
        for band in self.bands:
            f = self.factors[band]
            rows, side = self._rows[band].read(y // f, (y + PATCH_SIZE) // f), PATCH_SIZE // f
            stack = np.stack([rows[:, x // f: x // f + side] for x in xs]).astype(np.float32)
            if offset := self.scene.offset(band):
                stack += offset
                np.maximum(stack, 0, out=stack)
            native[band] = stack
        return stack_bands(native, self.bands, RESAMPLING)

    def masked(self, start: int, stop: int) -> np.ndarray:
        """bool (stop - start, width): 10 m pixels of rows start..stop to leave out: those whose SCL class is
        masked (SCL at any whole multiple of 10 m), and no data (DN 0 in a band the model reads: L2A's NODATA,
        a swath's edge) whatever `mask` names, which would otherwise be scored as dark ground."""
        masked = self._at_10m([SCL], start, stop, lambda scl: np.isin(scl, self.mask_classes)) \
            if len(self.mask_classes) else np.zeros((stop - start, self.grid.width), bool)
        for f in sorted({self.factors[b] for b in self.bands}):  # one expansion to 10 m per resolution
            of_f = [b for b in self.bands if self.factors[b] == f]
            masked |= self._at_10m(of_f, start, stop, lambda dn: dn == NODATA_DN)
        return masked

    def _at_10m(self, bands: Sequence[str], start: int, stop: int, test: Callable[[np.ndarray], np.ndarray]
                ) -> np.ndarray:
        """`test` of the native pixels of `bands` (one resolution), true where it holds in any, for the 10 m
        pixels of rows start..stop (each native pixel covering the 10 m pixels under it)."""
        f = self.factors[bands[0]]
        first = start // f
        native = np.logical_or.reduce([test(self._rows[b].read(first, -(-stop // f))) for b in bands])
        return native[np.arange(start, stop) // f - first][:, np.arange(self.grid.width) // f]
