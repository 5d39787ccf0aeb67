"""Packed store: the direct path's pixels up to the stated rounding, reuse only on a full match, never a
half-written store, and a GeoTIFF reader bit-identical to rasterio's."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import rasterio
from tiff_damage import empty_width

from simclr_s2 import disk
from simclr_s2.bigearthnet import packed, reader
from simclr_s2.bigearthnet.bands import BANDS, RESAMPLING_METHODS, RESOLUTION_M, STD, Bands, InputTransform
from simclr_s2.bigearthnet.packed import PackError, StoreError, open_or_pack, pack
from simclr_s2.errors import UserError

DIGEST = "a" * 64  # any digest will do: the store only compares it
BAND_SPECS = ("all", "study", "B12,B01,B04,B05,B02")  # the last: resolutions interleaved, out of BANDS order
FEW = 12  # patches per store: the equality tests read each one through the reader too


@pytest.fixture(scope="module")
def archive(demo_archive: Path) -> Path:
    return demo_archive


@pytest.fixture(scope="module")
def names(archive: Path) -> list[str]:
    """The first patches of the shared demo archive: 6 with real names, then generated ones."""
    return sorted(p.name for p in archive.iterdir() if p.is_dir())[:FEW]


@pytest.fixture(scope="module")
def stores(archive, names, tmp_path_factory) -> dict[tuple[str, str], packed.PackedStore]:
    root = tmp_path_factory.mktemp("stores")
    return {
        (spec, method): pack(
            archive, names, root / f"s{i}-{method}", spec, DIGEST, workers=2, resampling=method
        )
        for i, spec in enumerate(BAND_SPECS)
        for method in RESAMPLING_METHODS
    }


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old"))]


def assert_stated_difference(store: packed.PackedStore, archive: Path, rows: np.ndarray) -> None:
    """packed.py's promise: stored DN = clip(rint(direct DN), 0, 65535), so within 0.5 DN of the direct path
    (exactly equal on the 10 m bands), and the model inputs are the same transform of those DN."""
    dn = store.read_dn(rows)
    transform = InputTransform(store.bands)
    inputs = store.read_inputs(rows, transform)
    ten_m = [k for k, b in enumerate(store.bands) if RESOLUTION_M[b] == 10]
    tolerance = np.array([0.5 / STD[b] for b in store.bands], dtype=np.float32)[:, None, None] + 1e-5
    for k, row in enumerate(rows):
        direct = reader.read_pixels(
            reader.patch_dir(archive, store.names[row]), store.bands, store.resampling, normalised=False
        )
        assert dn.dtype == np.uint16 and dn[k].shape == direct.shape
        np.testing.assert_array_equal(dn[k], np.clip(np.rint(direct), 0, 65535).astype(np.uint16))
        in_range = (direct >= 0) & (direct <= 65535)
        assert np.all(np.abs(dn[k] - direct.astype(np.float64))[in_range] <= 0.5)
        np.testing.assert_array_equal(dn[k][ten_m], direct[ten_m])
        np.testing.assert_array_equal(inputs[k], transform(dn[k]))  # bit for bit
        direct_z = reader.read_pixels(
            reader.patch_dir(archive, store.names[row]), store.bands, store.resampling
        )
        assert np.all((np.abs(inputs[k] - direct_z) <= tolerance)[in_range])


@pytest.mark.parametrize("spec", BAND_SPECS)
@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_rows_are_the_direct_path_rounded(stores, archive: Path, spec: str, method: str) -> None:
    store = stores[spec, method]
    order = np.random.default_rng(0).permutation(len(store))
    assert_stated_difference(store, archive, np.concatenate([order, order[:3]]))  # any order, repeats allowed


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_real_patches_are_the_direct_path_rounded(real_archive: Path, tmp_path: Path, method: str) -> None:
    names = sorted(p.name for p in real_archive.iterdir())
    store = pack(real_archive, names, tmp_path / "real", "all", "r" * 64, workers=1, resampling=method)
    assert_stated_difference(store, real_archive, np.arange(len(names)))


def test_layout_is_one_uint16_array_in_band_order(stores, archive: Path) -> None:
    store = stores["B12,B01,B04,B05,B02", "bilinear"]
    names = list(store.names)
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["format_version"] == packed.FORMAT_VERSION == 2 and meta["index_digest"] == DIGEST
    assert meta["bands"] == ["B12", "B01", "B04", "B05", "B02"] and meta["resampling"] == "bilinear"
    assert meta["n_patches"] == len(names) and meta["shape"] == [len(names), 5, 120, 120]
    assert {p.name for p in store.path.iterdir()} == {"meta.json", "names.txt", "pixels.npy"}
    assert (store.path / "names.txt").read_text().split() == names
    pixels = np.load(store.path / "pixels.npy")
    assert pixels.dtype == np.uint16 and pixels.shape == (len(names), 5, 120, 120)
    np.testing.assert_array_equal(pixels[5, 2], reader.read_band(archive / names[5], "B04"))
    np.testing.assert_array_equal(store.read_dn([5, 0]), pixels[[5, 0]])


def test_parallel_and_serial_packs_are_identical(stores, archive, names, tmp_path) -> None:
    serial = pack(archive, names, tmp_path / "serial", "study", DIGEST, workers=1)
    np.testing.assert_array_equal(stores["study", "bicubic"].pixels, serial.pixels)


def test_fast_band_reader_is_rasterio_and_falls_back_to_it(real_archive, archive, names, tmp_path) -> None:
    folders = [*sorted(real_archive.iterdir()), *(archive / n for n in names)]
    for folder in folders:
        fast, gdal = packed.read_bands(folder, BANDS), reader.read_native(folder, BANDS)
        assert list(fast) == list(gdal)
        for band in fast:
            assert fast[band].dtype == np.uint16 and np.array_equal(fast[band], gdal[band]), (folder, band)
    # a patch whose files GDAL wrote compressed and tiled: the fast reader declines, GDAL reads them
    copy = tmp_path / names[0]
    shutil.copytree(archive / names[0], copy)
    for band, options in (
        ("B02", {"compress": "deflate"}),
        ("B05", {"tiled": True, "blockxsize": 16, "blockysize": 16}),
    ):
        with rasterio.open(reader.band_file(copy, band)) as ds:
            profile, pixels = ds.profile, ds.read(1)
        with rasterio.open(reader.band_file(copy, band), "w", **{**profile, **options}) as ds:
            ds.write(pixels, 1)
    got, expected = packed.read_bands(copy, ("B02", "B05")), reader.read_native(archive / names[0], ("B02", "B05"))
    assert all(np.array_equal(got[b], expected[b]) for b in expected)


def test_broken_patches_are_one_line_errors_naming_patch_and_file(archive, names, tmp_path) -> None:
    root = tmp_path / "archive"
    for name in names[:4]:
        shutil.copytree(archive / name, root / name)
    truncated, resized, missing, damaged = names[:4]
    band = reader.band_file(root / truncated, "B08")
    band.write_bytes(band.read_bytes()[:5000])
    shutil.copy(reader.band_file(root / resized, "B05"), reader.band_file(root / resized, "B03"))
    reader.band_file(root / missing, "B11").unlink()
    empty_width(reader.band_file(root / damaged, "B04"))
    for name, file, kind in (
        (truncated, "B08", "unreadable"),
        (resized, "B03", "wrong raster size"),
        (missing, "B11", "missing band file"),
        (damaged, "B04", "unreadable"),
    ):
        with pytest.raises(PackError) as raised:
            pack(root, [name], tmp_path / "s", "study", DIGEST, workers=1)
        message = str(raised.value)
        assert "\n" not in message and f"patch {name}" in message and f"{name}_{file}.tif" in message, message
        assert kind in message
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []


def test_a_broken_patch_names_itself_from_a_worker(archive, names, tmp_path) -> None:
    with pytest.raises(PackError, match="nonexistent_patch"):
        pack(archive, [*names, "nonexistent_patch"], tmp_path / "s", "study", DIGEST, workers=2)
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []


def test_reuses_a_matching_store_without_reading(archive, names, tmp_path, monkeypatch, caplog) -> None:
    first = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    monkeypatch.setattr(packed, "read_bands", _fail)
    with caplog.at_level(logging.INFO, logger=packed.__name__):
        again = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST)
    assert "reusing packed store" in caplog.text
    assert again.names == first.names and np.array_equal(again.read_dn([0, 1]), first.read_dn([0, 1]))


def _fail(*args, **kwargs):
    raise AssertionError("a matching store must not read GeoTIFFs again")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda names: {"index_digest": "b" * 64}, "index digest changed"),
        (lambda names: {"bands": "B04,B03,B02"}, "bands changed"),
        (lambda names: {"resampling": "nearest"}, "resampling changed (bicubic -> nearest)"),
        (lambda names: {"names": names[::-1]}, "patch list changed"),
        (lambda names: {"names": names[:7]}, "patch list changed"),
    ],
    ids=["digest", "bands", "resampling", "order", "fewer"],
)
def test_rebuilds_when_digest_bands_resampling_or_names_differ(
    archive, names, tmp_path, caplog, change, reason
):
    open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    request = {
        "names": names,
        "bands": "study",
        "index_digest": DIGEST,
        "resampling": "bicubic",
        **change(names),
    }
    with caplog.at_level(logging.INFO, logger=packed.__name__):
        store = open_or_pack(
            archive,
            request["names"],
            tmp_path / "s",
            request["bands"],
            request["index_digest"],
            1,
            request["resampling"],
        )
    assert f"rebuilding packed store {tmp_path / 's'}: {reason}" in caplog.text
    assert store.names == tuple(request["names"]) and store.bands == Bands.parse(request["bands"])
    assert store.index_digest == request["index_digest"] and store.resampling == request["resampling"]
    assert_stated_difference(store, archive, np.array([0]))
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_damaged_store_is_rebuilt(archive, names, tmp_path, caplog, damage) -> None:
    store = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    pixels = store.path / "pixels.npy"
    if damage == "delete":
        pixels.unlink()
    else:
        os.truncate(pixels, pixels.stat().st_size // 2)
    with caplog.at_level(logging.INFO, logger=packed.__name__):
        again = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    assert "rebuilding" in caplog.text and "damaged" in caplog.text
    assert again.pixels.shape == (len(names), 10, 120, 120)


def test_error_mid_pack_leaves_no_store_and_keeps_the_old_one(archive, names, tmp_path, monkeypatch) -> None:
    old = open_or_pack(archive, names[:5], tmp_path / "s", "study", DIGEST, workers=1)
    real, calls = packed.read_bands, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 6:
            raise RuntimeError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(packed, "read_bands", flaky)
    with pytest.raises(RuntimeError, match="disk went away"):
        open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    assert _leftovers(tmp_path) == []
    # the old store is untouched (and still stale for `names`)
    assert packed.PackedStore.open(tmp_path / "s").names == old.names

    monkeypatch.setattr(packed, "read_bands", real)
    store = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    assert store.names == tuple(names)


_KILLED_PACK = """
import os, signal, sys
from pathlib import Path
from simclr_s2.bigearthnet import packed
real, calls = packed.read_bands, []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) > 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
packed.read_bands = dying
archive, store = Path(sys.argv[1]), Path(sys.argv[2])
packed.pack(archive, sorted(p.name for p in archive.iterdir()), store, "study", sys.argv[3], workers=1)
"""


def test_killed_pack_never_looks_complete_and_next_call_restarts(archive, names, tmp_path, caplog) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(packed.__file__).parents[2])}
    args = [sys.executable, "-c", _KILLED_PACK, str(archive), str(tmp_path / "s"), DIGEST]
    done = subprocess.run(args, check=False, env=env, capture_output=True, timeout=120)
    assert done.returncode == -9, done.stderr.decode()
    assert not (tmp_path / "s").exists()
    assert (tmp_path / ".s.partial").is_dir()  # what a killed pack leaves: hidden, never opened as a store
    with pytest.raises(StoreError):
        packed.PackedStore.open(tmp_path / ".s.partial")

    with caplog.at_level(logging.INFO, logger=packed.__name__):
        store = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=2)
    assert "interrupted pack" in caplog.text
    assert _leftovers(tmp_path) == []
    assert_stated_difference(store, archive, np.array([len(names) - 1]))


def test_refuses_to_replace_a_folder_that_is_not_a_store(archive, names, tmp_path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a packed store"):
        open_or_pack(archive, names, tmp_path / "s", "study", DIGEST)
    assert (tmp_path / "s" / "thesis.tex").read_text() == "precious"


def test_rows_and_request_validation(stores, archive, names, tmp_path) -> None:
    store = stores["study", "bicubic"]
    assert list(store.rows([names[3], names[0]])) == [3, 0]
    with pytest.raises(StoreError, match="not_there"):
        store.rows(["not_there"])
    for bad in ([len(names)], [-1], [[0, 1]]):
        with pytest.raises(IndexError, match="rows"):
            store.read_dn(bad)
    assert store.read_dn([]).shape == (0, 10, 120, 120)
    for bad_names, digest, method in (
        ([], DIGEST, "bicubic"),
        ([names[0], names[0]], DIGEST, "bicubic"),
        (names, "", "bicubic"),
        (names, DIGEST, "lanczos"),
    ):
        with pytest.raises(UserError):
            open_or_pack(archive, bad_names, tmp_path / "s", "study", digest, resampling=method)


def test_concurrent_callers_pack_once(archive, names, tmp_path, monkeypatch) -> None:
    """Several processes of one job (e.g. DDP ranks) asking at once: one packs, the others wait and reuse."""
    real, calls = packed.read_bands, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(packed, "read_bands", counted)
    with ThreadPoolExecutor(3) as pool:
        stores = list(
            pool.map(lambda _: open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, 1), range(3))
        )
    assert len(calls) == len(names)
    assert all(s.names == tuple(names) for s in stores)


def test_a_full_disk_while_packing_is_one_line_naming_the_store_and_leaves_nothing(
        archive, names, tmp_path, monkeypatch) -> None:
    """A short write (the file system filled up under the packer) names the store and its file system,
    and no half-written store survives under any name."""
    monkeypatch.setattr(packed.os, "pwrite", lambda fd, data, offset: 0)
    with pytest.raises(disk.DiskFullError) as raised:
        pack(archive, names[:2], tmp_path / "s", "study", DIGEST, workers=1)
    message = str(raised.value)
    assert "\n" not in message and f"cannot write {tmp_path / 's'}: " in message
    assert f"file system {disk.mount_point(tmp_path)} is full" in message
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []
