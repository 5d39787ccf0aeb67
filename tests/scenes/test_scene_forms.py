"""The three forms of a scene read as the same windows, with the offset their metadata states applied, and
the scenes that cannot be mapped refused in one line."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from rasterio.transform import Affine
from scene_files import ORIGIN, SIDE, scene_bands, write_folder, write_raster, write_safe, write_stac

from simclr_s2.bigearthnet.bands import STUDY_BANDS, stack_bands
from simclr_s2.errors import UserError
from simclr_s2.scenes.product import Scene, SceneError, open_scene
from simclr_s2.scenes.scl import parse_mask
from simclr_s2.scenes.windows import SceneReader


def windows(ref: str, y: int = 120, xs: tuple[int, ...] = (0, 240)) -> np.ndarray:
    with SceneReader(open_scene(ref), STUDY_BANDS, (0, 9)) as reader:
        assert reader.grid.transform == Affine(10, 0, ORIGIN[0], 0, -10, ORIGIN[1])
        assert (reader.grid.width, reader.grid.height, reader.grid.crs.to_epsg()) == (SIDE, SIDE, 32633)
        return reader.windows(y, list(xs))


def expected(bands: dict, y: int = 120, xs: tuple[int, ...] = (0, 240)) -> np.ndarray:
    """The archive pipeline on the same pixels: each band's native window, resampled by stack_bands."""
    def native(band: str, f: int) -> np.ndarray:
        return np.stack([bands[band][y // f:(y + 120) // f, x // f:(x + 120) // f] for x in xs])
    return stack_bands({b: native(b, 2 if b not in ("B02", "B03", "B04", "B08") else 1) for b in STUDY_BANDS},
                       STUDY_BANDS)


def test_every_form_gives_the_archive_pipelines_windows(tmp_path):
    bands = scene_bands()
    want = expected(bands)
    shifted = {b: a + 1000 if b != "SCL" else a for b, a in bands.items()}
    np.testing.assert_array_equal(windows(str(write_folder(tmp_path / "cogs", bands))), want)
    np.testing.assert_array_equal(windows(str(write_safe(tmp_path / "new", shifted, baseline="05.09"))), want)
    np.testing.assert_array_equal(windows(str(write_stac(tmp_path / "stac", shifted, raster_offset=-0.1))), want)
    beside = write_folder(tmp_path / "cogs-of-a-product", shifted)
    (beside / "MTD_MSIL2A.xml").write_bytes(next((tmp_path / "new").glob("*.SAFE/MTD_MSIL2A.xml")).read_bytes())
    np.testing.assert_array_equal(windows(str(beside)), want)


def test_the_offset_is_applied_exactly_when_the_metadata_states_it(tmp_path):
    bands = scene_bands()
    old = open_scene(str(write_safe(tmp_path / "old", bands, baseline="03.01", offset=None)))
    new = open_scene(str(write_safe(tmp_path / "new", bands, baseline="05.09", offset=-1000)))
    assert (old.baseline, old.offset("B04"), new.baseline, new.offset("B04")) == ("03.01", 0, "05.09", -1000)
    np.testing.assert_array_equal(windows(str(old.bands["B02"].rsplit("/GRANULE", 1)[0])), expected(bands))
    dark = {b: np.maximum(a.astype(np.int64) - 1000, 0) for b, a in bands.items() if b != "SCL"}
    np.testing.assert_array_equal(windows(str(write_safe(tmp_path / "again", bands, offset=-1000))),
                                  expected(dark))  # DN below the offset: clipped at 0, as the archive's uint16


COMMON = {"B02": "blue", "B03": "green", "B04": "red", "B05": "rededge1", "B06": "rededge2", "B07": "rededge3",
          "B08": "nir", "B8A": "nir08", "B11": "swir16", "B12": "swir22", "SCL": "scl", "B01": "coastal",
          "B09": "nir09"}  # Earth Search's asset keys


def test_a_stac_item_says_its_offset_by_raster_bands_or_by_its_baseline(tmp_path):
    by_baseline = open_scene(str(write_stac(tmp_path / "a", scene_bands(), keys=COMMON.get)))
    assert by_baseline.offset("B08") == -1000 and "baseline 05.09" in by_baseline.offset_source
    assert set(by_baseline.bands) == set(COMMON)
    declared = open_scene(str(write_stac(tmp_path / "b", scene_bands(), raster_offset=0.0)))
    assert declared.offset("B08") == 0 and "raster:bands" in declared.offset_source
    old = open_scene(str(write_stac(tmp_path / "c", scene_bands(), baseline="02.12")))
    assert old.offset("B08") == 0


def test_an_earth_search_item_whose_offset_was_applied_gets_none_whatever_its_raster_bands_say(tmp_path):
    """Element84's sentinel-2-l2a items: harmonised COGs (boa_offset_applied true) whose raster:bands still
    state scale 0.0001, offset -0.1 (Element84/earth-search#9, #66): the offset was subtracted twice."""
    path = write_stac(tmp_path, scene_bands(), raster_offset=-0.1, keys=COMMON.get)
    item = json.loads(path.read_text())
    item["properties"]["earthsearch:boa_offset_applied"] = True
    path.write_text(json.dumps(item))
    scene = open_scene(str(path))
    assert (scene.offset("B02"), scene.offset("B08")) == (0, 0)
    assert "earthsearch:boa_offset_applied is true" in scene.offset_source


def test_a_patch_folder_of_the_archive_is_a_scene():
    patch = next((Path(__file__).parents[1] / "bigearthnet" / "fixtures" / "reben-sample" / "BigEarthNet-S2")
                 .glob("*/*"))
    scene = open_scene(str(patch))
    assert scene.form == "GeoTIFF folder" and len(scene.bands) == 12 and scene.offset("B02") == 0


@pytest.mark.parametrize(("change", "message"), [
    (lambda bands: bands.pop("B05"), r"has no B05; the model reads B04,B03,.*found B01"),
    (lambda bands: bands.pop("SCL"), r"has no SCL \(mask=none maps without it\)"),
])
def test_a_missing_band_is_named(tmp_path, change, message):
    bands = scene_bands()
    change(bands)
    with pytest.raises(SceneError, match=message):
        windows(str(write_folder(tmp_path / "cogs", bands)))


def test_bands_on_different_grids_are_refused(tmp_path):
    folder = write_folder(tmp_path / "cogs", scene_bands())
    write_raster(folder / "B05.tif", scene_bands()["B05"], 20, crs="EPSG:32632")
    with pytest.raises(SceneError, match=r"B05 .* is in EPSG:32632, B04 in EPSG:32633: one CRS expected"):
        windows(str(folder))
    write_raster(folder / "B05.tif", np.zeros((SIDE, SIDE), np.uint16), 10)
    with pytest.raises(SceneError, match=r"B05 .* has 10 x 10 m pixels, expected its native 20 m"):
        windows(str(folder))


def test_windows_must_start_on_the_coarsest_bands_pixels(tmp_path):
    with SceneReader(open_scene(str(write_folder(tmp_path / "cogs", scene_bands()))), ("B01", "B02")) as reader:
        reader.check_stride(60)
        with pytest.raises(SceneError, match="use a multiple of 6"):
            reader.check_stride(40)


@pytest.mark.parametrize("spoil", [lambda product: None, lambda product: shutil.rmtree(product / "GRANULE"),
                                   lambda product: (product / "GRANULE" / "L1C_T33UUP_2").mkdir()])
def test_an_l1c_product_is_refused(tmp_path, spoil):
    """Also without its granule (its metadata file beside no band: 'holds no band GeoTIFF ... and no
    MTD_MSIL2A.xml' was said) and with two: the level is what is wrong, said first."""
    product = write_safe(tmp_path, scene_bands(side=120), level="1C")
    spoil(product)
    with pytest.raises(SceneError, match="is a Level-1C product; the classifier was trained on L2A"):
        open_scene(str(product))


def test_the_mask_reads_scl_at_10_m(tmp_path):
    bands = scene_bands()
    bands["SCL"][10:20, 30:31] = 9
    with SceneReader(open_scene(str(write_folder(tmp_path / "cogs", bands))), STUDY_BANDS, (9,)) as reader:
        masked = reader.masked(0, SIDE)
    assert masked.sum() == 10 * 4 and masked[20:40, 60:62].all()


@pytest.mark.parametrize("mask", [(), (9,)])
def test_a_pixel_of_no_data_is_masked_whatever_the_mask_names(tmp_path, mask):
    """DN 0 is L2A's no data (a swath's edge, SCL 0): with mask=none or a mask without class 0 it was scored,
    a window of zeros mapped with a probability and counted as scored ground."""
    bands = scene_bands()
    bands["B05"][0:2, 0:3] = 0  # 20 m: 10 m rows 0..3, columns 0..5
    bands["B02"][100, 7] = 0
    with SceneReader(open_scene(str(write_folder(tmp_path / "cogs", bands))), STUDY_BANDS, mask) as reader:
        masked = reader.masked(0, SIDE)
        assert masked.sum() == 4 * 6 + 1 and masked[:4, :6].all() and masked[100, 7]
        assert reader.masked(100, 104).sum() == 1


def _spoiled(tmp_path: Path, band: np.ndarray, **raster: object) -> str:
    """A scene of per-band COGs whose B05 is `band`, written with `raster`'s options."""
    folder = write_folder(tmp_path / "cogs", scene_bands())
    write_raster(folder / "B05.tif", band, 20, **raster)
    return str(folder)


@pytest.mark.parametrize(("band", "raster", "message"), [
    (scene_bands()["B05"], {"transform": Affine(20, 0, ORIGIN[0], 0, 20, ORIGIN[1] - SIDE * 10)},
     r"B05 \(.*/B05.tif\) is rotated or flipped \(transform a, b, d, e = 20, 0, 0, 20\); expected a north-up grid"),
    (scene_bands()["B05"], {"crs": None}, r"B05 \(.*/B05.tif\) has no CRS; expected the product's"),
    (scene_bands()["B05"] / 10_000, {}, r"B05 \(.*/B05.tif\) holds float64 values; expected integer DN"),
    ((scene_bands()["B05"] // 16).astype(np.uint8), {}, r"B05 \(.*/B05.tif\) holds uint8 values; expected .* 16 bits"),
])
def test_a_band_that_would_be_misread_is_refused_in_one_line(tmp_path, band, raster, message):
    """South-up (GDAL failed on it later), without a CRS (maps placed nowhere), reflectance 0..1 or 8-bit values
    (a display export: 0..255 scored as DN)."""
    with pytest.raises(SceneError, match=message) as error:
        windows(_spoiled(tmp_path, band, **raster))
    assert "\n" not in str(error.value)


def _item(tmp_path: Path) -> dict:
    return json.loads(write_stac(tmp_path / "stac", scene_bands()).read_text())


def _opened(tmp_path: Path, item: object) -> Scene:
    """The scene of `item` written beside the assets of `_item`'s scene."""
    path = tmp_path / "stac" / "spoiled.json"
    path.write_text(json.dumps(item))
    return open_scene(str(path))


@pytest.mark.parametrize(("baseline", "offset"), [
    ("02.14", 0), ("2.14", 0), (3.01, 0), ("04.00", -1000), ("4.0", -1000), (5.09, -1000), ("10.1", -1000),
])
def test_the_processing_baseline_is_compared_as_numbers(tmp_path, baseline, offset):
    """As text "2.14" and the JSON number 3.01 sorted after "04.00" and got the offset."""
    item = _item(tmp_path)
    item["properties"]["s2:processing_baseline"] = baseline
    assert _opened(tmp_path, item).offset("B08") == offset


def _with_b02(item: dict, asset: dict) -> dict:
    item["assets"]["B02"] = asset
    return item


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda item: {"type": "FeatureCollection", "features": [item]},
     r"spoiled.json is a FeatureCollection \(a search result\); expected one STAC item"),
    (lambda item: [item], r"spoiled.json is no STAC item; expected a JSON object of type Feature"),
    (lambda item: _with_b02(item, {"type": "image/tiff"}),
     r"STAC item .*spoiled.json: asset B02 has no href; expected the path or URL of its file"),
    (lambda item: _with_b02(item, {"href": "assets/B02.tif", "raster:bands": [{"scale": 0.0, "offset": -0.1}]}),
     r"spoiled.json: asset B02 has raster:bands offset -0.1, scale 0.0; expected numbers, the scale not 0"),
    (lambda item: _with_b02(item, {"href": "assets/B02.tif", "raster:bands": [{"scale": 1e-4, "offset": None}]}),
     r"spoiled.json: asset B02 has raster:bands offset None, scale 0.0001; expected numbers"),
    (lambda item: _with_b02(item, {"href": "assets/B02.tif", "raster:bands": [{"scale": 1e-4, "offset": math.nan}]}),
     r"spoiled.json: asset B02 has raster:bands offset nan, scale 0.0001; expected numbers"),
    (lambda item: _with_b02(item, {"href": "assets/B02.tif", "raster:bands": {"offset": -0.1}}),
     r"spoiled.json: asset B02 has raster:bands {'offset': -0.1}; expected a list of objects"),
    (lambda item: _with_b02(item, {"href": "assets/B02.tif", "eo:bands": ["B02"]}),
     r"spoiled.json: asset B02 has eo:bands \['B02'\]; expected a list of objects"),
    (lambda item: item | {"properties": {**item["properties"], "s2:processing_baseline": "N0509"}},
     r"spoiled.json: s2:processing_baseline 'N0509' is no baseline; expected major.minor, as 05.09"),
    # the id names the maps' folder in out: "../x" wrote outside it, "a/b" failed at the end, all work done
    *[(lambda item, ident=ident: item | {"id": ident},
       rf"spoiled.json has id {re.escape(repr(ident))}; expected a name for its maps' folder in out")
      for ident in ("../x", "a/b", "", " ", ".", "..", "a\\b")],
])
def test_a_stac_item_of_the_wrong_shape_is_refused_in_one_line(tmp_path, spoil, message):
    with pytest.raises(SceneError, match=message) as error:
        _opened(tmp_path, spoil(_item(tmp_path)))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("declared", ["gsd", "raster:bands"])
def test_of_a_bands_assets_at_several_resolutions_the_native_one_is_taken(tmp_path, declared):
    """CDSE's items offer B01_20m, B01_60m...: the first, at 20 m, was taken and the scene refused."""
    item = _item(tmp_path)
    del item["assets"]["B01"]
    for resolution in (20, 60):
        says = {"gsd": resolution} if declared == "gsd" else {"raster:bands": [{"spatial_resolution": resolution}]}
        item["assets"][f"B01_{resolution}m"] = {"href": f"B01_{resolution}m.tif", "eo:bands": [{"name": "B01"}], **says}
    assert Path(_opened(tmp_path, item).bands["B01"]).name == "B01_60m.tif"
    for asset in ("B01_20m", "B01_60m"):  # nothing declared: the first, as before
        item["assets"][asset] = {k: v for k, v in item["assets"][asset].items() if k in ("href", "eo:bands")}
    assert Path(_opened(tmp_path, item).bands["B01"]).name == "B01_20m.tif"


def test_an_item_whose_collection_is_no_text_is_read(tmp_path):
    """`"collection": 5` met `"l1c" in 5`: a TypeError."""
    assert _opened(tmp_path, _item(tmp_path) | {"collection": 5}).offset("B08") == -1000


@pytest.mark.parametrize(("spoil", "message"), [
    (('band_id="12"', 'band_id="13"'), r"BOA_ADD_OFFSET band_id='13' names no band; expected 0..12"),
    (('>-1000</BOA', '>n/a</BOA'), r"BOA_ADD_OFFSET band_id='0' holds 'n/a'; expected an integer DN offset"),
    (('>-1000</BOA', '>-1000.5</BOA'), r"BOA_ADD_OFFSET band_id='0' holds '-1000.5'; expected an integer"),  # -1000
    (('>-1000</BOA', '></BOA'), r"BOA_ADD_OFFSET band_id='0' holds ''; expected an integer"),  # was 0
])
def test_an_offset_of_the_product_metadata_that_is_no_integer_of_a_band_is_refused(tmp_path, spoil, message):
    """An IndexError, a ValueError, or -1000.5 silently read as -1000."""
    mtd = write_safe(tmp_path, scene_bands(side=120)) / "MTD_MSIL2A.xml"
    mtd.write_text(mtd.read_text().replace(*spoil))
    with pytest.raises(SceneError, match=rf"scene: .*\.SAFE/MTD_MSIL2A\.xml: {message}") as error:
        open_scene(str(mtd.parent))
    assert "\n" not in str(error.value)


def test_a_band_file_cut_short_is_named_in_one_line(tmp_path):
    """A partial download opens (its header is whole) and failed at its first missing row: 23 frames of
    rasterio's traceback, from the reader's thread, naming neither the band nor the file."""
    folder = write_folder(tmp_path / "cogs", scene_bands())
    os.truncate(folder / "B03.tif", (folder / "B03.tif").stat().st_size // 2)
    with pytest.raises(SceneError, match=r"scene: cogs: B03 \(.*/cogs/B03.tif\): cannot read its rows \d+\.\.\d+ "
                       r"\(.*\); expected a whole readable file") as error:
        for y in range(0, SIDE - 119, 120):
            windows(str(folder), y)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("mask", ["8,,9", "8,", ",", ""])
def test_a_mask_with_a_blank_entry_is_refused(mask):
    """A blank entry was skipped ("8,,9" read as 8,9), where every other list refuses it."""
    with pytest.raises(UserError, match=rf"mask: expected none or SCL classes .* got {re.escape(repr(mask))}"):
        parse_mask(mask)
    assert parse_mask(" 8 , 9 ") == (8, 9)
