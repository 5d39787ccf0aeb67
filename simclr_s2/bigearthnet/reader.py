"""Read one BigEarthNet-S2 v1.0 patch folder exactly as it lies on disk.

A folder `<patch>/` holds `<patch>_B01.tif` ... `<patch>_B12.tif` (uint16, one band each, 120/60/20 px)
and `<patch>_labels_metadata.json`. Every failure is a PatchError whose `kind` is one of PATCH_ERROR_KINDS,
so the index builder can file a broken patch under its reason instead of stopping.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import rasterio
from rasterio.errors import RasterioError

from simclr_s2.bigearthnet.bands import (
    NATIVE_SIZE,
    STUDY_BANDS,
    check_resampling,
    normalise,
    resolve_bands,
    stack_bands,
)
from simclr_s2.bigearthnet.nomenclature import LABELS_43
from simclr_s2.errors import UserError

MISSING_JSON = "missing JSON"
UNPARSEABLE_JSON = "unparseable JSON"
BAD_METADATA = "bad metadata"
MISSING_BAND = "missing band file"
WRONG_SIZE = "wrong raster size"
UNREADABLE = "unreadable GeoTIFF"
PATCH_ERROR_KINDS = (MISSING_JSON, UNPARSEABLE_JSON, BAD_METADATA, MISSING_BAND, WRONG_SIZE, UNREADABLE)

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


@dataclass(frozen=True)
class PatchMetadata:
    """The parsed `<patch>_labels_metadata.json`."""

    name: str
    labels: tuple[str, ...]
    acquisition_date: str
    tile_source: str
    coordinates: dict[str, float]
    projection: str


def patch_dir(archive_root: Path, name: str) -> Path:
    """The folder of patch `name` in an archive: `<root>/<name>` in the v1.0 layout."""
    return Path(archive_root) / name


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
        isinstance(coords.get(k), int | float) and not isinstance(coords.get(k), bool)
        for k in COORDINATE_KEYS
    ):
        raise bad(f"coordinates must hold numbers {', '.join(COORDINATE_KEYS)}, got {coords!r}")
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


def read_native(patch_dir: Path, bands: str | Sequence[str] = STUDY_BANDS) -> dict[str, np.ndarray]:
    """Band -> native-size uint16 raster (120, 60 or 20 px), in the order of `bands`."""
    return {band: read_band(patch_dir, band) for band in resolve_bands(bands)}


def read_pixels(
    patch_dir: Path,
    bands: str | Sequence[str] = STUDY_BANDS,
    resampling: str = "bicubic",
    normalised: bool = True,
) -> np.ndarray:
    """A patch's pixels as float32 (C, 120, 120) in the order of `bands`, without its metadata: what a
    loader needs. Values are z-scored with the published MEAN/STD unless `normalised=False`."""
    bands = resolve_bands(bands)
    check_resampling(resampling)
    x = stack_bands(read_native(patch_dir, bands), bands, resampling)
    return normalise(x, bands) if normalised else x


def read_patch(
    patch_dir: Path,
    bands: str | Sequence[str] = STUDY_BANDS,
    resampling: str = "bicubic",
    normalised: bool = True,
) -> tuple[np.ndarray, PatchMetadata]:
    """A patch as float32 (C, 120, 120) in the order of `bands`, with its metadata.

    Values are z-scored with the published MEAN/STD unless `normalised=False` (then raw uint16 values).
    20 m and 60 m bands are resampled with `bands.resample`, the one resampling every data path shares.
    """
    meta = read_metadata(patch_dir)
    return read_pixels(patch_dir, bands, resampling, normalised), meta
