"""The archive versions, one class each behind one interface (as torchgeo keeps BigEarthNet and BigEarthNetV2).

An `ArchiveLayout` knows how its version lies on disk: how to recognise its root, which patches to scan
and how (reader.py for v1.0's folders and JSON, reben.py for v2.0's metadata.parquet and reference maps),
what an index row of it holds, and what the demo writer must imitate. `index.build_index`, the demo
writer and `create_splits` ask the layout instead of branching on "v1" / "v2". `LAYOUTS` is the registry:
its names are what build_index's `version`, make_demo_data's `layout`, the index's `archive_version`
metadata and the run tags say, so indexes, stores and runs made before still read.
"""

from __future__ import annotations

import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable
from functools import cache, partial
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import rasterio
from rasterio.crs import CRS
from rasterio.errors import CRSError

from simclr_s2.bigearthnet import official, reben
from simclr_s2.bigearthnet.bands import PATCH_SIZE
from simclr_s2.bigearthnet.nomenclature import (
    CLC_LEVEL3,
    LABEL_FRACTIONS,
    PRESENT,
    SCHEME_CODES,
    SCHEMES,
    is_positive,
)
from simclr_s2.bigearthnet.reader import (
    BAD_METADATA,
    V2_PATCHES,
    PatchError,
    check_bands,
    metadata_file,
    read_metadata,
)
from simclr_s2.errors import UserError

SEASONS = {12: "Winter", 1: "Winter", 2: "Winter", 3: "Spring", 4: "Spring", 5: "Spring",
           6: "Summer", 7: "Summer", 8: "Summer", 9: "Autumn", 10: "Autumn", 11: "Autumn"}  # fmt: skip
AREA_SHARE = "area_share_"  # area_share_<CLC code>: that code's share of the patch's mapped pixels
NODATA_SHARE = "nodata_share"  # share of the patch's pixels no CORINE polygon covers
_TILE = re.compile(r"_T(\d{2}[A-Z]{3})_")

INDEX_SCHEMA = pa.schema(
    [
        ("name", pa.string()),
        ("labels", pa.list_(pa.string())),
        *((f"{PRESENT}{scheme}", pa.bool_()) for scheme in SCHEMES),
        ("acquisition_date", pa.string()),
        ("season", pa.string()),
        ("tile", pa.string()),
        ("country", pa.string()),
        ("snow", pa.bool_()),
        ("cloud_shadow", pa.bool_()),
        ("official_split", pa.string()),
        ("s2v1_name", pa.string()),
        ("epsg", pa.int32()),
        ("ulx", pa.float64()),
        ("uly", pa.float64()),
    ]
)
"""Columns of every index. present_<scheme>: the patch carries a class of the scheme (label presence);
s2v1_name: the patch's v1.0 name (its own name in a v1.0 index); epsg, ulx, uly: its UTM zone and
upper-left corner in metres, for grouping patches by tile or by a geographic block."""
V2_COLUMNS = pa.schema(
    [
        ("labels_19", pa.list_(pa.string())),
        (LABEL_FRACTIONS, pa.list_(pa.float64())),
        *((f"{AREA_SHARE}{code}", pa.float64()) for code in SCHEME_CODES),
        (NODATA_SHARE, pa.float64()),
    ]
)
"""Columns only a v2.0 index has: the official 19-class labels, each of `labels`' share of the patch's
mapped area, the share of each CLC code the named schemes use, and the share of the patch's pixels that
no CORINE polygon covers. Nodata pixels carry no class, so they stay out of the shares' denominator: a
patch half unmapped and half rice is all rice (its shares add up to 1; 0 when nothing is mapped)."""
V2_SCHEMA = pa.schema([*INDEX_SCHEMA, *V2_COLUMNS])


class ArchiveError(UserError):
    """The archive or the index file is not what was expected."""


