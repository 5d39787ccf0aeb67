"""The index of v1.0 and v2.0 archives: one row per patch with flags that agree with labels, dates, maps and
the official lists; every kind of broken patch in the rejected table with its reason; files independent of
the worker count."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio
from tiff_damage import empty_width

from simclr_s2 import faults
from simclr_s2.bigearthnet import layouts, reader, reben
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.geotiff_writer import write_geotiff
from simclr_s2.bigearthnet.index import (
    ArchiveError,
    archive_version,
    build_index,
    index_archive_root,
    index_digest,
    index_layout,
    is_whole,
    load_index,
    rejected_path_for,
)
from simclr_s2.bigearthnet.layouts import INDEX_SCHEMA, SEASONS, V2_SCHEMA
from simclr_s2.bigearthnet.nomenclature import (
    CLC_LEVEL3,
    DEFAULT_MIN_FRACTION,
    SCHEME_CODES,
    SCHEMES,
    is_positive,
    labels_19,
    scheme_labels,
)
from simclr_s2.bigearthnet.reader import patch_dir, read_metadata, reference_map_file, tile_folder
from simclr_s2.errors import UserError
from simclr_s2.study.split_kinds import group_keys


def test_one_row_per_patch_with_the_contract_columns(demo_archive, demo_index, demo_recipe):
    schema = pq.read_schema(demo_index)
    assert schema.remove_metadata() == INDEX_SCHEMA
    assert index_archive_root(demo_index) == demo_archive.resolve()
    df = load_index(demo_index)
    assert len(df) == demo_recipe["n_patches"] and df["name"].is_unique
    assert list(df["name"]) == sorted(p.name for p in demo_archive.iterdir())
    assert len(pq.read_table(rejected_path_for(demo_index))) == 0


def test_rows_agree_with_the_patch_files(demo_archive, demo_index):
    for row in load_index(demo_index).itertuples():
        meta = read_metadata(demo_archive / row.name)
        assert row.labels == list(meta.labels)
        assert row.acquisition_date == meta.acquisition_date
        assert row.season == SEASONS[int(meta.acquisition_date[5:7])]
        assert f"_T{row.tile}_" in meta.tile_source
        for scheme, classes in SCHEMES.items():
            assert getattr(row, f"present_{scheme}") == is_positive(meta.labels, classes)


def test_flags_from_the_official_lists(demo_index, demo_recipe):
    df = load_index(demo_index).set_index("name")
    listed = demo_recipe["listed"]
    for name, (snow, cloud, split, country) in listed.items():
        row = df.loc[name].replace({np.nan: None})  # pandas reads a null string as NaN
        assert (row.snow, row.cloud_shadow, row.official_split, row.country) == (snow, cloud, split, country)
    synthetic = df.drop(index=list(listed))
    assert not synthetic[["snow", "cloud_shadow"]].any().any()
    assert synthetic[["official_split", "country"]].isna().all().all()


def test_seasons_and_schemes_all_present(demo_index):
    df = load_index(demo_index)
    assert set(df["season"]) == {"Winter", "Spring", "Summer", "Autumn"}
    assert df["present_basic"].sum() >= 10 and df["present_expanded"].sum() > df["present_basic"].sum()
    assert not (df["present_basic"] & ~df["present_expanded"]).any()  # basic is inside expanded


def test_real_patches(real_archive, tmp_path):
    result = build_index(real_archive, tmp_path / "real.parquet", workers=1, check_rasters=True)
    df = load_index(result.index_path).set_index("name")
    assert result.n_rejected == 0 and len(df) == 6
    quirky = df.loc["S2B_MSIL2A_20170924T93020_69_24"]  # 5-digit time in the name: the JSON is what counts
    assert (quirky.acquisition_date, quirky.tile, quirky.season, quirky.country) == (
        "2017-09-24 09:30:20",
        "35VPK",
        "Autumn",
        "Finland",
    )
    snowy = df.loc["S2B_MSIL2A_20180204T94161_57_38"]
    assert snowy.snow and pd.isna(snowy.official_split) and snowy.season == "Winter"
    austria = df.loc["S2A_MSIL2A_20170613T101031_87_48"]
    assert (austria.country, austria.official_split, austria.tile) == ("Austria", "test", "33UUP")


def test_same_files_whatever_the_workers(demo_archive, demo_index, tmp_path):
    again = build_index(demo_archive, tmp_path / "index.parquet", workers=1)
    assert index_digest(again.index_path) == index_digest(demo_index)
    assert re.fullmatch(r"[0-9a-f]{64}", index_digest(demo_index))


# --- broken patches -------------------------------------------------------------------------------------


def _write_band(path: Path, size: int, dtype: str = "uint16") -> None:
    write_geotiff(path, np.ones((size, size), dtype=dtype), "EPSG:32633", 10, 600000, 5000040)


def _json(p: Path) -> Path:
    return p / f"{p.name}_labels_metadata.json"


def _band(p: Path, band: str) -> Path:
    return p / f"{p.name}_{band}.tif"


def _edit_json(p: Path, **changes) -> None:
    meta = {**json.loads(_json(p).read_text()), **changes}
    _json(p).write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


def _edit_coordinate(p: Path, value: float) -> None:
    _edit_json(p, coordinates={**json.loads(_json(p).read_text())["coordinates"], "ulx": value})


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:4000])


JSON = "_labels_metadata.json"
BREAKERS = {  # how to break a patch -> (kind, file suffix the reason names)
    "no_json": (lambda p: _json(p).unlink(), reader.MISSING_JSON, JSON),
    "bad_json": (lambda p: _json(p).write_text('{"labels": ["Vineyards"'), reader.UNPARSEABLE_JSON, JSON),
    "no_labels_key": (lambda p: _edit_json(p, labels=None), reader.BAD_METADATA, JSON),
    "unknown_class": (lambda p: _edit_json(p, labels=["Irrigated"]), reader.BAD_METADATA, JSON),
    "bad_coordinates": (lambda p: _edit_json(p, coordinates={"ulx": 1}), reader.BAD_METADATA, JSON),
    # metadata that places a patch nowhere: every spatial split of the index would be refused for it
    "nan_coordinate": (lambda p: _edit_coordinate(p, float("nan")), reader.BAD_METADATA, JSON),
    "infinite_coordinate": (lambda p: _edit_coordinate(p, float("inf")), reader.BAD_METADATA, JSON),
    "no_epsg": (lambda p: _edit_json(p, projection="garbage"), reader.BAD_METADATA, JSON),
    "no_tile": (lambda p: _edit_json(p, tile_source="no tile here"), reader.BAD_METADATA, JSON),
    "no_band": (lambda p: _band(p, "B8A").unlink(), reader.MISSING_BAND, "_B8A.tif"),
    "small_band": (lambda p: _write_band(_band(p, "B02"), 60), reader.WRONG_SIZE, "_B02.tif"),
    "big_band": (lambda p: _write_band(_band(p, "B09"), 60), reader.WRONG_SIZE, "_B09.tif"),
    "float_band": (lambda p: _write_band(_band(p, "B04"), 120, "float32"), reader.UNREADABLE, "_B04.tif"),
    "truncated": (lambda p: _truncate(_band(p, "B11")), reader.UNREADABLE, "_B11.tif"),
    "garbage": (lambda p: _band(p, "B05").write_bytes(b"\x00" * 7560), reader.UNREADABLE, "_B05.tif"),
    "empty_band": (lambda p: _band(p, "B12").write_bytes(b""), reader.UNREADABLE, "_B12.tif"),
    "no_width": (lambda p: empty_width(_band(p, "B03")), reader.UNREADABLE, "_B03.tif"),
}


@pytest.fixture(scope="module")
def broken_archive(demo_archive, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Demo patches, one broken per BREAKERS entry, 3 left intact, an empty folder and a stray file."""
    root = tmp_path_factory.mktemp("broken") / "archive"
    sources = sorted(p for p in demo_archive.iterdir())[10 : 10 + len(BREAKERS) + 3]
    broken = {}
    for src, how in zip(sources, [*BREAKERS, None, None, None], strict=True):
        dst = Path(shutil.copytree(src, root / src.name))
        if how:
            BREAKERS[how][0](dst)
            broken[dst.name] = how
    (root / "S2A_MSIL2A_20190105T112111_90_90").mkdir()  # a folder with nothing in it
    broken["S2A_MSIL2A_20190105T112111_90_90"] = "no_json"
    (root / "README.txt").write_text("not a patch")
    return root, broken


@pytest.mark.parametrize(("check_rasters", "workers"), [(False, 2), (True, 1)])
def test_every_broken_patch_is_rejected_with_its_reason(broken_archive, tmp_path, check_rasters, workers):
    root, broken = broken_archive
    result = build_index(root, tmp_path / "index.parquet", workers=workers, check_rasters=check_rasters)
    assert (result.n_indexed, result.n_rejected) == (3, len(broken))
    rejected = pq.read_table(result.rejected_path).to_pandas().set_index("name")
    assert set(rejected.index) == set(broken)
    for name, how in broken.items():
        _, kind, suffix = BREAKERS[how]
        row = rejected.loc[name]
        assert row.kind == kind, (how, row.reason)
        assert row.reason.startswith(f"{kind}: {name}{suffix}: "), (how, row.reason)
    assert set(load_index(result.index_path)["name"]).isdisjoint(broken)


def test_a_projection_without_an_epsg_code_is_parsed_quietly(capfd, caplog):
    """GDAL's complaint about a bad WKT string is no line of the output: the patch's rejection says it."""
    caplog.set_level("DEBUG")
    layouts._epsg.cache_clear()
    assert layouts._epsg("garbage") is None
    assert capfd.readouterr().err == "" and "garbage" not in caplog.text and "missing [" not in caplog.text


def test_a_spatial_split_of_an_index_lacking_places_names_the_patches(demo_index):
    """An index of an older build (before such patches were rejected) holds patches placed nowhere."""
    index = load_index(demo_index)
    lacking = index.index[[3, 7, 8, 20]]
    index.loc[lacking, "epsg"] = None
    first = ", ".join(index.loc[lacking[:3], "name"])
    with pytest.raises(UserError, match=rf"^index column 'epsg' has 4 missing values \(patches {first}, \.\.\.\); "
                                        r"a spatial split needs it for every patch$"):
        group_keys(index, "spatial")


def test_archive_errors(tmp_path, demo_index):
    with pytest.raises(ArchiveError, match="expected a folder"):
        build_index(tmp_path / "missing", tmp_path / "i.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArchiveError, match="no patch folders"):
        build_index(tmp_path / "empty", tmp_path / "i.parquet")
    (tmp_path / "empty" / "S2A_MSIL2A_20190105T112111_1_1").mkdir()
    with pytest.raises(ArchiveError, match="none of its 1 folders"):
        build_index(tmp_path / "empty", tmp_path / "i.parquet")
    with pytest.raises(ArchiveError, match="not found"):
        load_index(tmp_path / "i.parquet")
    (tmp_path / "x.parquet").write_text("no parquet")
    with pytest.raises(ArchiveError, match="not a Parquet file"):
        load_index(tmp_path / "x.parquet")
    with pytest.raises(ArchiveError, match="missing column"):
        load_index(rejected_path_for(demo_index))


def test_v1_rows_carry_their_place_and_v1_name(real_archive, tmp_path):
    """epsg, ulx, uly: the JSON's projection and corner, which are the band files' georeferencing."""
    df = load_index(build_index(real_archive, tmp_path / "real.parquet", workers=1).index_path)
    assert index_layout(tmp_path / "real.parquet").name == "v1"
    assert (df["s2v1_name"] == df["name"]).all()
    for row in df.itertuples():
        with rasterio.open(real_archive / row.name / f"{row.name}_B02.tif") as ds:
            assert (row.epsg, row.ulx, row.uly) == (ds.crs.to_epsg(), ds.transform.c, ds.transform.f)


# --- v2.0 ------------------------------------------------------------------------------------------------

V2_PATCHES = 60


@pytest.fixture(scope="module")
def v2_archive(tmp_path_factory) -> Path:
    return write_demo_archive(
        tmp_path_factory.mktemp("v2") / "reben", n_patches=V2_PATCHES, seed=0, layout="v2"
    )


@pytest.fixture(scope="module")
def v2_index(v2_archive, tmp_path_factory) -> Path:
    return build_index(v2_archive, tmp_path_factory.mktemp("v2index") / "index.parquet", workers=2).index_path


class _Stopped(Exception):
    """Where a kill stops the index's writing."""


def _pair(out: Path) -> dict[str, bytes]:
    """The bytes of every file in the index's folder, by name."""
    return {p.name: p.read_bytes() for p in sorted(out.parent.iterdir())}


def test_a_full_disk_mid_write_leaves_the_previous_index_whole(v2_archive, v2_index, tmp_path, monkeypatch):
    out = tmp_path / "index.parquet"
    for path in (v2_index, rejected_path_for(v2_index)):
        shutil.copy(path, tmp_path / path.name)
    before, write_table = _pair(out), pq.write_table

    def half_then_full(table: pa.Table, where, **kwargs) -> None:
        sink = pa.BufferOutputStream()
        write_table(table, sink, **kwargs)
        whole = sink.getvalue().to_pybytes()
        half = whole[: len(whole) // 2]
        Path(where).write_bytes(half) if isinstance(where, str | Path) else where.write(half)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", half_then_full)
    with pytest.raises(UserError, match=rf"^cannot write {rejected_path_for(out)}: file system .* is full"):
        build_index(v2_archive, out, workers=1)
    assert _pair(out) == before and is_whole(out)  # the old pair, untouched, and no partial file left


def test_an_index_that_exists_has_its_whole_rejected_table(v2_archive, tmp_path, monkeypatch):
    """A kill between the two files' renames leaves no index (it is renamed into place last), so nothing
    mistakes the rejected table alone for a finished build; the temporary files a killed build left are
    removed by the next, those of a build still running kept."""
    out = tmp_path / "index.parquet"
    build_index(v2_archive, out, workers=1)
    point = faults.point

    def killed(name: str, epoch: int) -> None:
        if name == "index_write":
            raise _Stopped
        point(name, epoch)

    monkeypatch.setattr(faults, "point", killed)
    with pytest.raises(_Stopped):
        build_index(v2_archive, out, workers=1)
    assert not out.exists() and not is_whole(out) and list(_pair(out)) == [rejected_path_for(out).name]
    monkeypatch.setattr(faults, "point", point)
    gone = subprocess.Popen(["true"])
    gone.wait()
    left = [p.with_name(f".{p.name}.{gone.pid}.partial") for p in (out, rejected_path_for(out))]  # a SIGKILL's
    live = out.with_name(f".{out.name}.{os.getppid()}.partial")  # of a build still writing: a live process
    for path in (*left, live):
        path.write_bytes(b"half a table")
    assert is_whole(build_index(v2_archive, out, workers=1).index_path)
    assert not any(p.exists() for p in left) and live.exists()


def _metadata(root: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(root / f) for f in (reben.METADATA_FILE, reben.EXCLUDED_FILE)])


def test_v2_rows_agree_with_the_maps_and_the_metadata(v2_archive, v2_index):
    assert pq.read_schema(v2_index).remove_metadata() == V2_SCHEMA
    assert (index_layout(v2_index).name, index_archive_root(v2_index)) == ("v2", v2_archive.resolve())
    assert len(pq.read_table(rejected_path_for(v2_index))) == 0
    df = load_index(v2_index)
    meta = _metadata(v2_archive).set_index("patch_id")
    assert len(df) == V2_PATCHES and sorted(meta.index) == list(df["name"])
    for row in df.itertuples():
        with rasterio.open(reference_map_file(v2_archive, row.name)) as ds:
            codes, counts = np.unique(ds.read(1), return_counts=True)
            assert (row.epsg, row.ulx, row.uly) == (ds.crs.to_epsg(), ds.transform.c, ds.transform.f)
        assert row.labels == [CLC_LEVEL3[c] for c in codes]
        assert row.label_area_shares == list(counts / 14400)
        for code in SCHEME_CODES:
            assert getattr(row, f"area_share_{code}") == dict(zip(codes, counts / 14400, strict=True)).get(
                code, 0.0
            )
        for scheme, classes in SCHEMES.items():
            assert getattr(row, f"present_{scheme}") == is_positive(row.labels, classes)
        m = meta.loc[row.name]
        assert (row.official_split, row.country, row.s2v1_name, row.snow, row.cloud_shadow) == (
            m.split, m.country, m.s2v1_name, m.contains_seasonal_snow, m.contains_cloud_or_shadow
        )  # fmt: skip
        assert row.labels_19 == list(m.labels) == labels_19(codes)
        assert row.season == SEASONS[int(row.acquisition_date[5:7])]
        assert f"_T{row.tile}_" in row.name and row.acquisition_date[:4] == "2019"
    assert set(df["official_split"]) == {"train", "validation", "test"}
    assert df["snow"].sum() >= 2 and df["cloud_shadow"].sum() >= 2
    share = df["area_share_212"]
    rule = pd.Series(share >= DEFAULT_MIN_FRACTION, dtype="boolean").mask(
        (share > 0) & (share < DEFAULT_MIN_FRACTION)
    )
    assert scheme_labels(df, "basic").equals(rule.rename("positive_basic"))


def test_v2_same_files_whatever_the_workers(v2_archive, v2_index, tmp_path):
    again = build_index(v2_archive, tmp_path / "index.parquet", workers=1)
    assert index_digest(again.index_path) == index_digest(v2_index)
    assert index_digest(again.rejected_path) == index_digest(rejected_path_for(v2_index))


def test_version_is_told_or_recognised(demo_archive, v2_archive, tmp_path):
    assert (archive_version(demo_archive).name, archive_version(v2_archive).name) == ("v1", "v2")
    assert archive_version(demo_archive, "v2").name == "v2"
    with pytest.raises(ArchiveError, match="version: 'v3'"):
        build_index(v2_archive, tmp_path / "i.parquet", version="v3")
    with pytest.raises(ArchiveError, match="none of its 2 folders is a valid patch"):
        build_index(v2_archive, tmp_path / "i.parquet", version="v1")
    with pytest.raises(ArchiveError, match="no BigEarthNet-S2/ folder"):
        build_index(demo_archive, tmp_path / "i.parquet", version="v2")
    with pytest.raises(ArchiveError, match="pass the folder that holds it"):
        build_index(v2_archive / "BigEarthNet-S2", tmp_path / "i.parquet")


def _map_path(root: Path, name: str) -> Path:
    return reference_map_file(root, name)


def _write_map(root: Path, name: str, pixels: np.ndarray) -> None:
    with rasterio.open(_map_path(root, name)) as ds:
        profile = {**ds.profile, "width": pixels.shape[1], "height": pixels.shape[0]}
    with rasterio.open(_map_path(root, name), "w", **profile) as ds:
        ds.write(pixels, 1)


def test_v2_area_shares_leave_nodata_out_of_their_denominator(v2_archive, v2_index, tmp_path):
    """A map half unmapped (code 0), a quarter rice (213) and a quarter irrigated land (212): each covers
    half of what is mapped, and basic is positive by area although 212 covers only 25 % of the pixels."""
    root = Path(shutil.copytree(v2_archive, tmp_path / "reben"))
    name = min(load_index(v2_index)["name"])
    pixels = np.zeros((120, 120), dtype=np.uint16)
    pixels[60:, :60], pixels[60:, 60:] = 212, 213
    _write_map(root, name, pixels)
    row = load_index(build_index(root, tmp_path / "index.parquet", workers=1).index_path).set_index("name").loc[name]
    assert row["labels"] == [CLC_LEVEL3[212], CLC_LEVEL3[213]] and row["label_area_shares"] == [0.5, 0.5]
    assert (row["area_share_212"], row["area_share_213"], row["area_share_221"], row["nodata_share"]) == (
        0.5, 0.5, 0.0, 0.5)  # fmt: skip
    assert row["present_basic"] and scheme_labels(row.to_frame().T.reset_index(), "basic", min_fraction=0.3).all()


def test_old_column_names_are_renamed_on_v1_and_refused_on_v2(demo_index, v2_index, tmp_path):
    """Before the columns were named by meaning: v1's positive_<scheme> was presence, as present_<scheme> is
    (renamed on load); v2's fraction_<code> counted nodata pixels (refused: the shares differ)."""
    def renamed(index: Path, new: str, old: str, out: Path) -> Path:
        table = pq.read_table(index)
        names = [n.replace(new, old) for n in table.column_names]
        pq.write_table(table.rename_columns(names).replace_schema_metadata(table.schema.metadata), out)
        return out

    assert load_index(renamed(demo_index, "present_", "positive_", tmp_path / "v1.parquet")).equals(
        load_index(demo_index))
    renamed(v2_index, "area_share_", "fraction_", tmp_path / "v2.parquet")
    with pytest.raises(ArchiveError, match=r"v2.parquet: built when a v2.0 patch's area shares counted nodata "
                                           r"pixels \(columns fraction_<code>, now area_share_<code>\); rebuild"):
        load_index(tmp_path / "v2.parquet")


def _edit_metadata(root: Path, name: str, edit) -> None:
    for file in (reben.METADATA_FILE, reben.EXCLUDED_FILE):
        path = root / file
        schema = pq.read_schema(path)
        df = pd.read_parquet(path)
        if name in set(df["patch_id"]):
            pq.write_table(pa.Table.from_pandas(edit(df, df["patch_id"] == name), schema=schema), path)


def _set(column: str, value):
    def edit(df: pd.DataFrame, at: pd.Series) -> pd.DataFrame:
        df[column] = df[column].astype(object)
        df.loc[at, column] = pd.Series([value] * int(at.sum()), index=df.index[at], dtype=object)
        return df

    return edit


def _move_to_other_tile(root: Path, name: str) -> None:
    other = next(p for p in (root / "BigEarthNet-S2").iterdir() if p.name != tile_folder(name))
    patch_dir(root, name).rename(other / name)


V2_BREAKERS = {  # how to break a v2.0 patch -> kind
    "no_map": (lambda root, n: _map_path(root, n).unlink(), reader.MISSING_MAP),
    "small_map": (lambda root, n: _write_map(root, n, np.full((60, 60), 211, np.uint16)), reader.WRONG_SIZE),
    "code_999": (
        lambda root, n: _write_map(root, n, np.full((120, 120), 999, np.uint16)),
        reader.UNKNOWN_CODE,
    ),
    "garbage_map": (lambda root, n: _map_path(root, n).write_bytes(b"\x00" * 900), reader.UNREADABLE),
    "map_without_width": (lambda root, n: empty_width(_map_path(root, n)), reader.UNREADABLE),
    "no_band": (lambda root, n: (patch_dir(root, n) / f"{n}_B11.tif").unlink(), reader.MISSING_BAND),
    "no_folder": (lambda root, n: shutil.rmtree(patch_dir(root, n)), reben.MISSING_FOLDER),
    "no_row": (lambda root, n: _edit_metadata(root, n, lambda df, at: df[~at]), reben.NO_METADATA),
    "duplicate_row": (
        lambda root, n: _edit_metadata(root, n, lambda df, at: pd.concat([df, df[at]])),
        reader.BAD_METADATA,
    ),
    "bad_split": (lambda root, n: _edit_metadata(root, n, _set("split", "holdout")), reader.BAD_METADATA),
    "bad_label": (
        lambda root, n: _edit_metadata(root, n, _set("labels", ["Irrigated"])),
        reader.BAD_METADATA,
    ),
    "no_country": (lambda root, n: _edit_metadata(root, n, _set("country", None)), reader.BAD_METADATA),
    "other_tile": (_move_to_other_tile, reben.STRAY_FOLDER),
}


@pytest.fixture(scope="module")
def broken_v2(v2_archive, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """The v2 demo with one patch broken per V2_BREAKERS entry, plus a stray folder that is no patch."""
    root = Path(shutil.copytree(v2_archive, tmp_path_factory.mktemp("broken_v2") / "reben"))
    names = list(load_index(build_index(root, root.parent / "first.parquet", workers=1).index_path)["name"])
    broken = {}
    for name, how in zip(names[5:], V2_BREAKERS, strict=False):
        V2_BREAKERS[how][0](root, name)
        broken[name] = how
    (root / "BigEarthNet-S2" / tile_folder(names[0]) / "scratch").mkdir()
    broken["scratch"] = "scratch"
    return root, broken


@pytest.mark.parametrize(("check_rasters", "workers"), [(False, 2), (True, 1)])
def test_every_broken_v2_patch_is_rejected_with_its_reason(broken_v2, tmp_path, check_rasters, workers):
    root, broken = broken_v2
    result = build_index(root, tmp_path / "index.parquet", workers=workers, check_rasters=check_rasters)
    rejected = pq.read_table(result.rejected_path).to_pandas()
    assert rejected["name"].is_unique and set(rejected["name"]) == set(broken)
    assert result.n_indexed == V2_PATCHES - len(broken) + 1  # "scratch" is no patch
    for row in rejected.itertuples():
        kind = reben.STRAY_FOLDER if row.name == "scratch" else V2_BREAKERS[broken[row.name]][1]
        assert row.kind == kind and row.reason.startswith(f"{kind}: "), (broken[row.name], row.reason)
        assert "\n" not in row.reason
    assert (
        "listed more than once"
        in rejected.set_index("name").loc[
            next(n for n, how in broken.items() if how == "duplicate_row"), "reason"
        ]
    )
    assert set(load_index(result.index_path)["name"]).isdisjoint(broken)
