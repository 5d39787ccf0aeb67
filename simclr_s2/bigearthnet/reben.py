"""A BigEarthNet v2.0 (reBEN) archive as the index scans it: its two metadata tables, its folders, its maps.

The root is the folder the downloads unpack into, side by side:

    BigEarthNet-S2/<tile folder>/<patch>/<patch>_B01.tif ... _B12.tif
    Reference_Maps/<tile folder>/<patch>/<patch>_reference_map.tif
    metadata.parquet                                          480,038 patches
    metadata_for_patches_with_snow_cloud_or_shadow.parquet    69,450 patches, recommended for exclusion

Every patch folder has one row in the two tables together. A table that cannot be read as such stops the
index with one line naming the file; a bad row, a folder without a row, a row without a folder or a
broken map only rejects its patch, with the reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from simclr_s2.bigearthnet.nomenclature import LABELS_19
from simclr_s2.bigearthnet.official import SPLITS
from simclr_s2.bigearthnet.reader import (
    BAD_METADATA,
    V2_PATCHES,
    PatchError,
    check_bands,
    is_v2_name,
    patch_dir,
    tile_folder,
)
from simclr_s2.bigearthnet.reference_map import read_reference_map
from simclr_s2.errors import UserError

METADATA_FILE = "metadata.parquet"
EXCLUDED_FILE = "metadata_for_patches_with_snow_cloud_or_shadow.parquet"
# kinds of rejection besides reader.PATCH_ERROR_KINDS (a bad row is reader.BAD_METADATA)
MISSING_FOLDER = "missing patch folder"
NO_METADATA = "no metadata row"
STRAY_FOLDER = "stray folder"

_STRING, _LABELS, _FLAG = "string", "list of strings", "boolean"
_COLUMNS = {
    "patch_id": _STRING,
    "labels": _LABELS,
    "split": _STRING,
    "country": _STRING,
    "s2v1_name": _STRING,
    "contains_seasonal_snow": _FLAG,
    "contains_cloud_or_shadow": _FLAG,
}
_EXPECTED = "the BigEarthNet v2.0 metadata table with columns " + ", ".join(
    f"{name} ({kind})" for name, kind in _COLUMNS.items()
)
_LABEL_SET = frozenset(LABELS_19)
Rejection = tuple[str, str, str]  # (patch, kind, reason): a row of the rejected table


class MetadataError(UserError):
    """A metadata table of a v2.0 archive that cannot be read as one."""


@dataclass(frozen=True)
class PatchRecord:
    """One patch's row of the metadata tables."""

    labels_19: list[str]
    split: str
    country: str
    s2v1_name: str
    snow: bool
    cloud_shadow: bool


def _type_of(t: pa.DataType) -> str:
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return _STRING
    if (pa.types.is_list(t) or pa.types.is_large_list(t)) and _type_of(t.value_type) == _STRING:
        return _LABELS
    return _FLAG if pa.types.is_boolean(t) else str(t)


def read_metadata_table(path: Path) -> dict[str, list]:
    """Column -> values of one metadata table, after checking it is one (else one-line MetadataError)."""
    if not path.is_file():
        raise MetadataError(f"{path}: file not found; expected {_EXPECTED} (it comes with the archive)")
    try:
        schema = pq.read_schema(path)
        found = {name: _type_of(schema.field(name).type) for name in _COLUMNS if name in schema.names}
        wrong = [f"{n} is {found.get(n, 'missing')}" for n, kind in _COLUMNS.items() if found.get(n) != kind]
        if wrong:
            raise MetadataError(f"{path}: {'; '.join(wrong)}; expected {_EXPECTED}")
        return pq.read_table(path, columns=list(_COLUMNS)).to_pydict()
    except (OSError, pa.ArrowException) as e:
        detail = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise MetadataError(f"{path}: not a readable Parquet file ({detail}); expected {_EXPECTED}") from None


def _check_row(row: dict) -> str:
    """What is wrong with a metadata row, or "" when nothing is."""
    if not is_v2_name(row["patch_id"] or ""):
        return f"patch_id {row['patch_id']!r} is not a v2.0 patch name"
    if row["split"] not in SPLITS:
        return f"split {row['split']!r}, expected one of {', '.join(SPLITS)}"
    if row["labels"] is None:
        return "no labels list"
    unknown = [x for x in row["labels"] if x not in _LABEL_SET]
    if unknown:
        return f"labels {row['labels']!r}: {unknown[0]!r} is not a 19-class name"
    empty = [k for k in ("country", "s2v1_name") if not row[k]]
    flags = [k for k in ("contains_seasonal_snow", "contains_cloud_or_shadow") if row[k] is None]
    return f"no value in {', '.join(empty + flags)}" if empty or flags else ""


