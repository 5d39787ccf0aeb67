"""A STAC item of a Sentinel-2 L2A scene (pystac): its assets point at the band files. An asset is a band by
its key (`B02`, `SCL`), its `eo:bands` name (of several, the one at the band's native resolution where they
declare one), or the STAC common-name keys Earth Search uses (`blue`, `rededge1`, `scl`...). The DN offset
is none where the item says it was already applied (`earthsearch:boa_offset_applied` true: Earth Search's
harmonised COGs, whose raster:bands still state -0.1, Element84/earth-search#9, #66); else the asset's
`raster:bands` offset / scale where given (-0.1 / 0.0001 = -1000); else processing baseline 04.00 and later
(compared as numbers) get ESA's -1000."""

from __future__ import annotations

import math
import re
from typing import Any

import pystac

from simclr_s2.scenes.product import SCL, UNKNOWN, Scene, SceneError, band_name, native_resolution

COMMON_NAMES = {"coastal": "B01", "blue": "B02", "green": "B03", "red": "B04", "rededge1": "B05",
                "rededge2": "B06", "rededge3": "B07", "nir": "B08", "nir08": "B8A", "nir09": "B09",
                "swir16": "B11", "swir22": "B12", "scl": SCL}
BASELINE_OFFSET = -1000
"""ESA's BOA_ADD_OFFSET from processing baseline 04.00 (products since 25 January 2022)."""
OFFSET_BASELINE = (4, 0)


def _named(text: str) -> str | None:
    """The band a whole asset key or band name stands for: "B02", "b2", "SCL", or a common name."""
    text = text.strip()
    if text.lower() in COMMON_NAMES:
        return COMMON_NAMES[text.lower()]
    return band_name(text) if re.fullmatch(r"B\d\d?|B8A|SCL", text.upper()) else None


def _read(ref: str) -> pystac.Item:
    """The item `ref` holds, its JSON's shape checked first: pystac meets a search result, a list or an asset
    without href with a traceback (or a message naming no file)."""
    href = pystac.utils.make_absolute_href(ref)
    try:
        d = pystac.StacIO.default().read_json(href)
    except (OSError, ValueError) as error:
        raise _unreadable(ref, error) from None
    d = _item_json(d, ref)
    try:
        return pystac.Item.from_dict(d, href=href, migrate=True, preserve_dict=False)
    except (ValueError, pystac.STACError, pystac.STACTypeError) as error:
        raise _unreadable(ref, error) from None


def _unreadable(ref: str, error: Exception) -> SceneError:
    return SceneError(f"scene: cannot read the STAC item {ref}: {str(error).splitlines()[0]}")


def _item_json(d: object, ref: str) -> dict[str, Any]:
    if isinstance(d, dict) and d.get("type") == "FeatureCollection":
        raise SceneError(f"scene: {ref} is a FeatureCollection (a search result); expected one STAC item: save one "
                         "of its features as .json")
    if not isinstance(d, dict) or d.get("type") != "Feature":
        raise SceneError(f"scene: {ref} is no STAC item; expected a JSON object of type Feature")
    for name, kind in (("id", str), ("properties", dict), ("assets", dict)):
        if not isinstance(d.get(name), kind):
            raise SceneError(f"scene: STAC item {ref} has no {name} ({kind.__name__} expected)")
    _check_id(d["id"], ref)
    for key, asset in d["assets"].items():
        if not isinstance(asset, dict) or not isinstance(asset.get("href"), str):
            raise SceneError(f"scene: STAC item {ref}: asset {key} has no href; expected the path or URL of its file")
        for field in ("raster:bands", "eo:bands"):  # read as lists of objects below
            listed = asset.get(field, [])
            if not (isinstance(listed, list) and all(isinstance(b, dict) for b in listed)):
                raise SceneError(f"scene: STAC item {ref}: asset {key} has {field} {str(listed)[:60]}; expected a "
                                 "list of objects")
    return d


def _check_id(ident: str, ref: str) -> None:
    """The id names the maps' folder under `out`: "../x" would write outside it, "a/b" fail at the very end."""
    if ident.strip() in ("", ".", "..") or any(c in ident for c in "/\\\0") or len(ident.encode()) > 255:
        raise SceneError(f"scene: STAC item {ref} has id {ident[:80]!r}; expected a name for its maps' folder in "
                         "out: not blank, '.' or '..', without '/' or '\\', at most 255 bytes")


