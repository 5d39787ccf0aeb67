"""A Sentinel-2 L2A scene as the files of its bands, in whichever form it comes: an L2A product folder
(`*.SAFE`, safe.py), a STAC item (stac.py) or a folder of per-band GeoTIFFs / COGs (here).

Each band carries the DN offset that brings its values to the archive's: processing baseline 04.00 and later
store L2A reflectance + 1000 (`BOA_ADD_OFFSET` -1000 in MTD_MSIL2A.xml), the BigEarthNet archives were made
before and carry none. The offset is taken from what the product says (its metadata, the STAC item's
`raster:bands`, a GeoTIFF's own scale and offset), never guessed from a date."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import rasterio
from rasterio.errors import RasterioError

from simclr_s2.bigearthnet.bands import BANDS, RESOLUTION_M
from simclr_s2.errors import UserError

SCL = "SCL"
SCL_RESOLUTION_M = 20  # the scene classification's own resolution in a product (R20m/*_SCL_20m.jp2)
UNKNOWN = "unknown"
FOLDER = "GeoTIFF folder"  # the form named by its folder
_BAND_NAME = re.compile(r"(?:^|_)(B\d\d?|B8A|SCL)$")


class SceneError(UserError):
    """A scene that cannot be mapped: an L1C product, a missing band, bands on different grids..."""


@dataclass(frozen=True)
class Scene:
    """Where each band of a scene lies and what to add to its DN; `bands` maps "B02".."B12", "B8A" and "SCL"
    to a path or URL rasterio opens."""

    id: str
    form: str  # "SAFE", "GeoTIFF folder" or "STAC item": for messages and the run's tags
    baseline: str  # processing baseline ("05.09"), or UNKNOWN
    bands: Mapping[str, str]
    offsets: Mapping[str, int] = field(default_factory=dict)  # band -> DN offset; 0 where absent
    offset_source: str = "none"  # what said so
    source: str = ""  # the path (resolved) or URL it was read from (open_scene)

    def offset(self, band: str) -> int:
        return self.offsets.get(band, 0)

    @property
    def identity(self) -> str:
        """What makes two scenes one: a product's or item's id names its acquisition wherever it lies; a folder
        of GeoTIFFs is named by its folder (T33UUP/2023-06-01/bands, T33UUP/2023-07-01/bands): its path."""
        return self.source if self.form == FOLDER else self.id


def band_name(text: str) -> str | None:
    """"B2", "b02", "<patch>_B02" -> "B02"; "SCL"; None for anything else."""
    match = _BAND_NAME.search(text.upper())
    if not match:
        return None
    name = match.group(1)
    name = name if name in (SCL, "B8A") else f"B{int(name[1:]):02d}"
    return name if name in (*BANDS, SCL) else None


def native_resolution(band: str) -> int | None:
    """The resolution (m) a product gives `band` at first hand, not resampled: the file a scene should use."""
    return SCL_RESOLUTION_M if band == SCL else RESOLUTION_M.get(band)


def open_scene(ref: str) -> Scene:
    """The scene `ref` names: a `.json` STAC item (path or URL), an L2A product folder (MTD_MSIL2A.xml and
    GRANULE/), or a folder of per-band GeoTIFFs (with the product's MTD_MSIL2A.xml beside them or not)."""
    from simclr_s2.scenes import safe, stac  # the forms' own modules import this one

    if ref.startswith(("http://", "https://")):
        return dataclasses.replace(stac.open_item(ref), source=ref)
    path = Path(ref).expanduser().resolve()
    if ref.endswith(".json"):
        return dataclasses.replace(stac.open_item(ref), source=str(path))
    if not path.is_dir():
        raise SceneError(f"scene: {path} is neither a folder (an L2A product or per-band GeoTIFFs) nor a STAC "
                         "item (.json)")
    metadata = safe.metadata_file(path)
    if metadata is not None and (path / "GRANULE").is_dir():
        scene = safe.open_product(path)
    else:
        scene = safe.with_metadata(metadata, lambda: open_folder(path)) if metadata else open_folder(path)
    return dataclasses.replace(scene, source=str(path))


def open_folder(path: Path) -> Scene:
    """A folder of one GeoTIFF per band, named by the band (`B02.tif`, `T33UUP_..._B02.tif`, `SCL.tif`). The
    offset comes from each file's own scale and offset (GDAL metadata), none when it has none (a product's
    MTD_MSIL2A.xml beside them overrides: safe.with_metadata)."""
    bands: dict[str, str] = {}
    for file in sorted(path.iterdir()):
        name = band_name(file.stem) if file.suffix.lower() in (".tif", ".tiff") else None
        if name is None:
            continue
        if name in bands:
            raise SceneError(f"scene: {path} holds two files of {name}: {Path(bands[name]).name}, {file.name}")
        bands[name] = str(file)
    if not bands:
        raise SceneError(f"scene: {path} holds no band GeoTIFF (B02.tif ... B12.tif, B8A.tif, SCL.tif) and no "
                         "MTD_MSIL2A.xml")
    offsets = {band: dn_offset(file) for band, file in bands.items() if band != SCL}
    source = "the GeoTIFFs' scale and offset" if any(offsets.values()) else "none (the GeoTIFFs state none)"
    return Scene(path.name, FOLDER, UNKNOWN, bands, offsets, source)


def dn_offset(file: str) -> int:
    """The DN offset a raster's own scale and offset state: value * scale + offset = reflectance, so
    DN + offset / scale is what the archive would hold (0 for a raster that states none)."""
    try:
        with rasterio.open(file) as dataset:
            scale, offset = dataset.scales[0], dataset.offsets[0]
    except RasterioError as error:
        raise SceneError(f"scene: cannot read {file}: {error}") from None
    return round(offset / scale) if scale else 0
