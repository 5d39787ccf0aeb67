"""The fetch stage: the real archive's files downloaded and verified, its index built from the reference maps,
and chosen patches packed from BigEarthNet-S2.tar.zst into the store training reads (or all of it unpacked,
extract=true)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from simclr_s2.bigearthnet import packed, reben
from simclr_s2.bigearthnet.bands import Bands
from simclr_s2.bigearthnet.download import FILES, fetch
from simclr_s2.bigearthnet.index import build_index, index_archive_root, is_whole, rejected_path_for
from simclr_s2.bigearthnet.layouts import V2, ArchiveError
from simclr_s2.bigearthnet.stream import extract, stream_index, stream_pack
from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.stages.data import ARCHIVE_TAG, DataStage, _absolute, _folder
from simclr_s2.stages.inputs import fetcher, load_split_data, read_index, store_path
from simclr_s2.study.splits import load_manifest
from simclr_s2.tracking.tracker import StageRun

INDEX_INPUTS = (FILES["maps"], reben.METADATA_FILE, reben.EXCLUDED_FILE)


class Fetch(DataStage[specs.Fetch]):
    spec = specs.Fetch

    def run_name(self, spec: specs.Fetch, resolved: Mapping[str, str]) -> str:
        return "fetch-" + "+".join(spec.parts) + (f"-pack-{spec.pack}" if spec.pack != "none" else "")

    def execute(self, spec: specs.Fetch, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        started = time.perf_counter()
        dest = _folder(spec, resolved, "dest")
        index = None if spec.index == "none" else _folder(spec, resolved, "index")
        files = fetch(list(spec.parts), dest, spec.url,
                      None if spec.checksums == "pinned" else _absolute(spec.checksums))
        run.set_tags({ARCHIVE_TAG: str(dest), "simclr_s2.checksums": spec.checksums})
        print(f"files: {', '.join(str(f) for f in files.values())}")
        if spec.extract:
            for part in ("maps", "s2"):
                if part in files:
                    print(f"unpacked {files[part].name}: {extract(files[part], dest)} files written")
        metrics: dict[str, float] = {}
        if index is not None:
            index_path = _index(dest, index / "index.parquet", spec.extract)
            metrics |= {"patches_indexed": pq.ParquetFile(index_path).metadata.num_rows,
                        "patches_rejected": pq.ParquetFile(rejected_path_for(index_path)).metadata.num_rows}
            if spec.pack != "none":
                store = _pack(spec, ctx, index_path, files["s2"])
                metrics["patches_packed"] = len(store)
                print(f"packed store: {store.path} ({len(store)} patches, {','.join(store.bands)})")
        run.log_metrics({**metrics, "seconds": time.perf_counter() - started})


def _index(dest: Path, out: Path, unpacked: bool) -> Path:
    """The index of the archive in `dest`: built from the unpacked folders (extract=true) or streamed from
    the maps; kept when it is whole (with its rejected table), of this very `dest` (the default index folder
    is one for every dest) and newer than every file it is made from."""
    missing = [f for f in INDEX_INPUTS if not (dest / f).is_file()]
    if missing:
        raise UserError(f"index: needs {', '.join(missing)} in dest {dest}; add maps, metadata and snow to parts, "
                        "or index=none")
    if out.exists() and not unpacked:
        if not is_whole(out):
            print(f"index: {out} or {rejected_path_for(out).name} is missing or unreadable; building it again")
        elif (root := _archive_of(out)) != str(dest):
            print(f"index: {out} is the index of archive {root}, not of dest {dest}; building it again")
        elif out.stat().st_mtime > max((dest / f).stat().st_mtime for f in INDEX_INPUTS):
            print(f"index: {out} (kept: newer than {', '.join(INDEX_INPUTS)})")
            return out
    result = build_index(dest, out, version=V2.name) if unpacked else stream_index(dest / FILES["maps"], dest, out)
    print(f"index: {result.index_path} ({result.n_indexed} patches, {result.n_rejected} rejected)")
    return result.index_path


def _archive_of(index: Path) -> str:
    """The archive root an index records; "none" for a Parquet file that records none (not an index)."""
    try:
        return str(index_archive_root(index))
    except ArchiveError:
        return "none"


def _chosen(spec: specs.Fetch, index: pd.DataFrame) -> list[str]:
    """The index's patches in official_split, countries and tiles (each `all` or a list)."""
    keep = pd.Series(True, index=index.index)
    for column, given, sep in (("official_split", spec.official_split, "+"), ("country", spec.countries, ","),
                               ("tile", spec.tiles, ",")):
        if given == "all":
            continue
        values = {v.strip() for v in given.split(sep) if v.strip()}
        unknown = sorted(values - set(index[column].dropna()))
        if unknown:
            name = {"official_split": "official_split", "country": "countries", "tile": "tiles"}[column]
            raise UserError(f"{name}: no patch of the index has {', '.join(unknown)}")
        keep &= index[column].isin(values)
    names = sorted(index.loc[keep, "name"])
    if not names:
        raise UserError("official_split, countries, tiles: together they choose no patch of the index")
    return names


def _pack(spec: specs.Fetch, ctx: Context, index_path: Path, archive: Path) -> packed.PackedStore:
    """Pack the chosen patches into the store a loader of them would use (inputs.store_path)."""
    fetch_ = fetcher(ctx)
    if spec.pack == "splits":
        fractions = load_manifest(fetch_.path(spec.splits, "split"), spec.scheme).fractions
        split = load_split_data(fetch_, spec.splits, spec.scheme, max(fractions))
        names, digest, root = split.pool, split.index_digest, split.archive_root
        _of_this_archive(spec, root, index_path)
    else:
        index = read_index(fetch_, str(index_path))
        names, digest, root = _chosen(spec, index.frame), index.digest, index.archive_root
    bands = Bands.parse(spec.bands)
    store = store_path(ctx, digest, bands, sorted(names))
    workers = spec.workers or None
    if spec.extract:
        return packed.open_or_pack(root, sorted(names), store, bands, digest, workers)
    return stream_pack(archive, sorted(names), store, bands, digest, root, workers)


def _of_this_archive(spec: specs.Fetch, root: Path, index_path: Path) -> None:
    """Refuse, before the archive is read, splits drawn from another archive's index than the one fetched
    (its patches are not in BigEarthNet-S2.tar.zst: the stream would find none of them, at its end)."""
    fetched = index_archive_root(index_path)
    if root != fetched:
        raise UserError(f"splits: {spec.splits} (scheme {spec.scheme}) was drawn from the index of archive {root}; "
                        f"expected splits of the archive fetched, {fetched} (draw them from {index_path})")


FETCH = Fetch()
