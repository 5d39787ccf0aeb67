"""Archive folder -> one Parquet row per patch, plus a table of the patches that could not be read.

Patches are checked in worker processes, a chunk of names per task. By default a patch is valid when its
12 band files exist with TIFF headers that give the right size, one uint16 band and no data past the end
of the file (tiff.py), and, in v1.0, its labels JSON parses with the right keys and class names; in v2.0
its row of metadata.parquet is sound and its reference map decodes to CORINE codes (reference_map.py).
That finds every kind of damage seen in practice at about 3,900 v1.0 and 3,000 v2.0 patches per
CPU-second (benchmarks/bench_index.py: a map costs more than a JSON file, the 12 band headers most);
`check_rasters=True` also decodes every band through rasterio (corrupt compressed data would show there),
at about 65 patches per CPU-second: over an hour on 2 cores for the 590,326 patches, against minutes.

Each version is a class in layouts.py (its patches, its scan, its rows); both give the columns of
layouts.INDEX_SCHEMA with the same meaning, v1.0's labels being those of its
JSON and v2.0's the classes its reference map holds; v2.0 adds V2_COLUMNS, each label's share of the
patch's mapped area. Columns say what they hold: `present_<scheme>` is label presence (a class of the
scheme anywhere in the patch), `area_share_<code>` a share of area; the label a split uses is neither
(the scheme's rule, nomenclature.scheme_labels). The Parquet metadata records the archive root and version.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from simclr_s2 import disk, faults
from simclr_s2.bigearthnet import reben
from simclr_s2.bigearthnet.layouts import (
    LAYOUTS,
    V1,
    V2,
    ArchiveError,
    ArchiveLayout,
    layout_named,
    recognise,
)
from simclr_s2.bigearthnet.nomenclature import LABEL_FRACTIONS, PRESENT, SCHEMES
from simclr_s2.bigearthnet.reader import V2_PATCHES, PatchError
from simclr_s2.hashing import sha256_file

UNREADABLE_FOLDER = "unreadable folder"
LEGACY_COLUMNS = {f"positive_{scheme}": f"{PRESENT}{scheme}" for scheme in SCHEMES}
"""Presence columns of indexes built before the columns were named by meaning: the same values, renamed
on load. A v2.0 index of that time (columns `fraction_<code>`) counted nodata in its shares: refused."""
REJECTED_SCHEMA = pa.schema([("name", pa.string()), ("kind", pa.string()), ("reason", pa.string())])
_LIST_COLUMNS = ("labels", "labels_19", LABEL_FRACTIONS)


@dataclass(frozen=True)
class IndexResult:
    index_path: Path
    rejected_path: Path
    n_indexed: int
    n_rejected: int
    seconds: float
    version: str  # the archive's layout, by name (layouts.LAYOUTS)

    @property
    def patches_per_second(self) -> float:
        return (self.n_indexed + self.n_rejected) / max(self.seconds, 1e-9)


def rejected_path_for(index_path: Path) -> Path:
    """`index.parquet` -> `index.rejected.parquet`, beside it."""
    return index_path.with_name(f"{index_path.stem}.rejected{index_path.suffix}")


def archive_version(archive: Path, version: str = "auto") -> ArchiveLayout:
    """The archive's layout: the one `version` names, or for "auto" the one its folder looks like."""
    return recognise(archive, version)


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
    layout = archive_version(archive, version)
    names, rejected, context = layout.patches(archive)
    rows, broken = _scan(layout.scanner(archive, check_rasters), names, workers)
    table = _table(layout.records(rows, context), layout.schema)
    return _write(archive, out, layout, table, rejected + broken, check_rasters, start)


def write_v2_index(
    root: Path, out: Path, rows: list[tuple], meta: dict[str, reben.PatchRecord], rejected: list[tuple],
    start: float,
) -> IndexResult:
    """The v2.0 index of `root` from rows scanned elsewhere (`reben.scan_patch`'s tuples; stream.py reads
    the maps from Reference_Maps.tar.zst), written exactly as build_index writes it; `start` is when the
    scan began (perf_counter)."""
    v2 = LAYOUTS[V2.name]
    table = _table(v2.records(sorted(rows), meta), v2.schema)
    return _write(Path(root).resolve(), Path(out), v2, table, rejected, False, start)


