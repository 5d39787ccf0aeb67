"""A v2.0 patch's reference map: the CORINE Land Cover 2018 code of each of its 120 x 120 pixels at 10 m.

What the index needs of it is how many pixels each code covers (the area shares behind schemes by area,
taken of the mapped pixels: NODATA carries no class, so it is no evidence for or against one) and
where the patch lies (EPSG code and upper-left corner, for spatial grouping). The map is decoded with
geotiff.py, not GDAL: that keeps the index at metadata speed (see geotiff.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simclr_s2.bigearthnet.bands import PATCH_SIZE
from simclr_s2.bigearthnet.geotiff import decode_geotiff_uint16
from simclr_s2.bigearthnet.nomenclature import CLC_LEVEL3
from simclr_s2.bigearthnet.reader import (
    MISSING_MAP,
    UNKNOWN_CODE,
    UNREADABLE,
    WRONG_SIZE,
    PatchError,
    reference_map_file,
)
from simclr_s2.bigearthnet.tiff import TiffFormatError

NODATA = 0
"""Pixels no CORINE polygon covers: they carry no class and stay out of the area shares' denominator."""
_VALID = np.zeros(65536, dtype=bool)
_VALID[[NODATA, *CLC_LEVEL3]] = True


@dataclass(frozen=True)
class ReferenceMap:
    codes: tuple[int, ...]  # CLC codes present, ascending, without NODATA
    pixels: tuple[int, ...]  # how many of the patch's PATCH_SIZE**2 pixels each code covers (NODATA: the rest)
    epsg: int | None
    ulx: float
    uly: float


def read_reference_map(archive_root: Path, name: str) -> ReferenceMap:
    """The codes, their pixel counts and the georeferencing of patch `name`'s map; PatchError if the map
    is missing, unreadable, not 120 x 120 or holds a code that is not CLC level 3."""
    path = reference_map_file(archive_root, name)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PatchError(name, MISSING_MAP, path.name, f"not found in {path.parent}") from None
    except OSError as e:
        raise PatchError(name, UNREADABLE, path.name, str(e)) from None
    return decode_reference_map(name, data)


def decode_reference_map(name: str, data: bytes) -> ReferenceMap:
    """`read_reference_map` of the map file's bytes (the index streams them from Reference_Maps.tar.zst)."""
    file = reference_map_file(Path(), name).name
    try:
        raster = decode_geotiff_uint16(data)
    except TiffFormatError as e:
        raise PatchError(name, UNREADABLE, file, str(e)) from None
    if raster.pixels.shape != (PATCH_SIZE, PATCH_SIZE):
        height, width = raster.pixels.shape
        raise PatchError(name, WRONG_SIZE, file, f"{width}x{height} px, expected {PATCH_SIZE}x{PATCH_SIZE}")
    present, counts = np.unique(raster.pixels, return_counts=True)  # faster than bincount on 14,400 pixels
    unknown = present[~_VALID[present]]
    if unknown.size:
        raise PatchError(
            name, UNKNOWN_CODE, file, f"code(s) {unknown.tolist()}; expected CLC level-3 codes or 0"
        )
    mapped = present != NODATA
    return ReferenceMap(
        tuple(present[mapped].tolist()), tuple(counts[mapped].tolist()), raster.epsg, raster.ulx, raster.uly
    )