def _raster_band(asset: pystac.Asset) -> dict[str, Any]:
    bands = asset.extra_fields.get("raster:bands") or [{}]
    return bands[0]


def _resolution(asset: pystac.Asset) -> float | None:
    """The pixel size (m) the asset declares, if any: its gsd or its raster:bands spatial_resolution."""
    return asset.extra_fields.get("gsd") or _raster_band(asset).get("spatial_resolution")


def _native(band: str, candidates: list[str], item: pystac.Item) -> str:
    """Of the assets naming `band` in eo:bands (CDSE's B01_20m, B01_60m...), the one at the band's native
    resolution where one declares it (another would be refused by SceneReader), else the first."""
    native = native_resolution(band)
    return next((key for key in candidates if _resolution(item.assets[key]) == native), candidates[0])


def _assets(item: pystac.Item) -> dict[str, str]:
    """Band -> its asset's key: one keyed by the band's own name first, else one whose eo:bands names it."""
    by_key: dict[str, str] = {}
    by_eo: dict[str, list[str]] = {}
    for key, asset in item.assets.items():
        eo = asset.extra_fields.get("eo:bands") or [{}]
        if name := _named(key):
            by_key.setdefault(name, key)
        elif name := _named(str(eo[0].get("name", ""))):
            by_eo.setdefault(name, []).append(key)
    return {**{name: _native(name, keys, item) for name, keys in by_eo.items()}, **by_key}


def _raster_offset(key: str, asset: pystac.Asset, ref: str) -> int | None:
    """The DN offset the asset's raster:bands state (offset / scale), None where they state no offset."""
    band = _raster_band(asset)
    if "offset" not in band:
        return None
    offset, scale = band["offset"], band.get("scale", 1.0)
    if not (_number(offset) and _number(scale) and scale):
        raise SceneError(f"scene: STAC item {ref}: asset {key} has raster:bands offset {offset!r}, scale {scale!r}; "
                         "expected numbers, the scale not 0")
    return round(offset / scale)


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _baseline_version(baseline: object, ref: str) -> tuple[int, int] | None:
    """(major, minor) of a processing baseline ("05.09", "2.14", the JSON number 3.01), None when the item
    states none: compared as text, "2.14" would sort after "04.00"."""
    if baseline is None:
        return None
    text = str(baseline).strip() if isinstance(baseline, str) or _number(baseline) else ""
    if not (match := re.fullmatch(r"(\d+)(?:\.(\d+))?", text)):
        raise SceneError(f"scene: STAC item {ref}: s2:processing_baseline {baseline!r} is no baseline; expected "
                         "major.minor, as 05.09")
    return int(match[1]), int(match[2] or 0)


def open_item(ref: str) -> Scene:
    item = _read(ref)
    props = item.properties
    if str(props.get("s2:product_type", "")).upper().endswith("1C") or "l1c" in str(item.collection_id or ""):
        raise SceneError(f"scene: STAC item {item.id} is a Level-1C product; the classifier was trained on L2A "
                         "(bottom-of-atmosphere) reflectance: give the L2A item of this acquisition")
    version = _baseline_version(props.get("s2:processing_baseline"), ref)
    baseline = str(props.get("s2:processing_baseline", UNKNOWN))
    keys = _assets(item)
    bands = {name: item.assets[key].get_absolute_href() or item.assets[key].href for name, key in keys.items()}
    declared = {name: offset for name, key in keys.items()
                if name != SCL and (offset := _raster_offset(key, item.assets[key], ref)) is not None}
    if props.get("earthsearch:boa_offset_applied") is True:
        return Scene(item.id, "STAC item", baseline, bands, {}, "none (earthsearch:boa_offset_applied is true, "
                     "whatever raster:bands state)")
    if declared:
        return Scene(item.id, "STAC item", baseline, bands, declared, "the item's raster:bands offset / scale")
    if version is not None and version >= OFFSET_BASELINE:
        offsets = {b: BASELINE_OFFSET for b in bands if b != SCL}
        return Scene(item.id, "STAC item", baseline, bands, offsets, f"processing baseline {baseline} >= 04.00")
    return Scene(item.id, "STAC item", baseline, bands, {}, f"none (processing baseline {baseline})")
