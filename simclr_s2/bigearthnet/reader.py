"""Find and read one BigEarthNet-S2 patch folder exactly as it lies on disk, in the v1.0 or v2.0 layout.

A folder `<patch>/` holds `<patch>_B01.tif` ... `<patch>_B12.tif` (uint16, one band each, 120/60/20 px)
in both versions; v1.0 adds `<patch>_labels_metadata.json`, while v2.0 keeps its metadata in one
metadata.parquet and each patch's CORINE map in Reference_Maps/. Every failure is a PatchError whose
`kind` is one of PATCH_ERROR_KINDS, so the index builder can file a broken patch under its reason instead
of stopping.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from simclr_s2.bigearthnet.bands import (
    BANDS,
    NATIVE_SIZE,
    STUDY_BANDS,
    Bands,
    Resampling,
    normalise,
    stack_bands,
)
from simclr_s2.bigearthnet.nomenclature import LABELS_43
from simclr_s2.bigearthnet.tiff import TiffFormatError, read_tiff_header
from simclr_s2.errors import UserError

MISSING_JSON = "missing JSON"
UNPARSEABLE_JSON = "unparseable JSON"
BAD_METADATA = "bad metadata"
MISSING_BAND = "missing band file"
WRONG_SIZE = "wrong raster size"
UNREADABLE = "unreadable GeoTIFF"
MISSING_MAP = "missing reference map"
UNKNOWN_CODE = "code outside CLC level 3"
PATCH_ERROR_KINDS = (
    MISSING_JSON,
    UNPARSEABLE_JSON,
    BAD_METADATA,
    MISSING_BAND,
    WRONG_SIZE,
    UNREADABLE,
    MISSING_MAP,
    UNKNOWN_CODE,
)

V2_PATCHES = "BigEarthNet-S2"
V2_MAPS = "Reference_Maps"
_V2_NAME = re.compile(r"S2[AB]_MSIL2A_\d{8}T\d{6}_N\d{4}_R\d{3}_T\d{2}[A-Z]{3}_\d+_\d+")

METADATA_KEYS = ("labels", "coordinates", "projection", "tile_source", "acquisition_date")
COORDINATE_KEYS = ("ulx", "uly", "lrx", "lry")
DATE_FORMAT = "%Y-%m-%d %H:%M:%S"
_LABEL_SET = frozenset(LABELS_43)


class PatchError(UserError):
    """A patch that cannot be read: names the patch, the file, and what is wrong with it."""

    def __init__(self, patch: str, kind: str, file: str, detail: str):
        self.patch, self.kind, self.file, self.detail = patch, kind, file, detail
        super().__init__(f"patch {patch}: {self.reason}")

    @property
    def reason(self) -> str:
        """The message without the patch name: what the rejected table stores."""
        return f"{self.kind}: {self.file}: {self.detail}"

    def as_row(self) -> tuple[str, str, str]:
        """(patch, kind, reason): a row of the rejected table."""
        return self.patch, self.kind, self.reason


@dataclass(frozen=True)
class PatchMetadata:
    """The parsed `<patch>_labels_metadata.json`."""

    name: str
    labels: tuple[str, ...]
    acquisition_date: str
    tile_source: str
    coordinates: dict[str, float]
    projection: str


def is_v2_name(name: str) -> bool:
    """True for a v2.0 patch name such as S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_75_43 (v1.0 names
    lack the baseline, orbit and tile: S2A_MSIL2A_20170613T101031_75_43)."""
    return _V2_NAME.fullmatch(name) is not None


def tile_folder(name: str) -> str:
    """The v2.0 folder of one Sentinel-2 acquisition that holds patch `name`: the name less `_<x>_<y>`."""
    return name.rsplit("_", 2)[0]


def patch_dir(archive_root: Path, name: str) -> Path:
    """The folder of patch `name` in an archive, decided by the name alone (no file-system call per patch).

    v1.0: `<root>/<name>`, the root being the folder of patch folders. v2.0: `<root>/BigEarthNet-S2/<tile
    folder>/<name>`, the root being the folder that holds BigEarthNet-S2/, Reference_Maps/ and
    metadata.parquet as the archive's downloads unpack side by side.
    """
    if is_v2_name(name):
        return Path(archive_root, V2_PATCHES, tile_folder(name), name)
    return Path(archive_root) / name


def reference_map_file(archive_root: Path, name: str) -> Path:
    """`<root>/Reference_Maps/<tile folder>/<name>/<name>_reference_map.tif` of a v2.0 patch."""
    return Path(archive_root, V2_MAPS, tile_folder(name), name, f"{name}_reference_map.tif")


def metadata_file(patch_dir: Path) -> Path:
    return patch_dir / f"{patch_dir.name}_labels_metadata.json"


def band_file(patch_dir: Path, band: str) -> Path:
    return patch_dir / f"{patch_dir.name}_{band}.tif"


def parse_metadata(name: str, text: str | bytes, file: str = "") -> PatchMetadata:
    """Validate and parse the labels-metadata JSON text of patch `name` (keys, types, class names, date)."""
    file = file or f"{name}_labels_metadata.json"

    def bad(detail: str) -> PatchError:
        return PatchError(name, BAD_METADATA, file, detail)

    try:
        meta = json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise PatchError(name, UNPARSEABLE_JSON, file, str(e)) from None
    if not isinstance(meta, dict):
        raise bad(f"expected a JSON object, got {type(meta).__name__}")
    missing = [k for k in METADATA_KEYS if k not in meta]
    if missing:
        raise bad(f"missing key(s) {', '.join(missing)}")
    labels, coords = meta["labels"], meta["coordinates"]
    if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
        raise bad(f"labels must be a non-empty list of class names, got {labels!r}")
    unknown = [x for x in labels if x not in _LABEL_SET]
    if unknown:
        raise bad(f"unknown class(es) {unknown}")
    if not isinstance(coords, dict) or not all(
        isinstance(coords.get(k), int | float) and not isinstance(coords.get(k), bool) and math.isfinite(coords[k])
        for k in COORDINATE_KEYS
    ):  # JSON's NaN and Infinity parse as floats: a patch placed nowhere, which every spatial split refuses
        raise bad(f"coordinates must hold finite numbers {', '.join(COORDINATE_KEYS)}, got {coords!r}")
    for key in ("projection", "tile_source", "acquisition_date"):
        if not isinstance(meta[key], str) or not meta[key]:
            raise bad(f"{key} must be a non-empty string, got {meta[key]!r}")
    try:
        datetime.strptime(meta["acquisition_date"], DATE_FORMAT)
    except ValueError:
        raise bad(f"acquisition_date {meta['acquisition_date']!r} is not YYYY-MM-DD HH:MM:SS") from None
    return PatchMetadata(
        name=name,
        labels=tuple(labels),
        acquisition_date=meta["acquisition_date"],
        tile_source=meta["tile_source"],
        coordinates={k: coords[k] for k in COORDINATE_KEYS},
        projection=meta["projection"],
    )


def read_metadata(patch_dir: Path) -> PatchMetadata:
    """Parse `<patch>_labels_metadata.json` of a patch folder."""
    patch_dir = Path(patch_dir)
    path = metadata_file(patch_dir)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        raise PatchError(patch_dir.name, MISSING_JSON, path.name, f"not found in {patch_dir}") from None
    except OSError as e:
        raise PatchError(patch_dir.name, UNPARSEABLE_JSON, path.name, str(e)) from None
    return parse_metadata(patch_dir.name, text, path.name)


def read_band(patch_dir: Path, band: str) -> np.ndarray:
    """One band's native uint16 raster, checked for size, band count and data type."""
    patch_dir = Path(patch_dir)
    path = band_file(patch_dir, band)
    size = NATIVE_SIZE[band]
    try:
        with rasterio.open(path) as ds:
            if (ds.height, ds.width) != (size, size):
                raise PatchError(
                    patch_dir.name,
                    WRONG_SIZE,
                    path.name,
                    f"{ds.width}x{ds.height} px, expected {size}x{size}",
                )
            if ds.count != 1 or ds.dtypes[0] != "uint16":
                raise PatchError(
                    patch_dir.name, UNREADABLE, path.name, f"{ds.count} x {ds.dtypes[0]}, expected 1 x uint16"
                )
            return ds.read(1)
    except RasterioError as e:
        if not path.is_file():
            raise PatchError(patch_dir.name, MISSING_BAND, path.name, f"not found in {patch_dir}") from None
        raise PatchError(patch_dir.name, UNREADABLE, path.name, str(e).splitlines()[0]) from None


