"""Archive folder -> one Parquet row per patch, plus a table of the patches that could not be read.

Patches are checked in worker processes, a chunk of names per task. By default a patch is valid when its
12 band files exist with TIFF headers that give the right size, one uint16 band and no data past the end
of the file (tiff.py), and, in v1.0, its labels JSON parses with the right keys and class names; in v2.0
its row of metadata.parquet is sound and its reference map decodes to CORINE codes (reference_map.py).
That finds every kind of damage seen in practice at about 3,900 v1.0 and 3,000 v2.0 patches per
CPU-second (benchmarks/bench_index.py: a map costs more than a JSON file, the 12 band headers most);
`check_rasters=True` also decodes every band through rasterio (corrupt compressed data would show there),
at about 65 patches per CPU-second: over an hour on 2 cores for the 590,326 patches, against minutes.

Both versions give the columns of INDEX_SCHEMA with the same meaning, v1.0's labels being those of its
JSON and v2.0's the classes its reference map holds; v2.0 adds V2_COLUMNS, each label's share of the
patch's mapped area. Columns say what they hold: `present_<scheme>` is label presence (a class of the
scheme anywhere in the patch), `area_share_<code>` a share of area; the label a split uses is neither
(the scheme's rule, nomenclature.scheme_labels). The Parquet metadata records the archive root and version.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from functools import cache, partial
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from rasterio.crs import CRS
from rasterio.errors import CRSError
from tqdm import tqdm

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
from simclr_s2.bigearthnet.reader import V2_PATCHES, PatchError, check_bands, read_metadata
from simclr_s2.errors import UserError
from simclr_s2.hashing import sha256_file

SEASONS = {12: "Winter", 1: "Winter", 2: "Winter", 3: "Spring", 4: "Spring", 5: "Spring",
           6: "Summer", 7: "Summer", 8: "Summer", 9: "Autumn", 10: "Autumn", 11: "Autumn"}  # fmt: skip
VERSIONS = ("auto", "v1", "v2")
UNREADABLE_FOLDER = "unreadable folder"
_TILE = re.compile(r"_T(\d{2}[A-Z]{3})_")
AREA_SHARE = "area_share_"  # area_share_<CLC code>: that code's share of the patch's mapped pixels
NODATA_SHARE = "nodata_share"  # share of the patch's pixels no CORINE polygon covers

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
LEGACY_COLUMNS = {f"positive_{scheme}": f"{PRESENT}{scheme}" for scheme in SCHEMES}
"""Presence columns of indexes built before the columns were named by meaning: the same values, renamed
on load. A v2.0 index of that time (columns `fraction_<code>`) counted nodata in its shares: refused."""
REJECTED_SCHEMA = pa.schema([("name", pa.string()), ("kind", pa.string()), ("reason", pa.string())])
_LIST_COLUMNS = ("labels", "labels_19", LABEL_FRACTIONS)


class ArchiveError(UserError):
    """The archive or the index file is not what was expected."""


@dataclass(frozen=True)
class IndexResult:
    index_path: Path
    rejected_path: Path
    n_indexed: int
    n_rejected: int
    seconds: float
    version: str  # "v1" or "v2"

    @property
    def patches_per_second(self) -> float:
        return (self.n_indexed + self.n_rejected) / max(self.seconds, 1e-9)


def rejected_path_for(index_path: Path) -> Path:
    """`index.parquet` -> `index.rejected.parquet`, beside it."""
    return index_path.with_name(f"{index_path.stem}.rejected{index_path.suffix}")


def archive_version(archive: Path, version: str = "auto") -> str:
    """ "v1" or "v2": `version` itself, or for "auto" v2 when the folder holds BigEarthNet-S2/ or
    metadata.parquet (a v2.0 root), else v1."""
    if version not in VERSIONS:
        raise ArchiveError(f"version: {version!r} is not one of {', '.join(VERSIONS)}")
    if version != "auto":
        return version
    v2 = (archive / V2_PATCHES).is_dir() or (archive / reben.METADATA_FILE).is_file()
    return "v2" if v2 else "v1"


@cache
def _epsg(wkt: str) -> int | None:
    """EPSG code of a v1.0 JSON's projection (a handful of distinct strings: parsed once per process)."""
    try:
        return CRS.from_wkt(wkt).to_epsg()
    except CRSError:
        return None


def _v1_patch(archive: Path, name: str, check_rasters: bool) -> tuple:
    """(name, labels, date, season, tile, epsg, ulx, uly) of a valid v1.0 patch; PatchError otherwise."""
    meta = read_metadata(archive / name)
    check_bands(archive / name, check_rasters)
    m = _TILE.search(meta.tile_source)
    season = SEASONS[int(meta.acquisition_date[5:7])]
    tile = m.group(1) if m else meta.tile_source
    c = meta.coordinates
    return (
        meta.name,
        list(meta.labels),
        meta.acquisition_date,
        season,
        tile,
        _epsg(meta.projection),
        c["ulx"],
        c["uly"],
    )