def _write(
    archive: Path, out: Path, layout: ArchiveLayout, table: pa.Table, rejected: list[tuple], check_rasters: bool,
    start: float,
) -> IndexResult:
    rejected.sort()
    if not table.num_rows:
        example = f" (e.g. {rejected[0][0]}: {rejected[0][2]})" if rejected else ""
        raise ArchiveError(f"archive {archive}: none of its {len(rejected)} {layout.patch_noun}{example}")
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        b"archive_root": str(archive).encode(),
        b"archive_version": layout.name.encode(),
        b"check_rasters": str(check_rasters).lower().encode(),
    }
    rejected_path = rejected_path_for(out)
    _write_pair(out, table.replace_schema_metadata(meta), rejected_path,
                _table(rejected, REJECTED_SCHEMA).replace_schema_metadata(meta))
    seconds = time.perf_counter() - start
    return IndexResult(out, rejected_path, table.num_rows, len(rejected), seconds, layout.name)


def _write_pair(out: Path, table: pa.Table, rejected_path: Path, rejected: pa.Table) -> None:
    """Write the index and its rejected table so that an index.parquet that exists has its rejected table
    beside it, both whole and of one build: each is written under a temporary name and synced, the old index
    removed, then the rejected table renamed into place and the index last. A kill or a full disk mid-write
    leaves the old pair, or no index (fetch then builds it again), never half a file under either name; the
    temporary files a killed build left are removed by the next."""
    for path in (rejected_path, out):  # what a build killed while writing left
        disk.remove_left_by_dead(out.parent, f".{path.name}.*.partial", lambda name: name.split(".")[-2])
    partials = {path: path.with_name(f".{path.name}.{os.getpid()}.partial") for path in (rejected_path, out)}
    try:
        for (path, partial), data in zip(partials.items(), (rejected, table), strict=True):
            with disk.writing(path), open(partial, "wb") as fh:  # a full disk named: fetch's index may be anywhere
                pq.write_table(data, fh)
                fh.flush()
                os.fsync(fh.fileno())
        out.unlink(missing_ok=True)
        os.replace(partials[rejected_path], rejected_path)
        faults.point("index_write", 0)  # the rejected table in place, the index not yet
        os.replace(partials[out], out)
        disk.sync_folder(out.parent)
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)


def is_whole(index_path: Path) -> bool:
    """Whether the index and its rejected table are both there and readable Parquet (a file damaged since it
    was written, or an index of a version that wrote them in place and was stopped between, is not)."""
    try:
        for path in (index_path, rejected_path_for(index_path)):
            pq.read_metadata(path)
    except (OSError, pa.ArrowException):
        return False
    return True


def _index_metadata(path: Path) -> dict[bytes, bytes]:
    try:
        return pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as e:
        raise ArchiveError(f"index {path}: not a Parquet file ({e})") from None


def load_index(path: Path) -> pd.DataFrame:
    """The index as a DataFrame (list columns as lists), after checking that the file is an index."""
    path = Path(path)
    if path.is_dir():  # build_index's output folder, given for the file it holds
        raise ArchiveError(f"index {path}: a folder; expected the index file, such as {path / 'index.parquet'}")
    if not path.is_file():
        raise ArchiveError(f"index {path}: file not found (build it with build_index)")
    layout = index_layout(path)
    schema = layout.schema
    names = pq.read_schema(path).names
    layout.check_columns(path, names)
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


def index_layout(path: Path) -> ArchiveLayout:
    """The layout of the archive the index was built from (indexes older than v2.0 support: v1)."""
    name = _index_metadata(path).get(b"archive_version", V1.name.encode()).decode()
    return layout_named(name, f"index {path}: archive_version")


def index_digest(path: Path) -> str:
    """sha256 hex of the index file's bytes: what runs log to tie results to one index."""
    return sha256_file(path)