class ArchiveLayout(ABC):
    """One archive version: its root, its patches, its index rows, and what a demo of it must look like."""

    name: ClassVar[str]
    """How parameters, the index's `archive_version` metadata and run tags name the version: v1, v2."""
    title: ClassVar[str]
    schema: ClassVar[pa.Schema]
    """The columns of its index."""
    reference_maps: ClassVar[bool]
    """Labels from CORINE reference maps, with each class's share of the patch area, and the patch list in
    metadata.parquet (v2.0); or labels only, from each patch's JSON (v1.0)."""
    band_nodata: ClassVar[int | None]
    """The nodata value its band files declare (None: none declared)."""
    patch_noun: ClassVar[str]
    """What the index scans, in "none of its N {patch_noun}" when nothing was valid."""

    @abstractmethod
    def holds(self, folder: Path) -> bool:
        """Whether `folder` looks like a root of this version (how `auto` recognises one)."""

    @abstractmethod
    def patches(self, root: Path) -> tuple[list[str], list[tuple], Any]:
        """The patch names to scan, the rejections found before scanning, and what `records` needs beside
        the scanned rows (None when nothing)."""

    @abstractmethod
    def scanner(self, root: Path, check_rasters: bool) -> Callable[[str], tuple]:
        """A picklable function: patch name -> its scanned row, or PatchError (run in worker processes)."""

    @abstractmethod
    def records(self, rows: list[tuple], context: Any) -> list[tuple]:
        """Scanned rows -> index records in `schema` order."""

    def check_columns(self, path: Path, names: list[str]) -> None:
        """Refuse an index of this version whose columns mean something else than today's."""

    def demo_name(self, v1_name: str, tile: str, orbit: int) -> str:
        """The name a demo patch takes in this layout, from its v1.0 name and its tile and relative orbit."""
        return v1_name


def _presence(labels: list[str]) -> tuple[bool, ...]:
    return tuple(is_positive(labels, classes) for classes in SCHEMES.values())


@cache
def _epsg(wkt: str) -> int | None:
    """EPSG code of a v1.0 JSON's projection, None for one without (a handful of distinct strings: parsed once
    per process). Parsed in a rasterio environment, whose GDAL error handler logs a complaint about a bad
    string at INFO (silenced here) where GDAL's own prints it to stderr: the patch's rejection says it."""
    gdal = logging.getLogger("rasterio._env")
    level = gdal.level
    gdal.setLevel(logging.WARNING)
    try:
        with rasterio.Env():
            return CRS.from_wkt(wkt).to_epsg()
    except CRSError:
        return None
    finally:
        gdal.setLevel(level)


def _v1_patch(archive: Path, name: str, check_rasters: bool) -> tuple:
    """(name, labels, date, season, tile, epsg, ulx, uly) of a valid v1.0 patch; PatchError otherwise, also
    for metadata that would place it nowhere: a projection without an EPSG code or a tile_source without
    its tile, which every spatial split needs."""
    meta = read_metadata(archive / name)
    file = metadata_file(archive / name).name
    m = _TILE.search(meta.tile_source)
    if m is None:
        raise PatchError(name, BAD_METADATA, file, f"tile_source {meta.tile_source!r} names no tile (_T<tile>_)")
    epsg = _epsg(meta.projection)
    if epsg is None:
        raise PatchError(name, BAD_METADATA, file, f"projection {_clip(meta.projection)!r} has no EPSG code")
    check_bands(archive / name, check_rasters)
    c = meta.coordinates
    return (meta.name, list(meta.labels), meta.acquisition_date, SEASONS[int(meta.acquisition_date[5:7])],
            m.group(1), epsg, c["ulx"], c["uly"])


def _clip(text: str, most: int = 60) -> str:
    """`text`, cut to `most` characters (a WKT string runs to hundreds) for a rejection's reason."""
    return text if len(text) <= most else f"{text[: most - 3]}..."


class V1(ArchiveLayout):
    """BigEarthNet-S2 v1.0: a folder of patch folders, each with its 12 band files and a labels JSON."""

    name = "v1"
    title = "BigEarthNet-S2 v1.0"
    schema = INDEX_SCHEMA
    reference_maps = False
    band_nodata = None
    patch_noun = "folders is a valid patch"

    def holds(self, folder: Path) -> bool:
        return False  # a folder of patch folders has no mark of its own: what `recognise` falls back to

    def patches(self, root: Path) -> tuple[list[str], list[tuple], Any]:
        if root.name == V2_PATCHES:
            raise ArchiveError(
                f"archive {root}: the {V2_PATCHES} folder of a v2.0 archive; pass the folder that holds it, "
                f"Reference_Maps/ and {reben.METADATA_FILE}"
            )
        names = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
        if not names:
            raise ArchiveError(f"archive {root}: no patch folders in it")
        return names, [], None

    def scanner(self, root: Path, check_rasters: bool) -> Callable[[str], tuple]:
        return partial(_v1_patch, root, check_rasters=check_rasters)

    def records(self, rows: list[tuple], context: Any) -> list[tuple]:
        snow, cloud = official.snow_patches(), official.cloud_shadow_patches()
        split, country = official.official_split(), official.countries()
        return [
            (name, labels, *_presence(labels), date, season, tile, country.get(name), name in snow,
             name in cloud, split.get(name), name, epsg, ulx, uly)
            for name, labels, date, season, tile, epsg, ulx, uly in rows
        ]  # fmt: skip