def read_records(root: Path) -> tuple[dict[str, PatchRecord], list[Rejection]]:
    """patch_id -> PatchRecord from both tables, and the rows rejected (bad values, patch listed twice)."""
    records: dict[str, PatchRecord] = {}
    rejected: dict[str, Rejection] = {}
    for file in (METADATA_FILE, EXCLUDED_FILE):
        table = read_metadata_table(root / file)
        for i, values in enumerate(zip(*table.values(), strict=True)):
            row = dict(zip(table, values, strict=True))
            name = row["patch_id"] or f"{file} row {i}"
            problem = _check_row(row)
            if name in records or name in rejected:
                problem = "listed more than once in the metadata tables"
                records.pop(name, None)
            if problem:
                rejected[name] = PatchError(name, BAD_METADATA, file, problem).as_row()
                continue
            records[name] = PatchRecord(
                labels_19=list(row["labels"]),
                split=row["split"],
                country=row["country"],
                s2v1_name=row["s2v1_name"],
                snow=row["contains_seasonal_snow"],
                cloud_shadow=row["contains_cloud_or_shadow"],
            )
    return records, list(rejected.values())


def list_patch_folders(root: Path) -> tuple[list[str], list[Rejection]]:
    """Names of the patch folders under BigEarthNet-S2/<tile folder>/, and the folders that are not one
    (a name that is no v2.0 patch name, or a patch in another acquisition's tile folder)."""
    names, rejected = [], []
    tiles = [e for e in os.scandir(root / V2_PATCHES) if e.is_dir() and not e.name.startswith(".")]
    for tile in tiles:
        for entry in os.scandir(tile.path):
            if not entry.is_dir() or entry.name.startswith("."):
                continue
            where = f"{V2_PATCHES}/{tile.name}/{entry.name}"
            if not is_v2_name(entry.name):
                rejected.append(PatchError(entry.name, STRAY_FOLDER, where, "not a v2.0 patch name").as_row())
            elif tile_folder(entry.name) != tile.name:
                expected = f"expected in {V2_PATCHES}/{tile_folder(entry.name)}/"
                rejected.append(PatchError(entry.name, STRAY_FOLDER, where, expected).as_row())
            else:
                names.append(entry.name)
    return sorted(names), rejected


def match_folders(
    records: dict[str, PatchRecord], folders: list[str], rejected: list[Rejection]
) -> tuple[list[str], list[Rejection]]:
    """The folders to scan (those with a metadata row), and a rejection for each folder without a row and
    each row without a folder; a patch `rejected` already (its row or its folder) is not rejected again."""
    on_disk, already = set(folders), {r[0] for r in rejected}

    def reject(name: str, kind: str, detail: str) -> Rejection:
        return PatchError(name, kind, f"{V2_PATCHES}/{tile_folder(name)}/{name}", detail).as_row()

    missing = (n for n in records if n not in on_disk and n not in already)
    orphans = (n for n in folders if n not in records and n not in already)
    return [n for n in folders if n in records], [
        *(reject(n, MISSING_FOLDER, "listed in the metadata, not on disk") for n in missing),
        *(reject(n, NO_METADATA, f"in neither {METADATA_FILE} nor {EXCLUDED_FILE}") for n in orphans),
    ]


def acquisition_date(name: str) -> str:
    """ "2017-06-13 10:10:31" from a v2.0 name (S2A_MSIL2A_20170613T101031_...), the v1.0 index's format.
    Slices, not strptime: the name pattern already holds the digits, and this runs once per patch."""
    d = name.split("_", 3)[2]
    return f"{d[:4]}-{d[4:6]}-{d[6:8]} {d[9:11]}:{d[11:13]}:{d[13:15]}"


def mgrs_tile(name: str) -> str:
    """ "33UUP" from a v2.0 name (..._R022_T33UUP_75_43): its Sentinel-2 tile, as v1.0 indexes have it."""
    return name.split("_")[5][1:]


def scan_patch(root: Path, name: str, check_rasters: bool) -> tuple:
    """(name, codes, pixel counts, epsg, ulx, uly) of a patch with sound bands and map; PatchError if not."""
    check_bands(patch_dir(root, name), check_rasters)
    ref = read_reference_map(root, name)
    return name, ref.codes, ref.pixels, ref.epsg, ref.ulx, ref.uly
