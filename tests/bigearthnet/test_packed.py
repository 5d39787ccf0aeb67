"""Packed store: same tensors as the GeoTIFF reader, reuse only on a full match, never a half-written store."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

from simclr_s2.bigearthnet import packed, reader
from simclr_s2.bigearthnet.bands import NATIVE_SIZE, RESAMPLING_METHODS, resolve_bands
from simclr_s2.bigearthnet.packed import PackError, StoreError, open_or_pack, pack
from simclr_s2.errors import UserError

DIGEST = "a" * 64  # any digest will do: the store only compares it
BAND_SPECS = ("all", "study", "B12,B01,B04,B05,B02")  # the last: groups interleaved, out of BANDS order
FEW = 12  # patches per store: the equality tests read each one through the reader too


@pytest.fixture(scope="module")
def archive(demo_archive: Path) -> Path:
    return demo_archive


@pytest.fixture(scope="module")
def names(archive: Path) -> list[str]:
    """The first patches of the shared demo archive: 6 with real names, then generated ones."""
    return sorted(p.name for p in archive.iterdir() if p.is_dir())[:FEW]


@pytest.fixture(scope="module")
def stores(archive, names, tmp_path_factory) -> dict[str, packed.PackedStore]:
    root = tmp_path_factory.mktemp("stores")
    return {
        spec: pack(archive, names, root / f"s{i}", spec, DIGEST, workers=2)
        for i, spec in enumerate(BAND_SPECS)
    }


def _store_files(path: Path) -> set[str]:
    return {p.name for p in path.iterdir()}


def _leftovers(parent: Path) -> list[str]:
    return [p.name for p in parent.iterdir() if p.name.endswith((".partial", ".old"))]


@pytest.mark.parametrize("spec", BAND_SPECS)
@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_read_batch_equals_reader(stores, archive: Path, spec: str, method: str) -> None:
    store = stores[spec]
    order = np.random.default_rng(0).permutation(len(store))
    order = np.concatenate([order, order[:3]])  # any order, repeats allowed
    normalised = method != "bilinear"  # one method checks the raw (unnormalised) values too
    got = store.read_batch(order, method, normalised)
    assert got.dtype == torch.float32 and got.shape == (len(order), len(store.bands), 120, 120)
    for row, i in zip(got, order, strict=True):
        direct = reader.read_patch(archive / store.names[i], store.bands, method, normalised)[0]
        assert torch.equal(row, torch.from_numpy(direct)), store.names[i]


@pytest.mark.parametrize("method", RESAMPLING_METHODS)
def test_real_patches_equal_reader(real_archive: Path, tmp_path: Path, method: str) -> None:
    names = sorted(p.name for p in real_archive.iterdir())
    store = pack(real_archive, names, tmp_path / "real", "all", "r" * 64, workers=1)
    got = store.read_batch(np.arange(len(names)), method)
    direct = [torch.from_numpy(reader.read_patch(real_archive / n, store.bands, method)[0]) for n in names]
    assert torch.equal(got, torch.stack(direct))


def test_layout_is_native_resolution_in_band_order(stores, archive: Path) -> None:
    store = stores["B12,B01,B04,B05,B02"]
    names = list(store.names)
    meta = json.loads((store.path / "meta.json").read_text())
    assert meta["format_version"] == packed.FORMAT_VERSION and meta["index_digest"] == DIGEST
    assert meta["bands"] == ["B12", "B01", "B04", "B05", "B02"] and meta["n_patches"] == len(names)
    groups = {g["resolution_m"]: (g["bands"], g["shape"]) for g in meta["groups"]}
    assert groups == {
        10: (["B04", "B02"], [len(names), 2, 120, 120]),
        20: (["B12", "B05"], [len(names), 2, 60, 60]),
        60: (["B01"], [len(names), 1, 20, 20]),
    }
    assert _store_files(store.path) == {"meta.json", "names.txt", "10m.npy", "20m.npy", "60m.npy"}
    assert (store.path / "names.txt").read_text().split() == names
    native = reader.read_native(archive / names[5], ["B05", "B12"])
    assert store.arrays[20].dtype == np.uint16
    assert np.array_equal(store.arrays[20][5], np.stack([native["B12"], native["B05"]]))
    assert store.arrays[60].shape[-1] == NATIVE_SIZE["B01"]


def test_parallel_and_serial_packs_are_identical(stores, archive, names, tmp_path) -> None:
    serial = pack(archive, names, tmp_path / "serial", "study", DIGEST, workers=1)
    for res, arr in stores["study"].arrays.items():
        assert np.array_equal(arr, serial.arrays[res])


def test_reuses_a_matching_store_without_reading(archive, names, tmp_path, monkeypatch, caplog) -> None:
    first = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    monkeypatch.setattr(reader, "read_native", _fail)
    with caplog.at_level(logging.INFO, logger=packed.__name__):
        again = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST)
    assert "reusing packed store" in caplog.text
    assert again.names == first.names and torch.equal(again.read_batch([0, 1]), first.read_batch([0, 1]))


def _fail(*args, **kwargs):
    raise AssertionError("a matching store must not read GeoTIFFs again")


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        (lambda names: {"index_digest": "b" * 64}, "index digest changed"),
        (lambda names: {"bands": "B04,B03,B02"}, "bands changed"),
        (lambda names: {"names": names[::-1]}, "patch list changed"),
        (lambda names: {"names": names[:7]}, "patch list changed"),
    ],
    ids=["digest", "bands", "order", "fewer"],
)
def test_rebuilds_when_digest_bands_or_names_differ(archive, names, tmp_path, caplog, change, reason) -> None:
    open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    request = {"names": names, "bands": "study", "index_digest": DIGEST, **change(names)}
    with caplog.at_level(logging.INFO, logger=packed.__name__):
        store = open_or_pack(
            archive, request["names"], tmp_path / "s", request["bands"], request["index_digest"], 1
        )
    assert f"rebuilding packed store {tmp_path / 's'}: {reason}" in caplog.text
    assert store.names == tuple(request["names"]) and store.bands == resolve_bands(request["bands"])
    assert store.index_digest == request["index_digest"]
    direct = reader.read_patch(archive / request["names"][0], store.bands)[0]
    assert torch.equal(store.read_batch([0])[0], torch.from_numpy(direct))
    assert _leftovers(tmp_path) == []


def test_damaged_store_is_rebuilt(archive, names, tmp_path, caplog) -> None:
    store = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    (store.path / "20m.npy").unlink()
    with caplog.at_level(logging.INFO, logger=packed.__name__):
        again = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    assert "rebuilding" in caplog.text and "damaged" in caplog.text
    assert again.arrays[20].shape == (len(names), 6, 60, 60)


def test_error_mid_pack_leaves_no_store_and_keeps_the_old_one(archive, names, tmp_path, monkeypatch) -> None:
    old = open_or_pack(archive, names[:5], tmp_path / "s", "study", DIGEST, workers=1)
    real, calls = reader.read_native, []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) > 6:
            raise RuntimeError("disk went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(reader, "read_native", flaky)
    with pytest.raises(RuntimeError, match="disk went away"):
        open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    assert _leftovers(tmp_path) == []
    # the old store is untouched (and still stale for `names`)
    assert packed.PackedStore.open(tmp_path / "s").names == old.names

    monkeypatch.setattr(reader, "read_native", real)
    store = open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, workers=1)
    assert store.names == tuple(names)


_KILLED_PACK = """
import os, signal, sys
from pathlib import Path
from simclr_s2.bigearthnet import packed, reader
real, calls = reader.read_native, []
def dying(*args, **kwargs):
    calls.append(1)
    if len(calls) > 5:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)
reader.read_native = dying
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
    direct = reader.read_patch(archive / names[-1])[0]
    assert torch.equal(store.read_batch([len(names) - 1])[0], torch.from_numpy(direct))


def test_a_broken_patch_names_itself_from_a_worker(archive, names, tmp_path) -> None:
    with pytest.raises(PackError, match="nonexistent_patch"):
        pack(archive, [*names, "nonexistent_patch"], tmp_path / "s", "study", DIGEST, workers=2)
    assert not (tmp_path / "s").exists() and _leftovers(tmp_path) == []


def test_refuses_to_replace_a_folder_that_is_not_a_store(archive, names, tmp_path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "thesis.tex").write_text("precious")
    with pytest.raises(StoreError, match="not a packed store"):
        open_or_pack(archive, names, tmp_path / "s", "study", DIGEST)
    assert (tmp_path / "s" / "thesis.tex").read_text() == "precious"


def test_rows_and_request_validation(stores, archive, names, tmp_path) -> None:
    store = stores["study"]
    assert list(store.rows([names[3], names[0]])) == [3, 0]
    with pytest.raises(StoreError, match="not_there"):
        store.rows(["not_there"])
    for bad_names, digest in (([], DIGEST), ([names[0], names[0]], DIGEST), (names, "")):
        with pytest.raises(UserError):
            open_or_pack(archive, bad_names, tmp_path / "s", "study", digest)


def test_concurrent_callers_pack_once(archive, names, tmp_path, monkeypatch) -> None:
    """Several processes of one job (e.g. DDP ranks) asking at once: one packs, the others wait and reuse."""
    real, calls = reader.read_native, []

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(reader, "read_native", counted)
    with ThreadPoolExecutor(3) as pool:
        stores = list(
            pool.map(lambda _: open_or_pack(archive, names, tmp_path / "s", "study", DIGEST, 1), range(3))
        )
    assert len(calls) == len(names)
    assert all(s.names == tuple(names) for s in stores)