class V2(ArchiveLayout):
    """BigEarthNet-S2 v2.0 (reBEN): BigEarthNet-S2/<tile folder>/<patch>/ band files, a CORINE map per
    patch in Reference_Maps/, and the patch list with labels, split and flags in metadata.parquet."""

    name = "v2"
    title = "BigEarthNet-S2 v2.0 (reBEN)"
    schema = V2_SCHEMA
    reference_maps = True
    band_nodata = 0
    patch_noun = "patches is valid"

    def holds(self, folder: Path) -> bool:
        return (folder / V2_PATCHES).is_dir() or (folder / reben.METADATA_FILE).is_file()

    def patches(self, root: Path) -> tuple[list[str], list[tuple], Any]:
        if not (root / V2_PATCHES).is_dir():
            raise ArchiveError(
                f"archive {root}: no {V2_PATCHES}/ folder; expected the v2.0 root holding {V2_PATCHES}/, "
                f"Reference_Maps/ and {reben.METADATA_FILE}"
            )
        meta, bad_rows = reben.read_records(root)
        folders, stray = reben.list_patch_folders(root)
        names, unmatched = reben.match_folders(meta, folders, bad_rows + stray)
        return names, bad_rows + stray + unmatched, meta

    def scanner(self, root: Path, check_rasters: bool) -> Callable[[str], tuple]:
        return partial(reben.scan_patch, root, check_rasters=check_rasters)

    def records(self, rows: list[tuple], context: dict[str, reben.PatchRecord]) -> list[tuple]:
        records = []
        for name, codes, pixels, epsg, ulx, uly in rows:
            m = context[name]
            date = reben.acquisition_date(name)
            labels = [CLC_LEVEL3[code] for code in codes]
            mapped = sum(pixels)  # nodata pixels carry no class: out of the denominator
            share = dict(zip(codes, (p / mapped for p in pixels), strict=True))
            records.append(
                (name, labels, *_presence(labels), date, SEASONS[int(date[5:7])], reben.mgrs_tile(name),
                 m.country, m.snow, m.cloud_shadow, m.split, m.s2v1_name, epsg, ulx, uly,
                 m.labels_19, list(share.values()), *(share.get(code, 0.0) for code in SCHEME_CODES),
                 1 - mapped / PATCH_SIZE**2)
            )  # fmt: skip
        return records

    def check_columns(self, path: Path, names: list[str]) -> None:
        if f"{AREA_SHARE}{SCHEME_CODES[0]}" not in names and f"fraction_{SCHEME_CODES[0]}" in names:
            raise ArchiveError(f"index {path}: built when a v2.0 patch's area shares counted nodata pixels "
                               f"(columns fraction_<code>, now {AREA_SHARE}<code>); rebuild it with build_index")

    def demo_name(self, v1_name: str, tile: str, orbit: int) -> str:
        """v2.0 names insert the processing baseline, relative orbit and tile into the v1.0 name."""
        stem, col, row = v1_name.rsplit("_", 2)
        return f"{stem}_N9999_R{orbit:03d}_T{tile}_{col}_{row}"


LAYOUTS: dict[str, ArchiveLayout] = {layout.name: layout for layout in (V1(), V2())}
"""The registry: an archive version is one class here (then `make mlproject docs`: the parameters list it)."""
FALLBACK = LAYOUTS[V1.name]  # what `auto` takes a folder to be when no layout recognises it
AUTO = "auto"
VERSIONS = (AUTO, *LAYOUTS)


def layout_named(name: str, what: str = "version", *, auto_in: Path | None = None) -> ArchiveLayout:
    """The layout called `name`; given `auto_in`, also `auto`: the layout whose root that folder looks like
    (else FALLBACK). Any other name is a one-line ArchiveError naming `what` and the accepted names."""
    accepted = tuple(LAYOUTS) if auto_in is None else VERSIONS
    if name not in accepted:
        raise ArchiveError(f"{what}: {name!r} is not one of {', '.join(accepted)}")
    if name == AUTO and auto_in is not None:
        return next((layout for layout in LAYOUTS.values() if layout.holds(auto_in)), FALLBACK)
    return LAYOUTS[name]


def recognise(folder: Path, version: str = AUTO) -> ArchiveLayout:
    """The layout `version` names, or for auto the one whose root `folder` looks like (else FALLBACK)."""
    return layout_named(version, auto_in=folder)
