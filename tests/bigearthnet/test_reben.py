"""BigEarthNet v2.0 on its real files (fixtures/reben-sample): the reader finds and reads the real patch, the
reference map gives its codes and their shares exactly, the real metadata rows give tile T33UUP's official
split; and a metadata table that is not one stops with one line naming the file."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rasterio

from simclr_s2.bigearthnet.bands import BANDS, PATCH_SIZE
from simclr_s2.bigearthnet.index import build_index, load_index, rejected_path_for
from simclr_s2.bigearthnet.nomenclature import CLC_LEVEL3, labels_19
from simclr_s2.bigearthnet.reader import (
    MISSING_MAP,
    is_v2_name,
    patch_dir,
    read_native,
    read_pixels,
    reference_map_file,
    tile_folder,
)
from simclr_s2.bigearthnet.reben import (
    EXCLUDED_FILE,
    METADATA_FILE,
    MISSING_FOLDER,
    MetadataError,
    acquisition_date,
    read_records,
)
from simclr_s2.bigearthnet.reference_map import read_reference_map

REBEN = Path(__file__).parent / "fixtures" / "reben-sample"
TILE = "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP"
PATCH = f"{TILE}_75_43"  # band files, no map in the sample
MAPPED = f"{TILE}_26_57"  # map, no band files in the sample


def test_v2_names_and_layout():
    assert is_v2_name(PATCH) and not is_v2_name("S2A_MSIL2A_20170613T101031_75_43")
    assert tile_folder(PATCH) == TILE
    assert patch_dir(REBEN, PATCH) == REBEN / "BigEarthNet-S2" / TILE / PATCH
    assert patch_dir(REBEN, PATCH).is_dir()
    assert reference_map_file(REBEN, MAPPED).is_file()
    assert patch_dir(Path("/v1"), "S2A_MSIL2A_20170613T101031_75_43") == Path(
        "/v1/S2A_MSIL2A_20170613T101031_75_43"
    )
    assert acquisition_date(PATCH) == "2017-06-13 10:10:31"


def test_reader_reads_the_real_v2_patch():
    folder = patch_dir(REBEN, PATCH)
    native = read_native(folder, BANDS)
    for band in BANDS:
        with rasterio.open(folder / f"{PATCH}_{band}.tif") as ds:
            np.testing.assert_array_equal(native[band], ds.read(1))
    x = read_pixels(folder, ("B04", "B8A"), normalised=False)  # no JSON in a v2.0 folder: not needed
    assert x.shape == (2, PATCH_SIZE, PATCH_SIZE)
    np.testing.assert_array_equal(x[0], native["B04"])


def test_reference_map_codes_and_shares_are_exact():
    ref = read_reference_map(REBEN, MAPPED)
    with rasterio.open(reference_map_file(REBEN, MAPPED)) as ds:
        codes, counts = np.unique(ds.read(1), return_counts=True)
        assert (ref.epsg, ref.ulx, ref.uly) == (ds.crs.to_epsg(), ds.transform.c, ds.transform.f)
    assert ref.codes == tuple(codes.tolist()) == (211, 231, 311, 313)
    assert ref.pixels == tuple(counts.tolist()) == (7075, 1154, 4131, 2040)
    assert (ref.epsg, ref.ulx, ref.uly) == (32633, 331200.0, 5331600.0)  # patch x=26, y=57 of tile 33UUP


def test_real_metadata_gives_the_official_split_of_t33uup():
    records, rejected = read_records(REBEN)
    assert rejected == [] and len(records) == 3161 + 144
    assert all(tile_folder(name) == TILE for name in records)
    assert Counter(r.split for r in records.values()) == {"train": 1440, "validation": 841, "test": 1024}
    kept = pd.read_parquet(REBEN / METADATA_FILE)
    assert kept["split"].value_counts().to_dict() == {"train": 1331, "test": 1017, "validation": 813}
    assert sum(r.cloud_shadow for r in records.values()) == 144 and not any(r.snow for r in records.values())
    assert {r.country for r in records.values()} == {"Austria"}
    mapped = records[MAPPED]
    assert (mapped.split, mapped.s2v1_name) == ("test", "S2A_MSIL2A_20170613T101031_26_57")
    # the official 19-class labels are the reference map's codes, grouped
    assert mapped.labels_19 == labels_19(read_reference_map(REBEN, MAPPED).codes)


def test_index_of_the_real_files(tmp_path):
    """The sample with the real patch's bands copied in as the mapped patch's folder: one valid row from
    the real map and the real metadata; every other row and the map-less patch rejected with reasons."""
    root = Path(shutil.copytree(REBEN, tmp_path / "reben"))
    src, dst = patch_dir(root, PATCH), patch_dir(root, MAPPED)
    dst.mkdir()
    for band in BANDS:
        shutil.copy(src / f"{PATCH}_{band}.tif", dst / f"{MAPPED}_{band}.tif")
    result = build_index(root, tmp_path / "index.parquet", workers=2)
    assert (result.version, result.n_indexed, result.n_rejected) == ("v2", 1, 3161 + 144 - 1)
    row = load_index(result.index_path).iloc[0]
    assert row["name"] == MAPPED
    assert row["labels"] == [CLC_LEVEL3[c] for c in (211, 231, 311, 313)]
    assert row["label_area_shares"] == [n / 14400 for n in (7075, 1154, 4131, 2040)]
    assert row[["area_share_212", "area_share_213", "area_share_221", "area_share_222", "area_share_223"]].eq(0).all()
    assert not row["present_basic"] and not row["present_expanded"]
    assert (row["official_split"], row["country"], row["s2v1_name"]) == (
        "test",
        "Austria",
        "S2A_MSIL2A_20170613T101031_26_57",
    )
    assert (row["tile"], row["acquisition_date"], row["season"]) == ("33UUP", "2017-06-13 10:10:31", "Summer")
    assert (row["epsg"], row["ulx"], row["uly"]) == (32633, 331200.0, 5331600.0)
    assert row["labels_19"] == ["Arable land", "Broad-leaved forest", "Mixed forest", "Pastures"]
    rejected = pq.read_table(rejected_path_for(result.index_path)).to_pandas().set_index("name")
    assert rejected.loc[PATCH, "kind"] == MISSING_MAP
    assert rejected.drop(index=PATCH)["kind"].eq(MISSING_FOLDER).all()


# --- metadata tables that are not one: one line naming the file and what was expected -------------------


def _table(**changes) -> pa.Table:
    table = pq.read_table(REBEN / METADATA_FILE).slice(0, 5)
    for name, column in changes.items():
        table = (
            table.drop(name)
            if column is None
            else table.set_column(table.schema.get_field_index(name), name, column)
        )
    return table


@pytest.mark.parametrize(
    ("write", "match"),
    [
        (lambda p: p.write_bytes(b"PAR1 not really"), "not a readable Parquet file"),
        (lambda p: pq.write_table(_table(split=None), p), "split is missing"),
        (lambda p: pq.write_table(_table(split=pa.array([1, 2, 3, 4, 5])), p), "split is int64"),
        (lambda p: pq.write_table(_table(labels=pa.array(["a"] * 5)), p), "labels is string"),
        (lambda p: p.unlink(), "file not found"),
    ],
    ids=["garbage", "no_column", "int_split", "string_labels", "missing"],
)
@pytest.mark.parametrize("file", [METADATA_FILE, EXCLUDED_FILE])
def test_unreadable_metadata_is_one_clear_line(tmp_path, write, match, file):
    root = Path(shutil.copytree(REBEN, tmp_path / "reben"))
    write(root / file)
    with pytest.raises(MetadataError, match=match) as info:
        build_index(root, tmp_path / "index.parquet", workers=1)
    message = str(info.value)
    assert "\n" not in message and str(root / file) in message and "patch_id (string)" in message
