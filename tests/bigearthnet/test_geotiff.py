"""The GDAL-free GeoTIFF decoder against rasterio: the real v2.0 files, and every variant GDAL writes that it
claims to read (compression, predictor, byte order, pixel-is-point); everything else is a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from simclr_s2.bigearthnet.geotiff import read_geotiff_uint16
from simclr_s2.bigearthnet.geotiff_writer import write_geotiff
from simclr_s2.bigearthnet.tiff import TiffFormatError

REBEN = Path(__file__).parent / "fixtures" / "reben-sample"


def _assert_same_as_rasterio(path: Path) -> None:
    raster = read_geotiff_uint16(str(path))
    with rasterio.open(path) as ds:
        np.testing.assert_array_equal(raster.pixels, ds.read(1))
        assert raster.pixels.dtype == np.uint16
        assert raster.epsg == ds.crs.to_epsg()
        assert (raster.ulx, raster.uly) == (ds.transform.c, ds.transform.f)


@pytest.mark.parametrize("path", sorted(REBEN.rglob("*.tif")), ids=lambda p: p.name[-20:])
def test_real_v2_files(path):
    _assert_same_as_rasterio(path)


def _write(path: Path, pixels: np.ndarray, **profile) -> Path:
    write_geotiff(path, pixels, "EPSG:32634", 10, 600000, 5000040, **profile)
    return path


def _truncated(path: Path) -> None:
    _write(path, np.ones((8, 8), np.uint16))
    path.write_bytes(path.read_bytes()[:60])


@pytest.mark.parametrize(
    "profile",
    [
        {},
        {"compress": "deflate"},
        {"compress": "deflate", "predictor": 2},
        {"compress": "deflate", "predictor": 2, "endianness": "BIG"},
        {"endianness": "BIG"},
        {"compress": "deflate", "predictor": 2, "blockysize": 7},
    ],
    ids=str,
)
def test_variants_gdal_writes(tmp_path, profile):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 65536, size=(120, 97), dtype=np.uint16)  # wraps the predictor's sums
    _assert_same_as_rasterio(_write(tmp_path / "x.tif", pixels, **profile))


def test_pixel_is_point_corner_as_gdal_reads_it(tmp_path):
    path = tmp_path / "point.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=4, height=3, count=1, dtype="uint16", crs="EPSG:32633",
        transform=Affine(10, 0, 600000, 0, -10, 5000040),
    ) as ds:  # fmt: skip
        ds.update_tags(AREA_OR_POINT="Point")
        ds.write(np.arange(12, dtype=np.uint16).reshape(3, 4), 1)
    _assert_same_as_rasterio(path)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: p.write_bytes(b"GIF89a not a tiff"), "not a TIFF"),
        (lambda p: _write(p, np.ones((8, 8), np.uint16), BIGTIFF="YES"), "only classic TIFF"),
        (
            lambda p: _write(p, np.ones((32, 32), np.uint16), tiled=True, blockxsize=16, blockysize=16),
            "stripped",
        ),
        (lambda p: _write(p, np.ones((8, 8), np.float32)), "expected 1 band of uint16"),
        (lambda p: _write(p, np.ones((8, 8), np.uint16), compress="lzw"), "compression 5"),
        (_truncated, "truncated"),
    ],
    ids=["garbage", "bigtiff", "tiled", "float", "lzw", "truncated"],
)
def test_what_it_does_not_read_is_an_error(tmp_path, make, match):
    path = tmp_path / "bad.tif"
    make(path)
    with pytest.raises(TiffFormatError, match=match):
        read_geotiff_uint16(str(path))


def test_corrupt_deflate_data(tmp_path):
    path = _write(tmp_path / "x.tif", np.arange(14400, dtype=np.uint16).reshape(120, 120), compress="deflate")
    data = bytearray(path.read_bytes())
    data[400:420] = b"\xff" * 20  # inside the first strip's deflate stream
    path.write_bytes(bytes(data))
    with pytest.raises(TiffFormatError):
        read_geotiff_uint16(str(path))
