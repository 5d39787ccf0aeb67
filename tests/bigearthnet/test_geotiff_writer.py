"""A stamped GeoTIFF is the file GDAL writes, byte for byte, at every corner, size and nodata the archives use."""

from __future__ import annotations

import numpy as np
import pytest

from simclr_s2.bigearthnet.geotiff_writer import GeoTiffStamp, write_geotiff
from simclr_s2.bigearthnet.tiff import UnsupportedTiff


@pytest.mark.parametrize(
    ("size", "res", "crs", "profile"),
    [
        (120, 10, "EPSG:32633", {}),
        (60, 20, "EPSG:32629", {"nodata": 0}),
        (20, 60, "EPSG:32635", {}),
        (120, 10, "EPSG:32634", {"endianness": "BIG"}),
    ],
    ids=str,
)
def test_a_stamped_file_is_the_file_gdal_writes(tmp_path, size, res, crs, profile):
    stamp = GeoTiffStamp((size, size), "uint16", crs, res, **profile)
    rng = np.random.default_rng(size)
    for i, (ulx, uly) in enumerate([(499980, 4400040), (600000 + 1200 * 90, 5900040 - 1200 * 7), (0.5, -3.25)]):
        raster = rng.integers(1, 65536, size=(size, size), dtype=np.uint16)
        stamp.write(tmp_path / f"stamped{i}.tif", raster, ulx, uly)
        write_geotiff(tmp_path / f"gdal{i}.tif", raster, crs, res, ulx, uly, **profile)
        assert (tmp_path / f"stamped{i}.tif").read_bytes() == (tmp_path / f"gdal{i}.tif").read_bytes()


def test_a_compressed_profile_is_refused():
    with pytest.raises(UnsupportedTiff, match="one run at the end"):
        GeoTiffStamp((120, 120), "uint16", "EPSG:32633", 10, compress="deflate")


def test_a_raster_of_another_shape_or_type_is_refused(tmp_path):
    stamp = GeoTiffStamp((60, 60), "uint16", "EPSG:32633", 20)
    for raster in (np.ones((120, 120), np.uint16), np.ones((60, 60), np.uint8)):
        with pytest.raises(ValueError, match=r"expected a \(60, 60\) uint16 raster"):
            stamp.write(tmp_path / "x.tif", raster, 0, 0)
