"""A Sentinel-2 L2A product folder (`*.SAFE`): JP2 bands under `GRANULE/<granule>/IMG_DATA/R10m|R20m|R60m`
(`T33UUP_20230601T100559_B02_10m.jp2`), each band taken at its native resolution, and `MTD_MSIL2A.xml`,
which gives the processing baseline and the per-band `BOA_ADD_OFFSET` (from baseline 04.00: -1000)."""

from __future__ import annotations

import dataclasses
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from simclr_s2.bigearthnet.bands import BANDS
from simclr_s2.scenes.product import UNKNOWN, Scene, SceneError, band_name, native_resolution

L2A_METADATA = "MTD_MSIL2A.xml"
L1C_METADATA = "MTD_MSIL1C.xml"
_JP2 = re.compile(r"_(B\d\d|B8A|SCL)_(\d\d)m\.jp2$", re.IGNORECASE)
# The order of bandId in the metadata (B10 included), for metadata that names no physicalBand.
_BAND_IDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")
_BAND_OF_ID = {str(i): band for i, band in enumerate(_BAND_IDS)}


@dataclass(frozen=True)
class Metadata:
    """What a product's MTD_MSIL*.xml says that a map needs."""

    level: str  # PROCESSING_LEVEL: "Level-2A"
    baseline: str
    offsets: dict[str, int]  # band -> BOA_ADD_OFFSET (empty before baseline 04.00)


def metadata_file(folder: Path) -> Path | None:
    """The product metadata file in `folder`, L2A or L1C, or None when it is no product folder."""
    return next((folder / name for name in (L2A_METADATA, L1C_METADATA) if (folder / name).is_file()), None)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def read_metadata(path: Path) -> Metadata:
    """The product's level, baseline and BOA offsets (namespaces ignored: they change with versions)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as error:
        raise SceneError(f"scene: cannot read {path}: {error}") from None
    text = {_local(e.tag): (e.text or "").strip() for e in root.iter() if len(e) == 0}
    level = text.get("PROCESSING_LEVEL") or ("Level-1C" if path.name == L1C_METADATA else UNKNOWN)
    return Metadata(level, text.get("PROCESSING_BASELINE", UNKNOWN), _offsets(root, path))


def _offsets(root: ET.Element, path: Path) -> dict[str, int]:
    """Band -> BOA_ADD_OFFSET: an integer DN each (ESA writes -1000); an element naming no band, or holding
    anything else ("n/a", "-1000.5"), is refused rather than skipped or rounded."""
    physical = {e.get("bandId"): band_name(e.get("physicalBand", "")) for e in root.iter()
                if _local(e.tag) == "Spectral_Information"}
    offsets = {}
    for e in root.iter():
        if _local(e.tag) != "BOA_ADD_OFFSET":
            continue
        band_id, value = e.get("band_id", ""), (e.text or "").strip()
        band = physical.get(band_id) or _BAND_OF_ID.get(band_id)
        where = f"scene: {path}: BOA_ADD_OFFSET band_id={band_id!r}"
        if band is None:
            raise SceneError(f"{where} names no band; expected 0..12 (B01 ... B12, B8A as 8) or a bandId of its "
                             "Spectral_Information")
        if not re.fullmatch(r"[+-]?\d+", value):
            raise SceneError(f"{where} holds {value[:40]!r}; expected an integer DN offset, as -1000")
        if band in BANDS:
            offsets[band] = int(value)
    return offsets


def check_level(metadata: Metadata, where: Path) -> None:
    if "2A" not in metadata.level:
        raise SceneError(f"scene: {where} is a {metadata.level} product; the classifier was trained on L2A "
                         "(bottom-of-atmosphere) reflectance: give the L2A product of this acquisition")


def open_product(folder: Path) -> Scene:
    path = metadata_file(folder)
    if path is None:
        raise SceneError(f"scene: {folder} holds neither {L2A_METADATA} nor {L1C_METADATA}")
    return with_metadata(path, lambda: Scene(folder.name.removesuffix(".SAFE"), "SAFE", UNKNOWN, _jp2_bands(folder)))


def _jp2_bands(folder: Path) -> dict[str, str]:
    """Band -> its JP2 at the band's native resolution in the product's one granule."""
    granules = sorted(p for p in (folder / "GRANULE").glob("*") if p.is_dir())
    if len(granules) != 1:
        raise SceneError(f"scene: {folder} holds {len(granules)} granules under GRANULE/, expected one")
    bands = {}
    for file in sorted((granules[0] / "IMG_DATA").glob("R*m/*.jp2")):
        match = _JP2.search(file.name)
        if not match:
            continue
        band, resolution = match.group(1).upper(), int(match.group(2))
        if resolution == native_resolution(band):
            bands[band] = str(file)
    return bands


def with_metadata(path: Path, scene: Callable[[], Scene]) -> Scene:
    """The `scene` of band files made from a product whose metadata file is `path`: its baseline and offsets,
    not the files' own. Its level is checked first, so an L1C product is refused as one, not for what its
    files lack."""
    metadata = read_metadata(path)
    check_level(metadata, path.parent)
    return dataclasses.replace(scene(), baseline=metadata.baseline, offsets=metadata.offsets,
                               offset_source=f"{path.name} BOA_ADD_OFFSET" if metadata.offsets else
                               f"none ({path.name} states none)")
