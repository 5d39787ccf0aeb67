"""The index: one row per patch with flags that agree with labels, dates and the official lists;
every kind of broken patch in the rejected table with its reason; files independent of the worker count."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
from rasterio.transform import Affine

from simclr_s2.bigearthnet import reader
from simclr_s2.bigearthnet.index import (
    INDEX_SCHEMA,
    SEASONS,
    ArchiveError,
    build_index,
    index_archive_root,
    index_digest,
    load_index,
    rejected_path_for,
)
from simclr_s2.bigearthnet.nomenclature import SCHEMES, is_positive
from simclr_s2.bigearthnet.reader import read_metadata


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
            assert getattr(row, f"positive_{scheme}") == is_positive(meta.labels, classes)


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
    assert df["positive_basic"].sum() >= 10 and df["positive_expanded"].sum() > df["positive_basic"].sum()
    assert not (df["positive_basic"] & ~df["positive_expanded"]).any()  # basic is inside expanded


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
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=1,
        dtype=dtype,
        crs="EPSG:32633",
        transform=Affine(10, 0, 600000, 0, -10, 5000040),
    ) as ds:
        ds.write(np.ones((size, size), dtype=dtype), 1)


def _json(p: Path) -> Path:
    return p / f"{p.name}_labels_metadata.json"


def _band(p: Path, band: str) -> Path:
    return p / f"{p.name}_{band}.tif"


def _edit_json(p: Path, **changes) -> None:
    meta = {**json.loads(_json(p).read_text()), **changes}
    _json(p).write_text(json.dumps({k: v for k, v in meta.items() if v is not None}))


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:4000])


JSON = "_labels_metadata.json"
BREAKERS = {  # how to break a patch -> (kind, file suffix the reason names)
    "no_json": (lambda p: _json(p).unlink(), reader.MISSING_JSON, JSON),
    "bad_json": (lambda p: _json(p).write_text('{"labels": ["Vineyards"'), reader.UNPARSEABLE_JSON, JSON),
    "no_labels_key": (lambda p: _edit_json(p, labels=None), reader.BAD_METADATA, JSON),
    "unknown_class": (lambda p: _edit_json(p, labels=["Irrigated"]), reader.BAD_METADATA, JSON),
    "bad_coordinates": (lambda p: _edit_json(p, coordinates={"ulx": 1}), reader.BAD_METADATA, JSON),
    "no_band": (lambda p: _band(p, "B8A").unlink(), reader.MISSING_BAND, "_B8A.tif"),
    "small_band": (lambda p: _write_band(_band(p, "B02"), 60), reader.WRONG_SIZE, "_B02.tif"),
    "big_band": (lambda p: _write_band(_band(p, "B09"), 60), reader.WRONG_SIZE, "_B09.tif"),
    "float_band": (lambda p: _write_band(_band(p, "B04"), 120, "float32"), reader.UNREADABLE, "_B04.tif"),
    "truncated": (lambda p: _truncate(_band(p, "B11")), reader.UNREADABLE, "_B11.tif"),
    "garbage": (lambda p: _band(p, "B05").write_bytes(b"\x00" * 7560), reader.UNREADABLE, "_B05.tif"),
    "empty_band": (lambda p: _band(p, "B12").write_bytes(b""), reader.UNREADABLE, "_B12.tif"),
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
