"""The TIFF header check against what GDAL writes and reads, in every layout it may meet."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from simclr_s2.bigearthnet.tiff import TiffFormatError, read_tiff_header


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"tiled": True, "blockxsize": 16, "blockysize": 16},
        {"compress": "deflate"},
        {"BIGTIFF": "YES"},
        {"ENDIANNESS": "BIG"},
        {"BIGTIFF": "YES", "ENDIANNESS": "BIG", "tiled": True, "blockxsize": 16, "blockysize": 16},
    ],
)
@pytest.mark.parametrize(("size", "dtype"), [(120, "uint16"), (20, "uint16"), (60, "float32")])
def test_header_agrees_with_gdal(tmp_path, options, size, dtype):
    path = tmp_path / "band.tif"
    data = np.arange(size * size, dtype=dtype).reshape(size, size)
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": 1,
        "dtype": dtype,
        "crs": "EPSG:32633",
        "transform": Affine(10, 0, 600000, 0, -10, 5000040),
    }
    with rasterio.open(path, "w", **profile, **options) as ds:
        ds.write(data, 1)
    h = read_tiff_header(path)
    assert (h.width, h.height, h.samples) == (size, size, 1)
    assert (h.bits, h.sample_format) == ((16, 1) if dtype == "uint16" else (32, 3))
    assert h.data_end <= h.file_size == path.stat().st_size


def test_real_band_files(real_archive):
    for path in sorted(real_archive.glob("*/*.tif")):
        h = read_tiff_header(path)
        with rasterio.open(path) as ds:
            assert (h.width, h.height, h.samples, h.bits) == (ds.width, ds.height, ds.count, 16)
        assert h.data_end == h.file_size  # uncompressed strips that end the file


def test_truncation_and_garbage(tmp_path, real_archive):
    band = next(real_archive.glob("*/*_B02.tif")).read_bytes()
    cut = tmp_path / "cut.tif"
    cut.write_bytes(band[: len(band) // 2])
    h = read_tiff_header(cut)
    assert h.data_end > h.file_size
    cut.write_bytes(band[:200])  # the strip byte counts (bytes 194-209) are cut off
    with pytest.raises(TiffFormatError, match="truncated"):
        read_tiff_header(cut)
    for junk in (b"", b"PK\x03\x04 not a tiff", b"II*\x00" + b"\xff" * 12):
        cut.write_bytes(junk)
        with pytest.raises(TiffFormatError):
            read_tiff_header(cut)