def _check_band_header(patch_dir: Path, band: str) -> None:
    name = patch_dir.name
    file = f"{name}_{band}.tif"
    size = NATIVE_SIZE[band]
    try:
        h = read_tiff_header(os.path.join(patch_dir, file))  # a str path: pathlib costs more than the parse
    except FileNotFoundError:
        raise PatchError(name, MISSING_BAND, file, "not in the patch folder") from None
    except (TiffFormatError, OSError) as e:
        raise PatchError(name, UNREADABLE, file, str(e)) from None
    if (h.width, h.height) != (size, size):
        raise PatchError(name, WRONG_SIZE, file, f"{h.width}x{h.height} px, expected {size}x{size}")
    if (h.samples, h.bits, h.sample_format) != (1, 16, 1):
        detail = f"{h.samples} band(s) of {h.bits}-bit type {h.sample_format}, expected 1 band of uint16"
        raise PatchError(name, UNREADABLE, file, detail)
    if h.data_end > h.file_size:
        raise PatchError(
            name, UNREADABLE, file, f"truncated: image data ends at byte {h.data_end}, file has {h.file_size}"
        )


def check_bands(patch_dir: Path, check_rasters: bool = False) -> None:
    """Check the 12 band files of a patch folder from their TIFF headers (tiff.py: size, type, truncation),
    about a hundred times faster than decoding them; `check_rasters` also decodes each through rasterio."""
    for band in BANDS:
        _check_band_header(patch_dir, band)
        if check_rasters:
            read_band(patch_dir, band)


