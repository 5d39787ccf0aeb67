"""Writing single-band GeoTIFFs: through GDAL, and as stamped copies of what GDAL writes.

Writing the demo archive through GDAL opens and closes 12 GeoTIFFs a patch, about 1 ms each: two thirds of
the archive's time. An uncompressed, stripped GeoTIFF of a given size, type, CRS, pixel size and nodata is,
byte for byte, one directory GDAL writes (the same for every such file but for the tiepoint's two
coordinates) followed by the pixels in row order. So `GeoTiffStamp` has GDAL write that directory once, in
memory, and writes each file as the directory with its corner put in, then its pixels: what GDAL itself
writes (tests/bigearthnet/test_geotiff_writer.py compares the two byte for byte) for rasters in which no
strip is all zeros (GDAL moves such a strip after the others, and pads an all-zero raster's last strip; the
pixels read back the same either way). The demo's pixels are never zero.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.io import MemoryFile
from rasterio.transform import Affine

from simclr_s2.bigearthnet.tiff import STRIP_COUNTS, STRIP_OFFSETS, UnsupportedTiff, first_directory, in_one_run

_TIEPOINT_MARK = (123457.25, 7654321.75)  # a corner no real file has: its bytes occur once in the template


def write_geotiff(
    path: Path | str, raster: np.ndarray, crs: CRS | str, res: float, ulx: float, uly: float, **profile
) -> None:
    """A single-band GeoTIFF of `raster` with square `res` m pixels from the corner (ulx, uly), through
    GDAL; `profile` adds GDAL creation options (compress, predictor, nodata, ...)."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=raster.shape[1],
        height=raster.shape[0],
        count=1,
        dtype=raster.dtype,
        crs=crs,
        transform=Affine(res, 0, ulx, 0, -res, uly),
        **profile,
    ) as ds:
        ds.write(raster, 1)


class GeoTiffStamp:
    """The files `write_geotiff` writes for (height, width) rasters of `dtype` in `crs` with square `res` m
    pixels and uncompressed `profile` (nodata and the like), at any corner, without GDAL."""

    def __init__(self, shape: tuple[int, int], dtype: str, crs: CRS | str, res: float, **profile) -> None:
        self.shape, self.dtype = shape, np.dtype(dtype)
        with MemoryFile(ext=".tif") as memory:  # ones: GDAL lays out a file with all-zero strips otherwise
            write_geotiff(memory.name, np.ones(shape, self.dtype), crs, res, *_TIEPOINT_MARK, **profile)
            template = memory.read()
        order, _, tags = first_directory(template, len(template), wanted=frozenset({STRIP_OFFSETS, STRIP_COUNTS}))
        offsets, counts = tags.get(STRIP_OFFSETS, (0,)), tags.get(STRIP_COUNTS, ())
        pixel_bytes = self.dtype.itemsize * shape[0] * shape[1]
        if sum(counts) != pixel_bytes or offsets[0] + pixel_bytes != len(template) or not in_one_run(offsets, counts):
            raise UnsupportedTiff(f"GDAL's strips ({offsets}, {counts}) are not the pixels in one run at the end")
        self._corner = struct.Struct(order + "2d")
        mark = self._corner.pack(*_TIEPOINT_MARK)
        self._at = template.find(mark)
        if self._at < 0 or template.find(mark, self._at + 1) >= 0:
            raise UnsupportedTiff("the tiepoint's corner is not found exactly once in GDAL's directory")
        self._before, self._after = template[: self._at], template[self._at + self._corner.size : offsets[0]]
        self._file_dtype = self.dtype.newbyteorder(order)

    def write(self, path: Path, raster: np.ndarray, ulx: float, uly: float) -> None:
        """Write `raster` with its upper-left corner at (ulx, uly) to `path`."""
        if raster.shape != self.shape or raster.dtype != self.dtype:
            raise ValueError(f"{path}: expected a {self.shape} {self.dtype} raster, "
                             f"got {raster.shape} {raster.dtype}")
        pixels = raster.astype(self._file_dtype, copy=False).tobytes()
        Path(path).write_bytes(b"".join((self._before, self._corner.pack(ulx, uly), self._after, pixels)))
