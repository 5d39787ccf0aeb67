"""The TIFF header check and strip reader against what GDAL writes and reads, in every layout it may meet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from tiff_damage import first_entry

from simclr_s2.bigearthnet.geotiff import decode_geotiff_uint16
from simclr_s2.bigearthnet.reader import band_file
from simclr_s2.bigearthnet.tiff import (
    STRIP_COUNTS,
    STRIP_OFFSETS,
    TiffFormatError,
    UnsupportedTiff,
    decode_uint16_strips,
    first_directory,
    read_tiff_header,
)

REBEN = Path(__file__).parent / "fixtures" / "reben-sample"
SIMPLE = {}, {"blockysize": 7}, {"blockysize": 1}, {"BIGTIFF": "YES"}, {"ENDIANNESS": "BIG"}
"""Uncompressed strip layouts (GDAL's default, strips not dividing the height, one row each, BigTIFF,
big-endian): `decode_uint16_strips` reads them; any compression or tiling goes to GDAL."""


def read_uint16_strips(path) -> np.ndarray:
    return decode_uint16_strips(path.read_bytes())


@pytest.mark.parametrize(
    "options",
    [
        *SIMPLE,
        {"tiled": True, "blockxsize": 16, "blockysize": 16},
        {"compress": "lzw"},
        {"compress": "deflate"},
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
    if options in SIMPLE and dtype == "uint16":
        got = read_uint16_strips(path)
        assert got.dtype == np.uint16 and got.flags.writeable and np.array_equal(got, data)
    else:
        with pytest.raises(UnsupportedTiff):
            read_uint16_strips(path)


def _same_as_rasterio(paths) -> int:
    for path in paths:
        with rasterio.open(path) as ds:
            expected = ds.read(1)
        got = read_uint16_strips(path)
        assert got.dtype == expected.dtype and np.array_equal(got, expected), path
    return len(paths)


def test_strips_bit_identical_to_rasterio_on_real_patches(real_archive):
    assert _same_as_rasterio(sorted(real_archive.glob("*/*.tif"))) == 6 * 12


def test_strips_bit_identical_to_rasterio_on_the_demo_archive(demo_archive):
    folders = sorted(p for p in demo_archive.iterdir() if p.is_dir())[:40]
    paths = [band_file(f, b) for f in folders for b in ("B01", "B02", "B05", "B8A", "B09", "B12")]
    assert _same_as_rasterio(paths) == len(folders) * 6


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
        with pytest.raises(TiffFormatError):
            read_uint16_strips(cut)
    cut.write_bytes(band[:-100])  # the last strip is cut short
    with pytest.raises(TiffFormatError, match="truncated") as raised:
        read_uint16_strips(cut)
    assert not isinstance(raised.value, UnsupportedTiff)


def test_a_layout_seen_before_serves_only_files_with_its_bytes(tmp_path, demo_archive):
    """Files of the same size and first bytes as one decoded before, their strips elsewhere or of other sizes:
    each decoded from its own directory."""
    data = band_file(min(p for p in demo_archive.iterdir() if p.is_dir()), "B02").read_bytes()
    tags = first_directory(data, len(data))[2]
    (first, second, *_), counts = tags[STRIP_OFFSETS], tags[STRIP_COUNTS]
    assert counts[0] == counts[1] and decode_uint16_strips(data).shape == (120, 120)  # the layout is seen
    swapped = bytearray(data)  # the first two strips trade places in the file and in the offsets
    swapped[first : first + counts[0]], swapped[second : second + counts[1]] = (
        data[second : second + counts[1]], data[first : first + counts[0]])
    at = data.index(np.array(tags[STRIP_OFFSETS], "<u4").tobytes())
    swapped[at : at + 8] = np.array([second, first], "<u4").tobytes()
    (tmp_path / "band.tif").write_bytes(data)
    (tmp_path / "swapped.tif").write_bytes(swapped)
    with rasterio.open(tmp_path / "band.tif") as ds, rasterio.open(tmp_path / "swapped.tif") as other:
        assert np.array_equal(other.read(1), ds.read(1))
        assert np.array_equal(decode_uint16_strips(bytes(swapped)), ds.read(1))
    shorter = bytearray(data)  # the last strip's count one row short: not the layout any more
    kind = "<u4" if np.array(counts, "<u4").tobytes() in data else "<u2"  # GDAL writes them as LONG or SHORT
    at = data.index(np.array(counts, kind).tobytes()) + np.dtype(kind).itemsize * (len(counts) - 1)
    shorter[at : at + np.dtype(kind).itemsize] = np.array([counts[-1] - 240], kind).tobytes()
    with pytest.raises(UnsupportedTiff, match="strip byte counts"):
        decode_uint16_strips(bytes(shorter))


@pytest.mark.parametrize(("at", "value", "match"), [(4, 0, "tag 256 holds 0 value"), (2, 2, "type 2")],
                         ids=["no_values", "ascii"])
def test_a_damaged_directory_entry_is_a_format_error(at, value, match):
    """A wanted tag with no value or of a type that holds no integers: refused where the directory is read."""
    data = bytearray(next((REBEN / "Reference_Maps").rglob("*.tif")).read_bytes())
    data[first_entry(data) + at] = value  # the image width's count or type
    for decode in (decode_geotiff_uint16, decode_uint16_strips):
        with pytest.raises(TiffFormatError, match=match):
            decode(bytes(data))


def test_any_damaged_file_is_a_tiff_format_error_and_nothing_else(tmp_path):
    """The decoders' contract, which the index and the packer rely on to reject a patch and go on: a real file
    with random bytes of its header and directory changed (some cut short too), with a fixed seed, is decoded
    or refused with a TiffFormatError, never another exception."""
    rng, header = np.random.default_rng(0), tmp_path / "band.tif"

    def read_header(data: bytes) -> object:
        header.write_bytes(data)
        return read_tiff_header(header)

    for path in sorted(REBEN.rglob("*.tif")):
        original = path.read_bytes()
        for _ in range(200):
            data = bytearray(original)
            for at in rng.integers(2, 600, rng.integers(1, 4)):
                data[at] = rng.integers(256)
            damaged = bytes(data[: rng.integers(len(data))] if rng.random() < 0.2 else data)
            for decode in (decode_geotiff_uint16, decode_uint16_strips, read_header):
                try:
                    decode(damaged)
                except TiffFormatError:
                    pass
                except Exception as e:  # noqa: BLE001 (the test's point: what else escapes)
                    pytest.fail(f"{decode.__name__} of {path.name} damaged: {type(e).__name__}: {e}")