def read_native(patch_dir: Path, bands: Sequence[str] = STUDY_BANDS) -> dict[str, np.ndarray]:
    """Band -> native-size uint16 raster (120, 60 or 20 px), in the order of `bands` (names: a Bands, or
    any names, each checked as its file is found)."""
    return {band: read_band(patch_dir, band) for band in bands}


def read_pixels(
    patch_dir: Path,
    bands: Bands = STUDY_BANDS,
    resampling: Resampling = "bicubic",
    normalised: bool = True,
) -> np.ndarray:
    """A patch's pixels as float32 (C, 120, 120) in the order of `bands`, without its metadata: what a
    loader needs. Values are z-scored with the published MEAN/STD unless `normalised=False`."""
    x = stack_bands(read_native(patch_dir, bands), bands, resampling)
    return normalise(x, bands) if normalised else x


def read_patch(
    patch_dir: Path,
    bands: Bands = STUDY_BANDS,
    resampling: Resampling = "bicubic",
    normalised: bool = True,
) -> tuple[np.ndarray, PatchMetadata]:
    """A patch as float32 (C, 120, 120) in the order of `bands`, with its metadata.

    Values are z-scored with the published MEAN/STD unless `normalised=False` (then raw uint16 values).
    20 m and 60 m bands are resampled with `bands.resample`, the one resampling every data path shares.
    """
    return read_pixels(patch_dir, bands, resampling, normalised), read_metadata(patch_dir)
