"""Streaming the v2.0 archive's .tar.zst files: the same index and the same packed store as unpacking first,
the first bad member named, and a killed pack continued where it stopped."""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import rasterio
import zstandard

from simclr_s2.bigearthnet import packed, reader, reben, stream
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import ArchiveError, build_index, rejected_path_for
from simclr_s2.bigearthnet.reader import V2_MAPS, V2_PATCHES
from simclr_s2.bigearthnet.stream import (
    HANDOFF_PREFIX,
    extract,
    members,
    stream_index,
    stream_pack,
    write_tar_zst,
)
from simclr_s2.errors import UserError
from simclr_s2.faults import FAULT_ENV

DIGEST = "d" * 64
BANDS = "B12,B01,B04,B05,B02"  # all three resolutions, out of BANDS order


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A v2 demo archive unpacked (`root`) and as the record's files (`files`: the two .tar.zst and the two
    metadata tables)."""
    tmp = tmp_path_factory.mktemp("release")
    root = write_demo_archive(tmp / "root", n_patches=40, seed=3, layout="v2", workers=1)
    files = tmp / "files"
    files.mkdir()
    write_tar_zst(root, V2_PATCHES, files / "BigEarthNet-S2.tar.zst")
    write_tar_zst(root, V2_MAPS, files / "Reference_Maps.tar.zst")
    for table in (reben.METADATA_FILE, reben.EXCLUDED_FILE):
        shutil.copy(root / table, files / table)
    return {"root": root, "files": files}


def _names(root: Path) -> list[str]:
    return sorted(p.name for p in (root / V2_PATCHES).glob("*/*"))


def test_streamed_index_is_build_index_on_the_unpacked_archive(release, tmp_path):
    root = release["root"]
    built = build_index(root, tmp_path / "built" / "index.parquet", workers=1)
    streamed = stream_index(release["files"] / "Reference_Maps.tar.zst", root, tmp_path / "s" / "index.parquet")
    assert streamed.n_indexed == built.n_indexed == 40
    assert streamed.index_path.read_bytes() == built.index_path.read_bytes()
    assert rejected_path_for(streamed.index_path).read_bytes() == built.rejected_path.read_bytes()


def _same_store(a: Path, b: Path) -> None:
    for file in (packed.PIXELS_FILE, packed.NAMES_FILE):
        assert (a / file).read_bytes() == (b / file).read_bytes(), file
    meta_a, meta_b = (json.loads((s / packed.META_FILE).read_text()) for s in (a, b))
    meta_a.pop("created"), meta_b.pop("created")
    assert meta_a == meta_b
    assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_streamed_store_is_the_packers_bit_for_bit(release, tmp_path, monkeypatch, workers):
    """`workers` counts the walking process: 1 packs in it, n hands the chunks to n - 1 decoding processes."""
    root, names = release["root"], _names(release["root"])[::-1][:30]  # any order: rows follow the list
    made = packed.pack(root, names, tmp_path / "packed", BANDS, DIGEST, workers=1)
    pools = []
    monkeypatch.setattr(packed, "worker_pool", lambda n, pool=packed.worker_pool: pools.append(n) or pool(n))
    streamed = stream_pack(release["files"] / "BigEarthNet-S2.tar.zst", names, tmp_path / "streamed", BANDS,
                           DIGEST, root, workers=workers)
    assert pools == ([workers - 1] if workers > 1 else [])
    _same_store(made.path, streamed.path)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and not p.name.endswith(".lock")] == []
    again = stream_pack(Path("/nonexistent.tar.zst"), names, tmp_path / "streamed", BANDS, DIGEST, root)
    assert again.names == streamed.names  # reused: the archive is not even opened


def test_a_damaged_store_is_streamed_again(release, tmp_path, caplog):
    """As the packer does (test_packed's test_damaged_store_is_rebuilt): a store whose meta.json matches but
    whose pixels do not open is packed again, the log saying why, not refused on every later fetch."""
    archive, names = release["files"] / "BigEarthNet-S2.tar.zst", _names(release["root"])[:6]
    store = stream_pack(archive, names, tmp_path / "s", BANDS, DIGEST, release["root"], workers=1)
    pixels = store.path / packed.PIXELS_FILE
    os.truncate(pixels, pixels.stat().st_size // 2)
    with caplog.at_level("INFO", logger=packed.__name__):
        again = stream_pack(archive, names, tmp_path / "s", BANDS, DIGEST, release["root"], workers=1)
    assert f"rebuilding packed store {tmp_path / 's'}" in caplog.text and "damaged" in caplog.text
    assert again.names == tuple(names) and again.read_dn([0]).shape == (1, 5, 120, 120)


def test_by_default_a_stream_packs_with_one_process_per_core_the_walking_one_counted(monkeypatch):
    monkeypatch.setattr(stream.os, "cpu_count", lambda: 2)
    assert [stream._decoders(w, 100) for w in (None, 0, 1, 2, 16)] == [1, 1, 0, 1, 15]
    assert stream._decoders(16, 3) == 3  # never more decoders than patches


def test_extract_unpacks_the_archive_and_a_rerun_skips_what_is_there(release, tmp_path):
    archive = release["files"] / "Reference_Maps.tar.zst"
    assert extract(archive, tmp_path) == 40
    first = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.tif"))
    assert first == sorted(p.relative_to(release["root"]) for p in (release["root"] / V2_MAPS).rglob("*.tif"))
    victim = tmp_path / first[0]
    victim.write_bytes(victim.read_bytes()[:100])  # as a kill mid-write leaves it
    assert extract(archive, tmp_path) == 1
    assert victim.read_bytes() == (release["root"] / first[0]).read_bytes()


def test_a_disk_full_while_unpacking_names_the_file_in_dest(release, tmp_path, monkeypatch):
    """dest (63 GB unpacked) is often a disk of its own: its full file system is named, not the fullest of the
    project's folders (the write's error names no file)."""
    def full(self: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)
    with pytest.raises(UserError, match=rf"^cannot write {tmp_path}/{V2_MAPS}/.*_reference_map.tif: file system"):
        extract(release["files"] / "Reference_Maps.tar.zst", tmp_path)


def test_an_extract_rerun_holds_nothing_per_member_it_walks(tmp_path, monkeypatch):
    """A rerun over a complete unpack walks every member and skips it: the memory it holds must not grow with
    the members walked (it kept each one's target path, and tarfile each one's header: gigabytes for the S2
    archive's 6.6 million files). 2,000 members: the growth is measured over 1,500 of them, against the
    same bound per member as over 3,000 (167 bytes; 900 each when every member was held)."""
    n = 2000
    archive = _tar_zst(tmp_path / "many.tar.zst", {f"top/{i:05d}.txt": b"x" for i in range(n)})
    assert extract(archive, tmp_path / "dest") == n
    held, target = [], stream._target

    def measured(*args: object) -> Path:  # called for every member walked
        held.append(tracemalloc.get_traced_memory()[0])
        return target(*args)

    monkeypatch.setattr(stream, "_target", measured)
    tracemalloc.start()
    try:
        assert extract(archive, tmp_path / "dest") == 0
    finally:
        tracemalloc.stop()
    assert len(held) == n
    growth = held[-1] - held[n // 4]  # over 1,500 members: 1.35 MB when each left its path and header behind
    assert growth < 250_000, f"{growth:,} bytes held after {n - n // 4} members skipped"


def _tar_zst(out: Path, files: dict[str, bytes]) -> Path:
    """A .tar.zst of members named as given, whatever the names (absolute, with `..`)."""
    with open(out, "wb") as fh, zstandard.ZstdCompressor().stream_writer(fh) as z, \
            tarfile.open(fileobj=z, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
    return out


def test_extract_writes_only_inside_dest(tmp_path):
    """A leading `/` is stripped, as tar's data filter strips it (the file lands inside dest), and a member
    that would land outside dest stops the unpacking with what it is, not as damage."""
    dest, outside = tmp_path / "dest", tmp_path / "outside.txt"
    absolute = _tar_zst(tmp_path / "absolute.tar.zst", {"top/ok.txt": b"ok", str(outside): b"out"})
    assert extract(absolute, dest) == 2
    assert not outside.exists() and (dest / str(outside).lstrip("/")).read_bytes() == b"out"
    climbing = _tar_zst(tmp_path / "climbing.tar.zst", {"top/../../outside.txt": b"out"})
    with pytest.raises(ArchiveError, match=r"climbing.tar.zst: refusing to unpack member top/\.\./\.\./outside"
                                           r".*outside the destination: dest "):
        extract(climbing, dest)
    assert not outside.exists()


def _damaged(source: Path, tmp: Path, how: str) -> Path:
    data = bytearray(source.read_bytes())
    if how == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data[len(data) // 2] ^= 0xFF
    out = tmp / f"{how}-{source.name}"
    out.write_bytes(data)
    return out


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_a_damaged_archive_stops_naming_the_member_and_leaves_no_store(release, tmp_path, how):
    archive = _damaged(release["files"] / "BigEarthNet-S2.tar.zst", tmp_path, how)
    names = _names(release["root"])
    with pytest.raises(ArchiveError, match=rf"{archive.name}: corrupt or truncated (in|after) member "
                                           rf"{V2_PATCHES}/.*unfinished store .* is removed"):
        stream_pack(archive, names, tmp_path / "store", BANDS, DIGEST, release["root"], workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock", archive.name]


def test_a_walk_stopped_early_stops_its_decompressing_thread(release, monkeypatch):
    def decompressing() -> int:
        return sum(t.name == "zstd-ahead" for t in threading.enumerate())

    monkeypatch.setattr(stream, "CHUNK", 4096)  # many more blocks than the thread may make ahead: it waits
    walk = members(release["files"] / "BigEarthNet-S2.tar.zst", lambda m: True)
    next(walk)
    assert decompressing() == 1
    walk.close()
    assert decompressing() == 0


def test_a_truncated_maps_archive_stops_the_index(release, tmp_path):
    archive = _damaged(release["files"] / "Reference_Maps.tar.zst", tmp_path, "truncated")
    with pytest.raises(ArchiveError, match="corrupt or truncated"):
        stream_index(archive, release["root"], tmp_path / "index.parquet")
    assert not (tmp_path / "index.parquet").exists()


def test_a_patch_missing_from_the_archive_is_named_and_leaves_no_store(release, tmp_path):
    """A rerun on this archive would fail again: the unfinished store is removed, not kept to continue."""
    names = [*_names(release["root"])[:3], "S2A_MSIL2A_20190101T101031_N9999_R022_T33UUP_99_99"]
    with pytest.raises(packed.PackError, match=r"patch S2A_.*_99_99: missing band file: .*_B01.tif: not in "
                                               r"the archive \(1 of 4 patches incomplete\); the unfinished store "
                                               r".*\.store\.partial is removed$"):
        stream_pack(release["files"] / "BigEarthNet-S2.tar.zst", names, tmp_path / "store", BANDS, DIGEST,
                    release["root"], workers=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".store.lock"]


def test_a_pack_killed_after_a_chunk_continues_there(release, tmp_path, caplog):
    root, names = release["root"], _names(release["root"])
    archive = release["files"] / "BigEarthNet-S2.tar.zst"
    code = (f"import sys; from simclr_s2.bigearthnet import packed, stream; packed.MAX_CHUNK = 8; "
            f"stream.stream_pack(sys.argv[1], {names!r}, sys.argv[2], {BANDS!r}, {DIGEST!r}, sys.argv[3], 1)")
    killed = subprocess.run([sys.executable, "-c", code, archive, tmp_path / "store", root],
                            env={**os.environ, FAULT_ENV: "stream_chunk@1"}, capture_output=True, text=True,
                            check=False)
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "store").exists()
    assert (tmp_path / ".store.partial" / "stream.rows").stat().st_size == 2 * 8 * 8  # two chunks recorded
    caplog.set_level("INFO")
    streamed = stream_pack(archive, names, tmp_path / "store", BANDS, DIGEST, root, workers=1)
    assert "16 of 40 patches already packed" in caplog.text
    _same_store(packed.pack(root, names, tmp_path / "packed", BANDS, DIGEST, workers=1).path, streamed.path)


def test_a_record_of_rows_cut_short_is_cut_off_before_more_are_appended(release, tmp_path):
    """A short write of the rows packed (a full disk) leaves part of a record: a resume drops it from the file,
    not only from what it reads, or every record appended after it is read askew by the next resume (rows
    recorded as packed lost, or rows never packed taken as packed)."""
    names = _names(release["root"])
    want = packed._request(names, BANDS, "bicubic", DIGEST)
    archive, unfinished = release["files"] / "BigEarthNet-S2.tar.zst", tmp_path / ".store.partial"
    assert stream._resume(unfinished, want, archive) == set()
    rows = unfinished / stream.ROWS_FILE
    rows.write_bytes(np.asarray([0, 1], dtype=np.int64).tobytes() + np.int64(2).tobytes()[:4])
    assert stream._resume(unfinished, want, archive) == {0, 1}
    with open(rows, "ab") as fh:  # as _pack_chunk appends the next chunk's rows
        fh.write(np.asarray([3, 4], dtype=np.int64).tobytes())
    assert stream._resume(unfinished, want, archive) == {0, 1, 3, 4}


PACKS_KILLED = {
    "stream": ("stream_chunk@0", "stream.stream_pack(sys.argv[1], names, sys.argv[2], bands, digest, sys.argv[3], 2)"),
    "plain": ("pack_chunk@0", "packed.pack(sys.argv[3], names, sys.argv[2], bands, digest, workers=2)"),
}


@pytest.mark.parametrize("kind", PACKS_KILLED)
def test_a_killed_pack_leaves_no_worker_behind(release, tmp_path, kind):
    """Killed once a chunk is done, the pack's workers die with it: else they would wait for work forever,
    holding the caller's pipes (this run would not return) and their memory."""
    fault, call = PACKS_KILLED[kind]
    code = (f"import sys; from simclr_s2.bigearthnet import packed, stream; packed.MAX_CHUNK = 4; "
            f"names, bands, digest = {_names(release['root'])!r}, {BANDS!r}, {DIGEST!r}; {call}")
    killed = subprocess.run([sys.executable, "-c", code, release["files"] / "BigEarthNet-S2.tar.zst",
                             tmp_path / "store", release["root"]], env={**os.environ, FAULT_ENV: fault},
                            capture_output=True, text=True, check=False, timeout=120)  # returns once the pipes close
    assert killed.returncode == -9, killed.stderr
    assert not (tmp_path / "store").exists()


def test_chunks_left_in_flight_by_a_killed_pack_are_removed_by_the_next(release, tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    left = base / f"{HANDOFF_PREFIX}{int(gone.stdout)}-x"
    left.mkdir()
    (left / "chunk3").write_bytes(b"band files")
    live = base / f"{HANDOFF_PREFIX}{os.getpid()}-x"  # a pack of a process still running: its own
    live.mkdir()
    try:
        stream_pack(release["files"] / "BigEarthNet-S2.tar.zst", _names(release["root"])[:3], tmp_path / "store",
                    BANDS, DIGEST, release["root"], workers=2)
        assert not left.exists() and live.is_dir()
    finally:
        shutil.rmtree(left, ignore_errors=True)
        shutil.rmtree(live)


def test_band_files_the_fast_reader_declines_are_read_as_the_packer_reads_them(release, tmp_path):
    root = tmp_path / "root"
    shutil.copytree(release["root"] / V2_PATCHES, root / V2_PATCHES)
    names = _names(root)[:4]
    compressed, broken = (reader.band_file(reader.patch_dir(root, n), "B05") for n in names[:2])
    with rasterio.open(compressed) as ds:
        profile, pixels = ds.profile, ds.read(1)
    with rasterio.open(compressed, "w", **{**profile, "compress": "deflate"}) as ds:
        ds.write(pixels, 1)
    archive = write_tar_zst(root, V2_PATCHES, tmp_path / "BigEarthNet-S2.tar.zst")
    streamed = stream_pack(archive, names[:1], tmp_path / "streamed", BANDS, DIGEST, root, workers=1)
    _same_store(packed.pack(root, names[:1], tmp_path / "packed", BANDS, DIGEST, workers=1).path, streamed.path)
    broken.write_bytes(broken.read_bytes()[:300])
    archive = write_tar_zst(root, V2_PATCHES, tmp_path / "broken.tar.zst")
    with pytest.raises(packed.PackError, match=rf"packing from broken.tar.zst: patch {names[1]}: .*{broken.name}"):
        stream_pack(archive, names, tmp_path / "store", BANDS, DIGEST, root, workers=1)


def test_chunks_start_small_and_double():
    sizes, handed = [], 0
    while handed < 300:
        sizes.append(stream._chunk_size(handed))
        handed += sizes[-1]
    assert sizes == [8, 8, 16, 32, 64, 64, 64, 64]


def test_hand_off_files_grow_and_are_reused_bit_for_bit(release, tmp_path, monkeypatch):
    monkeypatch.setattr(packed, "MAX_CHUNK", 4)  # 10 chunks through 4 hand-off files: each reused
    monkeypatch.setattr(stream, "SLOT_BYTES", 4096)  # less than a patch's band files: each grows
    root, names = release["root"], _names(release["root"])
    streamed = stream_pack(release["files"] / "BigEarthNet-S2.tar.zst", names, tmp_path / "streamed", BANDS, DIGEST,
                           root, workers=2)
    _same_store(packed.pack(root, names, tmp_path / "packed", BANDS, DIGEST, workers=1).path, streamed.path)


def test_no_room_to_hand_band_files_to_the_workers_is_one_line(release, tmp_path, monkeypatch):
    def full(*args):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(stream.os, "posix_fallocate", full)  # /dev/shm full: an error, not a SIGBUS on writing
    with pytest.raises(UserError, match=rf"cannot write .*/{HANDOFF_PREFIX}.*/chunk\d: file system .* is full"):
        stream_pack(release["files"] / "BigEarthNet-S2.tar.zst", _names(release["root"]), tmp_path / "store", BANDS,
                    DIGEST, release["root"], workers=2)
    assert not (tmp_path / "store").exists()
