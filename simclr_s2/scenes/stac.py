"""A STAC item of a Sentinel-2 L2A scene (pystac): its assets point at the band files. An asset is a band by
its key (`B02`, `SCL`), its `eo:bands` name, or the STAC common-name keys Earth Search uses (`blue`,
`rededge1`, `scl`...). The DN offset is the asset's `raster:bands` offset / scale where given (-0.1 / 0.0001
= -1000); otherwise processing baseline 04.00 and later get ESA's -1000, unless the item says the offset
was already applied (`earthsearch:boa_offset_applied`)."""

from __future__ import annotations

import re
from typing import Any

import pystac

from simclr_s2.scenes.product import SCL, UNKNOWN, Scene, SceneError, band_name

COMMON_NAMES = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
                "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
                "swir16": "B11", "swir22": "B12", "scl": SCL}
BASELINE_OFFSET = -1000
"""ESA's BOA_ADD_OFFSET from processing baseline 04.00 (products since 25 January 2022)."""


def _named(text: str) -> str | None:
    """The band a whole asset key or band name stands for: "B02", "b2", "SCL", or a common name."""
    text = text.strip()
    if text.lower() in COMMON_NAMES:
        return COMMON_NAMES[text.lower()]
    return band_name(text) if re.fullmatch(r"B\d\d?|B8A|SCL", text.upper()) else None


def _assets(item: pystac.Item) -> dict[str, pystac.Asset]:
    """Band -> its asset: one keyed by the band's own name first, else the first whose eo:bands names it."""
    by_key: dict[str, pystac.Asset] = {}
    by_eo: dict[str, pystac.Asset] = {}
    for key, asset in item.assets.items():
        eo = asset.extra_fields.get("eo:bands") or [{}]
        if name := _named(key):
            by_key.setdefault(name, asset)
        elif name := _named(str(eo[0].get("name", ""))):
            by_eo.setdefault(name, asset)
    return {**by_eo, **by_key}


def _raster_offset(asset: pystac.Asset) -> int | None:
    bands: list[dict[str, Any]] = asset.extra_fields.get("raster:bands") or []
    if not bands or "offset" not in bands[0]:
        return None
    return round(bands[0]["offset"] / bands[0].get("scale", 1.0))


def open_item(ref: str) -> Scene:
    try:
        item = pystac.Item.from_file(ref)
    except (OSError, ValueError, pystac.STACError) as error:
        raise SceneError(f"scene: cannot read the STAC item {ref}: {str(error).splitlines()[0]}") from None
    props = item.properties
    if str(props.get("s2:product_type", "")).upper().endswith("1C") or "l1c" in (item.collection_id or ""):
        raise SceneError(f"scene: STAC item {item.id} is a Level-1C product; the classifier was trained on L2A "
                         "(bottom-of-atmosphere) reflectance: give the L2A item of this acquisition")
    baseline = str(props.get("s2:processing_baseline", UNKNOWN))
    assets = _assets(item)
    bands = {name: asset.get_absolute_href() or asset.href for name, asset in assets.items()}
    declared = {name: offset for name, asset in assets.items()
                if name != SCL and (offset := _raster_offset(asset)) is not None}
    if declared:
        return Scene(item.id, "STAC item", baseline, bands, declared, "the item's raster:bands offset / scale")
    if props.get("earthsearch:boa_offset_applied") is True:
        return Scene(item.id, "STAC item", baseline, bands, {}, "none (earthsearch:boa_offset_applied)")
    if baseline != UNKNOWN and baseline >= "04.00":
        offsets = {b: BASELINE_OFFSET for b in bands if b != SCL}
        return Scene(item.id, "STAC item", baseline, bands, offsets, f"processing baseline {baseline} >= 04.00")
    return Scene(item.id, "STAC item", baseline, bands, {}, f"none (processing baseline {baseline})")