def _index_chunk(scan_patch: Callable[[str], tuple], names: list[str]) -> tuple[list[tuple], list[tuple]]:
    rows, rejected = [], []
    for name in names:
        try:
            rows.append(scan_patch(name))
        except PatchError as e:
            rejected.append(e.as_row())
        except OSError as e:  # a folder that vanished or cannot be read: still never stop the scan
            rejected.append((name, UNREADABLE_FOLDER, f"{UNREADABLE_FOLDER}: {name}: {e}"))
    return rows, rejected


def _chunks(names: list[str], workers: int) -> Iterator[list[str]]:
    size = min(2000, max(50, math.ceil(len(names) / (workers * 16))))
    return (names[i : i + size] for i in range(0, len(names), size))


def _scan(
    scan_patch: Callable[[str], tuple], names: list[str], workers: int | None
) -> tuple[list[tuple], list[tuple]]:
    """Rows and rejections of `names`, each checked by `scan_patch` (picklable), sorted by name."""
    workers = max(1, min(workers or len(os.sched_getaffinity(0)), len(names) // 50 or 1))
    rows: list[tuple] = []
    rejected: list[tuple] = []
    with tqdm(total=len(names), desc="indexing patches", unit="patch", disable=None) as bar:
        if workers == 1:
            for chunk in _chunks(names, 1):
                r, j = _index_chunk(scan_patch, chunk)
                rows += r
                rejected += j
                bar.update(len(chunk))
        else:
            with ProcessPoolExecutor(workers) as pool:
                futures = {pool.submit(_index_chunk, scan_patch, c): len(c) for c in _chunks(names, workers)}
                for f in as_completed(futures):
                    r, j = f.result()
                    rows += r
                    rejected += j
                    bar.update(futures[f])
    return sorted(rows), rejected


def _table(records: list[tuple], schema: pa.Schema) -> pa.Table:
    """Rows in `schema` order -> table (column-wise: much faster than one dict per row)."""
    columns = list(zip(*records, strict=True)) if records else [[] for _ in schema]
    arrays = [pa.array(c, type=f.type) for c, f in zip(columns, schema, strict=True)]
    return pa.Table.from_arrays(arrays, schema=schema)


def _positives(labels: list[str]) -> tuple[bool, ...]:
    return tuple(is_positive(labels, classes) for classes in SCHEMES.values())


def _v1_table(rows: list[tuple]) -> pa.Table:
    snow, cloud = official.snow_patches(), official.cloud_shadow_patches()
    split, country = official.official_split(), official.countries()
    records = [
        (name, labels, *_positives(labels), date, season, tile, country.get(name), name in snow,
         name in cloud, split.get(name), name, epsg, ulx, uly)
        for name, labels, date, season, tile, epsg, ulx, uly in rows
    ]  # fmt: skip
    return _table(records, INDEX_SCHEMA)


def _v2_table(rows: list[tuple], meta: dict[str, reben.PatchRecord]) -> pa.Table:
    records = []
    for name, codes, pixels, epsg, ulx, uly in rows:
        m = meta[name]
        date = reben.acquisition_date(name)
        labels = [CLC_LEVEL3[code] for code in codes]
        mapped = sum(pixels)  # nodata pixels carry no class: out of the denominator
        share = dict(zip(codes, (p / mapped for p in pixels), strict=True))
        records.append(
            (name, labels, *_positives(labels), date, SEASONS[int(date[5:7])], reben.mgrs_tile(name),
             m.country, m.snow, m.cloud_shadow, m.split, m.s2v1_name, epsg, ulx, uly,
             m.labels_19, list(share.values()), *(share.get(code, 0.0) for code in SCHEME_CODES),
             1 - mapped / PATCH_SIZE**2)
        )  # fmt: skip
    return _table(records, V2_SCHEMA)


def _scan_v1(archive: Path, workers: int | None, check_rasters: bool) -> tuple[pa.Table, list[tuple]]:
    if archive.name == V2_PATCHES:
        raise ArchiveError(
            f"archive {archive}: the {V2_PATCHES} folder of a v2.0 archive; pass the folder that holds it, "
            f"Reference_Maps/ and {reben.METADATA_FILE}"
        )
    names = sorted(e.name for e in os.scandir(archive) if e.is_dir() and not e.name.startswith("."))
    if not names:
        raise ArchiveError(f"archive {archive}: no patch folders in it")
    rows, rejected = _scan(partial(_v1_patch, archive, check_rasters=check_rasters), names, workers)
    return _v1_table(rows), rejected


def _scan_v2(root: Path, workers: int | None, check_rasters: bool) -> tuple[pa.Table, list[tuple]]:
    if not (root / V2_PATCHES).is_dir():
        raise ArchiveError(
            f"archive {root}: no {V2_PATCHES}/ folder; expected the v2.0 root holding {V2_PATCHES}/, "
            f"Reference_Maps/ and {reben.METADATA_FILE}"
        )
    meta, bad_rows = reben.read_records(root)
    folders, stray = reben.list_patch_folders(root)
    names, unmatched = reben.match_folders(meta, folders, bad_rows + stray)
    rows, rejected = _scan(partial(reben.scan_patch, root, check_rasters=check_rasters), names, workers)
    return _v2_table(rows, meta), bad_rows + stray + unmatched + rejected


def build_index(
    archive: Path,
    out: Path,
    workers: int | None = None,
    check_rasters: bool = False,
    version: str = "auto",
) -> IndexResult:
    """Index every patch of `archive` into the Parquet file `out`; broken ones go to
    `rejected_path_for(out)` with the reason. `version` "auto" tells v1.0 from v2.0 by the folder
    (archive_version). Rows are sorted by name, so the files (and their digest) do not depend on
    `workers`, which defaults to the usable CPU count.
    """
    start = time.perf_counter()
    archive, out = Path(archive).resolve(), Path(out)
    if not archive.is_dir():
        raise ArchiveError(
            f"archive {archive}: expected a folder of BigEarthNet-S2 v1.0 patch folders, or the v2.0 folder "
            f"holding {V2_PATCHES}/, Reference_Maps/ and {reben.METADATA_FILE}"
        )
    version = archive_version(archive, version)
    scan = _scan_v2 if version == "v2" else _scan_v1
    table, rejected = scan(archive, workers, check_rasters)
    return _write(archive, out, version, table, rejected, check_rasters, start)


def write_v2_index(
    root: Path, out: Path, rows: list[tuple], meta: dict[str, reben.PatchRecord], rejected: list[tuple],
    start: float,
) -> IndexResult:
    """The v2.0 index of `root` from rows scanned elsewhere (`reben.scan_patch`'s tuples; stream.py reads
    the maps from Reference_Maps.tar.zst), written exactly as build_index writes it; `start` is when the
    scan began (perf_counter)."""
    return _write(Path(root).resolve(), Path(out), "v2", _v2_table(sorted(rows), meta), rejected, False, start)


def _write(
    archive: Path, out: Path, version: str, table: pa.Table, rejected: list[tuple], check_rasters: bool,
    start: float,
) -> IndexResult:
    rejected.sort()
    if not table.num_rows:
        what = {"v1": "folders is a valid patch", "v2": "patches is valid"}[version]
        example = f" (e.g. {rejected[0][0]}: {rejected[0][2]})" if rejected else ""
        raise ArchiveError(f"archive {archive}: none of its {len(rejected)} {what}{example}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        b"archive_root": str(archive).encode(),
        b"archive_version": version.encode(),
        b"check_rasters": str(check_rasters).lower().encode(),
    }
    pq.write_table(table.replace_schema_metadata(meta), out)
    rejected_path = rejected_path_for(out)
    rejected_table = _table(rejected, REJECTED_SCHEMA)
    pq.write_table(rejected_table.replace_schema_metadata(meta), rejected_path)
    seconds = time.perf_counter() - start
    return IndexResult(out, rejected_path, table.num_rows, len(rejected), seconds, version)


def _index_metadata(path: Path) -> dict[bytes, bytes]:
    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as e:
        raise ArchiveError(f"index {path}: not a Parquet file ({e})") from None


def load_index(path: Path) -> pd.DataFrame:
    """The index as a DataFrame (list columns as lists), after checking that the file is an index."""
    path = Path(path)
    if not path.is_file():
        raise ArchiveError(f"index {path}: file not found (build it with build_index)")
    version = index_archive_version(path)
    schema = V2_SCHEMA if version == "v2" else INDEX_SCHEMA
    names = pq.read_schema(path).names
    if version == "v2" and f"{AREA_SHARE}{SCHEME_CODES[0]}" not in names and f"fraction_{SCHEME_CODES[0]}" in names:
        raise ArchiveError(f"index {path}: built when a v2.0 patch's area shares counted nodata pixels "
                           f"(columns fraction_<code>, now {AREA_SHARE}<code>); rebuild it with build_index")
    renamed = {old: new for old, new in LEGACY_COLUMNS.items() if old in names and new not in names}
    missing = [n for n in schema.names if n not in names and n not in renamed.values()]
    if missing:
        raise ArchiveError(
            f"index {path}: missing column(s) {', '.join(missing)}; not an index, or one built by an older "
            "version: rebuild it with build_index"
        )
    df = pq.read_table(path).to_pandas().rename(columns=renamed)
    for column in _LIST_COLUMNS:
        if column in df.columns:
            df[column] = df[column].map(list)
    return df


def index_archive_root(path: Path) -> Path:
    """The archive folder the index was built from (Parquet key-value metadata `archive_root`)."""
    meta = _index_metadata(path)
    if b"archive_root" not in meta:
        raise ArchiveError(f"index {path}: no archive_root in its metadata; is it an index file?")
    return Path(meta[b"archive_root"].decode())


def index_archive_version(path: Path) -> str:
    """ "v1" or "v2": the archive version the index was built from (indexes older than v2.0 support: v1)."""
    return _index_metadata(path).get(b"archive_version", b"v1").decode()


def index_digest(path: Path) -> str:
    """sha256 hex of the index file's bytes: what runs log to tie results to one index."""
    return sha256_file(path)
