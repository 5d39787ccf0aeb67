"""The reader against direct rasterio reads, on the demo archive and on 6 real BigEarthNet-S2 patches."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.enums import Resampling

from simclr_s2.bigearthnet import reader
from simclr_s2.bigearthnet.bands import BANDS, MEAN, NATIVE_SIZE, STD, STUDY_BANDS, Bands, resample
from simclr_s2.bigearthnet.reader import PatchError, read_metadata, read_native, read_patch


def _first_patch(archive: Path) -> Path:
    return min(p for p in archive.iterdir() if p.is_dir())


def _rasterio_read(patch: Path, band: str, **kw) -> np.ndarray:
    with rasterio.open(patch / f"{patch.name}_{band}.tif") as ds:
        return ds.read(1, **kw)


@pytest.fixture(params=["demo", "real"])
def patch(request, demo_archive, real_archive) -> Path:
    return _first_patch(demo_archive if request.param == "demo" else real_archive)


def test_metadata_is_the_json(patch):
    meta = read_metadata(patch)
    raw = json.loads((patch / f"{patch.name}_labels_metadata.json").read_text())
    assert meta.name == patch.name
    assert list(meta.labels) == raw["labels"]
    assert meta.coordinates == raw["coordinates"]
    assert (meta.acquisition_date, meta.tile_source, meta.projection) == (
        raw["acquisition_date"],
        raw["tile_source"],
        raw["projection"],
    )


def test_native_rasters_equal_rasterio(patch):
    native = read_native(patch, BANDS)
    assert tuple(native) == BANDS
    for band, arr in native.items():
        assert arr.dtype == np.uint16 and arr.shape == (NATIVE_SIZE[band],) * 2
        np.testing.assert_array_equal(arr, _rasterio_read(patch, band))


@pytest.mark.parametrize("method", ["nearest", "bilinear", "bicubic"])
def test_read_patch_raw_values_order_and_resampling(patch, method):
    bands = Bands(("B12", "B02", "B01", "B8A", "B04"))  # mixed order and resolutions
    x, meta = read_patch(patch, bands, method, normalised=False)
    assert x.shape == (5, 120, 120) and x.dtype == np.float32 and meta.name == patch.name
    np.testing.assert_array_equal(x[1], _rasterio_read(patch, "B02"))  # 10 m: untouched
    np.testing.assert_array_equal(x[4], _rasterio_read(patch, "B04"))
    for i, band in [(0, "B12"), (2, "B01"), (3, "B8A")]:
        native = torch.from_numpy(_rasterio_read(patch, band).astype(np.float32))[None, None]
        np.testing.assert_allclose(x[i], resample(native, method)[0, 0].numpy(), rtol=1e-6)
        # GDAL's own nearest and bilinear upsampling agree with ours up to rounding to uint16 (its cubic
        # kernel differs from torch's: DESIGN.md); so the 60 m and 20 m pixels land where GDAL puts them
        gdal = {"nearest": Resampling.nearest, "bilinear": Resampling.bilinear}.get(method)
        if gdal is not None:
            up = _rasterio_read(patch, band, out_shape=(120, 120), resampling=gdal).astype(np.float32)
            np.testing.assert_allclose(x[i], up, atol=0.0 if method == "nearest" else 0.501)


def test_read_patch_normalises_with_the_published_statistics(patch):
    raw, _ = read_patch(patch, normalised=False)
    z, _ = read_patch(patch)
    assert z.shape == (len(STUDY_BANDS), 120, 120)
    for i, band in enumerate(STUDY_BANDS):
        np.testing.assert_allclose(z[i], (raw[i] - MEAN[band]) / STD[band], rtol=1e-5, atol=1e-5)


def test_real_geotransform_matches_json_coordinates(real_archive):
    """The fact the demo writer copies: every band spans the JSON's ulx/uly/lrx/lry in the JSON's CRS."""
    for patch in sorted(real_archive.iterdir()):
        meta = read_metadata(patch)
        for band in ("B02", "B05", "B01"):
            with rasterio.open(patch / f"{patch.name}_{band}.tif") as ds:
                c = meta.coordinates
                assert tuple(ds.bounds) == (c["ulx"], c["lry"], c["lrx"], c["uly"])
                assert ds.crs == rasterio.crs.CRS.from_wkt(meta.projection)


@pytest.fixture
def copy_patch(demo_archive, tmp_path) -> Path:
    src = _first_patch(demo_archive)
    return Path(shutil.copytree(src, tmp_path / src.name))


def _expect(kind: str, file_suffix: str, fn, *args):
    with pytest.raises(PatchError) as info:
        fn(*args)
    e = info.value
    assert e.kind == kind and e.file.endswith(file_suffix) and e.patch in str(e) and "\n" not in str(e)


def test_errors_name_patch_file_and_kind(copy_patch):
    p, n = copy_patch, copy_patch.name
    (p / f"{n}_B03.tif").unlink()
    _expect(reader.MISSING_BAND, "_B03.tif", read_native, p, ("B02", "B03"))
    (p / f"{n}_B05.tif").write_bytes(b"not a tiff at all")
    _expect(reader.UNREADABLE, "_B05.tif", read_native, p, ("B05",))
    shutil.copy(p / f"{n}_B06.tif", p / f"{n}_B04.tif")  # a 60 px raster where 120 px belong
    _expect(reader.WRONG_SIZE, "_B04.tif", read_native, p, ("B04",))
    meta = p / f"{n}_labels_metadata.json"
    raw = json.loads(meta.read_text())
    meta.write_text(json.dumps({**raw, "labels": ["Irrigated land"]}))
    _expect(reader.BAD_METADATA, "_labels_metadata.json", read_metadata, p)
    meta.write_text(json.dumps({k: v for k, v in raw.items() if k != "tile_source"}))
    _expect(reader.BAD_METADATA, "_labels_metadata.json", read_metadata, p)
    meta.write_text(json.dumps({**raw, "acquisition_date": "13/06/2017"}))
    _expect(reader.BAD_METADATA, "_labels_metadata.json", read_metadata, p)
    meta.write_text('{"labels": [')
    _expect(reader.UNPARSEABLE_JSON, "_labels_metadata.json", read_metadata, p)
    meta.unlink()
    _expect(reader.MISSING_JSON, "_labels_metadata.json", read_metadata, p)

