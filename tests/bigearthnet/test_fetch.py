"""Fetching the record's files from a local HTTP server (Range support, a connection dropped at a named
byte, a corrupted byte): resume after the drop, refusal of a wrong checksum, offline reuse, and the fetch
entry point streaming the demo release into the index and the store training reads."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import http.server
import json
import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from project_runner import Project, project_env

from simclr_s2.bigearthnet import download as fetch
from simclr_s2.bigearthnet import packed, reben
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.download import FILES, FetchError
from simclr_s2.bigearthnet.index import index_archive_root, index_digest, rejected_path_for
from simclr_s2.bigearthnet.reader import V2_MAPS, V2_PATCHES
from simclr_s2.bigearthnet.stream import write_tar_zst
from simclr_s2.disk import DiskFullError
from simclr_s2.errors import UserError

MAX_GETS = 50
"""GETs the test server answers; then 404, so a client that never gives up fails its test instead of hanging it."""


@dataclass
class Served:
    """What the test server serves, and the faults it injects: `drop[file] = n` sends the first n bytes of
    the next GET of `file` and then closes the connection (once); `corrupt[file] = i` flips byte i; `short[file]
    = n` answers every GET of `file` with its first n bytes as if they were all of it (200, Range ignored)."""

    files: dict[str, bytes]
    drop: dict[str, int] = field(default_factory=dict)
    corrupt: dict[str, int] = field(default_factory=dict)
    short: dict[str, int] = field(default_factory=dict)
    etag: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # (method, file, Range header)

    def body(self, name: str) -> bytes:
        data = bytearray(self.files[name])
        if name in self.corrupt:
            data[self.corrupt[name]] ^= 0xFF
        return bytes(data)


def _listed(dest: Path) -> list[str]:
    """What a fetch left in `dest`, its lock file aside (kept: removing a lock file others may wait on races)."""
    return sorted(p.name for p in dest.iterdir() if p.name != fetch.LOCK_FILE)


def _handler(served: Served) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _head(self) -> tuple[bytes, int] | None:
            """Headers sent; the body from the asked byte on, and where to drop it (-1: nowhere)."""
            name = self.path.rsplit("/", 1)[-1]
            served.requests.append((self.command, name, self.headers.get("Range", "")))
            if name not in served.files or sum(r[0] == "GET" for r in served.requests) > MAX_GETS:
                self.send_error(404)
                return None
            data = served.body(name)
            start = int(self.headers["Range"].removeprefix("bytes=").rstrip("-")) if "Range" in self.headers else 0
            if self.command == "GET" and name in served.short:
                data, start = data[: served.short[name]], 0
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(data) - start))
            if name in served.etag:
                self.send_header("ETag", served.etag[name])
            self.end_headers()
            return data[start:], served.drop.pop(name, -1) - start if self.command == "GET" else -1

        def do_HEAD(self) -> None:  # http.server's names
            self._head()

        def do_GET(self) -> None:
            sent = self._head()
            if sent is None:
                return
            data, cut = sent
            if cut >= 0:  # the named point: the connection drops after byte `drop` of the file
                self.wfile.write(data[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data)

    return Handler


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A v2 demo archive unpacked (`root`) and as the record's four files (`files`: name -> bytes)."""
    tmp = tmp_path_factory.mktemp("release")
    root = write_demo_archive(tmp / "root", n_patches=24, seed=5, layout="v2", workers=1)
    write_tar_zst(root, V2_PATCHES, tmp / FILES["s2"])
    write_tar_zst(root, V2_MAPS, tmp / FILES["maps"])
    for table in (reben.METADATA_FILE, reben.EXCLUDED_FILE):
        shutil.copy(root / table, tmp / table)
    return {"root": root, "files": {name: (tmp / name).read_bytes() for name in FILES.values()}}


@pytest.fixture
def server(release) -> Iterator[tuple[str, Served]]:
    served = Served(dict(release["files"]))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(served))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/records/1/files", served
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(autouse=True)
def no_waits(monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF_S", 0.0)


@pytest.fixture
def checksums(release, tmp_path) -> Path:
    path = tmp_path / "MD5SUMS"
    path.write_text("".join(f"{hashlib.md5(data).hexdigest()}  {name}\n" for name, data in release["files"].items()))
    return path


def test_a_dropped_transfer_resumes_with_range_and_verifies(release, server, checksums, tmp_path, monkeypatch):
    url, served = server
    monkeypatch.setattr(fetch, "CHUNK", 4096)  # blocks small enough that the drop falls between two
    s2 = FILES["s2"]
    half = len(served.files[s2]) // 2 // 4096 * 4096
    served.drop[s2] = half
    got = fetch.fetch(list(FILES), tmp_path / "dest", url, checksums)
    assert all(got[part].read_bytes() == release["files"][FILES[part]] for part in FILES)
    assert [r for r in served.requests if r[1] == s2 and r[0] == "GET"] == [("GET", s2, ""),
                                                                             ("GET", s2, f"bytes={half}-")]
    assert _listed(tmp_path / "dest") == sorted([*FILES.values(), fetch.VERIFIED])


def test_a_server_that_ends_every_response_short_is_given_up_with_backoff(server, checksums, tmp_path,
                                                                           monkeypatch):
    """A response that ends early without an error, from a server that ignores Range: each attempt starts over
    and brings no new byte, so it is a failed attempt like a dropped one (backing off), not a loop."""
    url, served = server
    name = FILES["metadata"]
    served.short[name] = 600
    waits: list[float] = []
    monkeypatch.setattr(fetch, "BACKOFF_S", 1.0)
    monkeypatch.setattr(fetch, "time", SimpleNamespace(sleep=waits.append))
    size = len(served.files[name])
    with pytest.raises(FetchError, match=rf"^{url}/{name}: download failed {fetch.RETRIES} times in a row at byte "
                                         rf"600 of {size:,} \(the response ended at byte 600\); run again"):
        fetch.fetch(["metadata"], tmp_path, url, checksums)
    assert sum(r[:2] == ("GET", name) for r in served.requests) == fetch.RETRIES + 1  # the first brought 600
    assert waits == [1.0, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0]


def test_a_part_named_twice_is_fetched_once(release, server, checksums, tmp_path):
    url, served = server
    got = fetch.fetch(["maps", "metadata", "maps"], tmp_path / "dest", url, checksums)
    assert list(got) == ["maps", "metadata"] and got["maps"].read_bytes() == release["files"][FILES["maps"]]
    assert sorted(r[1] for r in served.requests if r[0] == "GET") == sorted([FILES["maps"], FILES["metadata"]])


def test_a_wrong_checksum_deletes_the_download_and_says_so(server, checksums, tmp_path):
    url, served = server
    served.corrupt[FILES["metadata"]] = 1000
    with pytest.raises(FetchError, match=r"metadata.parquet: md5 \w+, expected \w+; the downloaded file is deleted"):
        fetch.fetch(["metadata"], tmp_path, url, checksums)
    assert _listed(tmp_path) == ["MD5SUMS"]


def test_present_files_are_verified_and_used_offline(release, server, checksums, tmp_path):
    url, served = server
    dest = tmp_path / "dest"
    fetch.fetch(["maps", "metadata"], dest, url, checksums)
    served.requests.clear()
    fetch.fetch(["maps", "metadata"], dest, "http://127.0.0.1:9/nothing-listens-here", checksums)
    assert served.requests == []
    (dest / FILES["maps"]).write_bytes(b"not the archive")
    with pytest.raises(FetchError, match=r"Reference_Maps.tar.zst: 15 bytes|Reference_Maps.tar.zst: md5"):
        fetch.fetch(["maps"], dest, url, checksums)


def test_a_local_copy_is_a_source_too(release, server, checksums, tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / FILES["snow"]).write_bytes(release["files"][FILES["snow"]])
    for url in (str(folder), folder.as_uri()):
        dest = tmp_path / f"dest-{len(url)}"
        assert fetch.fetch(["snow"], dest, url, checksums)["snow"].read_bytes() == release["files"][FILES["snow"]]


def test_a_short_local_copy_is_one_line_at_once(release, checksums, tmp_path, monkeypatch):
    """A local file that ends before the size read from it (cut while being copied) does not grow by
    waiting: no backing off as for a dropped transfer."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    data = release["files"][FILES["snow"]]
    (folder / FILES["snow"]).write_bytes(data[:100])
    monkeypatch.setattr(fetch, "_remote", lambda session, source: fetch.Remote(len(data), ""))  # before the cut
    monkeypatch.setattr(fetch, "time", SimpleNamespace(sleep=pytest.fail))
    with pytest.raises(FetchError, match=rf"^{folder / FILES['snow']}: the file holds 100 bytes, expected "
                                         rf"{len(data):,}; copy it whole"):
        fetch.fetch(["snow"], tmp_path / "dest", str(folder), checksums)


def test_the_pinned_table_refuses_another_file_and_size_only_is_said(server, tmp_path, monkeypatch, caplog):
    url, served = server
    with pytest.raises(FetchError, match=r"has [\d,]+ bytes, the record's metadata.parquet has 3,616,349"):
        fetch.fetch(["metadata"], tmp_path, url)
    monkeypatch.setitem(fetch.PINNED_SIZES, FILES["metadata"], len(served.files[FILES["metadata"]]))
    with pytest.raises(FetchError, match=r"metadata.parquet.*md5 \w{32}, expected 55687065e77b6d0b0f1ff604a6e7b49c"):
        fetch.fetch(["metadata"], tmp_path, url)  # the demo table has the record's size now, not its md5
    assert _listed(tmp_path) == []
    monkeypatch.delitem(fetch.PINNED_MD5, FILES["metadata"])
    fetch.fetch(["metadata"], tmp_path, url)
    assert "metadata.parquet: verified by size only: no md5 pinned" in caplog.text


def test_every_file_of_the_record_has_a_pinned_size_and_md5():
    assert set(fetch.PINNED_MD5) == set(fetch.PINNED_SIZES) == set(FILES.values())
    assert all(len(md5) == 32 and int(md5, 16) >= 0 for md5 in fetch.PINNED_MD5.values())


def test_no_room_is_one_line_before_any_download(server, checksums, tmp_path, monkeypatch):
    url, served = server
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10, 10, 1000))
    with pytest.raises(FetchError, match=r"dest .*: the download needs 0.0 GiB .*, its file system has 0.0 GiB free"):
        fetch.fetch(["s2"], tmp_path, url, checksums)
    assert [r[0] for r in served.requests] == ["HEAD"]
    assert _listed(tmp_path) == ["MD5SUMS"]  # no .part.from for a download that never began


def test_a_disk_full_mid_download_names_the_part_file_and_keeps_it(release, server, checksums, tmp_path,
                                                                   monkeypatch):
    """A write that fails (dest filled by something else after the space check) names the file in dest: not the
    fullest of the project's folders, as an error naming no file did (dest is often a disk of its own). What
    arrived is kept, so a rerun continues it."""
    url, served = server
    name = FILES["s2"]
    monkeypatch.setattr(fetch, "CHUNK", 4096)

    def full(point: str, have: int) -> None:
        if have > 4096:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(fetch, "faults", SimpleNamespace(point=full))
    dest = tmp_path / "dest"
    with pytest.raises(DiskFullError, match=rf"^cannot write {dest / name}.part: file system .* is full"):
        fetch.fetch(["s2"], dest, url, checksums)
    kept = (dest / f"{name}.part").stat().st_size
    assert kept > 4096
    monkeypatch.undo()
    assert fetch.fetch(["s2"], dest, url, checksums)["s2"].read_bytes() == release["files"][name]
    assert served.requests[-1] == ("GET", name, f"bytes={kept}-")


def test_a_second_fetch_into_the_same_dest_waits_for_the_first(release, server, checksums, tmp_path, caplog):
    """Two fetches appending to one .part interleaved their bytes, and the first to end renamed the mixture into
    place as verified (its md5 was of the bytes it received), the other failing on a vanished .part: a fetch
    holds dest (a lock file in it: a folder's lock holds on one machine only over NFS) and another waits for
    it."""
    url, served = server
    dest = tmp_path / "dest"
    dest.mkdir()
    held = os.open(dest / fetch.LOCK_FILE, os.O_WRONLY | os.O_CREAT)
    fcntl.flock(held, fcntl.LOCK_EX)  # another fetch, downloading
    got: dict = {}
    second = threading.Thread(target=lambda: got.update(fetch.fetch(["snow"], dest, url, checksums)))
    second.start()
    second.join(1.0)
    assert second.is_alive() and served.requests == []
    assert "another fetch is downloading into it or verifying it; waiting" in caplog.text
    os.close(held)
    second.join(30)
    assert got["snow"].read_bytes() == release["files"][FILES["snow"]]


def test_a_part_file_grown_by_another_writer_is_not_accepted(release, server, checksums, tmp_path, monkeypatch):
    """The md5 is of the bytes received; the file's own size is checked too, so bytes another program appended
    to the .part (a `wget -c` into dest) are refused, not renamed into place as verified."""
    url, served = server
    name = FILES["s2"]
    part = tmp_path / f"{name}.part"
    monkeypatch.setattr(fetch, "CHUNK", 4096)
    strays = [b"stray bytes"]

    def another_writer(point: str, have: int) -> None:
        if strays:
            with part.open("ab") as fh:
                fh.write(strays.pop())

    monkeypatch.setattr(fetch, "faults", SimpleNamespace(point=another_writer))
    part.write_bytes(served.files[name][:4096])  # resumed: both append
    size = len(served.files[name])
    with pytest.raises(FetchError, match=rf"^{name}: {size + 11:,} bytes, expected {size:,}; the downloaded file is "
                                         "deleted"):
        fetch.fetch(["s2"], tmp_path, url, checksums)
    assert _listed(tmp_path) == ["MD5SUMS"]


def test_a_part_file_longer_than_the_file_makes_no_room_for_the_others(server, checksums, tmp_path, monkeypatch):
    """A .part longer than the file (another file's: a mirror's, a replaced one) is started over: it counts as
    the whole file to fetch, not as negative bytes that hid the others' need from the space check."""
    url, served = server
    snow, maps = (len(served.files[FILES[p]]) for p in ("snow", "maps"))
    (tmp_path / f"{FILES['snow']}.part").write_bytes(b"x" * (snow + maps))
    monkeypatch.setattr(fetch.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(10**9, 0, snow + maps - 1))
    with pytest.raises(FetchError, match=r"the download needs 0.0 GiB \(Reference_Maps.tar.zst, metadata_for"):
        fetch.fetch(["maps", "snow"], tmp_path, url, checksums)
    assert [r[0] for r in served.requests] == ["HEAD", "HEAD"]


class _Killed(BaseException):
    """Where a kill stops a download."""


def test_a_part_begun_from_another_version_of_the_file_is_started_over(server, tmp_path, monkeypatch, caplog):
    """The source changed between a killed download and its rerun (another ETag): the .part is started over,
    not continued into a mixture that fails its md5 only once the rest (up to 63 GB) has arrived."""
    url, served = server
    name = FILES["s2"]
    monkeypatch.setattr(fetch, "CHUNK", 4096)
    served.etag[name] = '"v1"'
    dest, sums = tmp_path / "dest", tmp_path / "MD5SUMS"
    sums.write_text(f"{hashlib.md5(served.files[name]).hexdigest()}  {name}\n")
    with monkeypatch.context() as killed:
        killed.setattr(fetch, "faults", SimpleNamespace(point=lambda *_: (_ for _ in ()).throw(_Killed())))
        with pytest.raises(_Killed):
            fetch.fetch(["s2"], dest, url, sums)
    assert (dest / f"{name}.part").stat().st_size > 0
    new = b"\x00" + served.files[name][1:]  # the file as published again, and its md5
    served.files[name], served.etag[name] = new, '"v2"'
    sums.write_text(f"{hashlib.md5(new).hexdigest()}  {name}\n")
    served.requests.clear()
    assert fetch.fetch(["s2"], dest, url, sums)["s2"].read_bytes() == new
    assert served.requests == [("HEAD", name, ""), ("GET", name, "")]
    assert f'{name}: changed at the source since its .part was begun ("v1", now "v2")' in caplog.text
    assert _listed(dest) == sorted([name, fetch.VERIFIED])


def test_a_malformed_checksums_file_is_one_line(tmp_path):
    bad = tmp_path / "sums"
    bad.write_text("abc  metadata.parquet\n")
    with pytest.raises(FetchError, match=r"checksums .*sums: line 1 is not `<md5>  <file name>`"):
        fetch.fetch(["metadata"], tmp_path, "http://127.0.0.1:9", bad)
    bad.write_text(f"{'0' * 32}  other.file\n")
    with pytest.raises(FetchError, match=r"no line for metadata.parquet"):
        fetch.fetch(["metadata"], tmp_path, "http://127.0.0.1:9", bad)


def test_an_index_is_kept_only_whole(release, tmp_path, capsys):
    """fetch keeps an index newer than its inputs only with its rejected table, both readable: a pair a build
    (or a disk) left incomplete is built again, not kept and tripped over by every later fetch."""
    from simclr_s2.stages.fetch import INDEX_INPUTS, _index

    dest, out = tmp_path / "dest", tmp_path / "index" / "index.parquet"
    dest.mkdir()
    for name in INDEX_INPUTS:
        (dest / name).write_bytes(release["files"][name])
    _index(dest, out, unpacked=False)
    whole = {path: path.read_bytes() for path in (out, rejected_path_for(out))}
    for damage in (lambda: rejected_path_for(out).unlink(), lambda: out.write_bytes(whole[out][:-100])):
        damage()
        capsys.readouterr()
        assert _index(dest, out, unpacked=False) == out
        assert "building it again" in capsys.readouterr().out
        assert {path: path.read_bytes() for path in whole} == whole
    _index(dest, out, unpacked=False)
    assert "(kept: newer than" in capsys.readouterr().out


class _Stop(Exception):
    """Raised where the pretraining would start: the store it reads is chosen by then."""


def test_fetch_entry_point_streams_the_index_and_the_chosen_patches(release, server, checksums, tmp_path,
                                                                     monkeypatch, caplog):
    url, served = server
    project = Project(tmp_path / "project", project_env(tmp_path / "project"))
    from simclr_s2.stages import pretrain
    from simclr_s2.stages.fetch import FETCH

    served.drop[FILES["maps"]] = 5000
    dest, index_dir = tmp_path / "dest", tmp_path / "index"
    project.run_stage(FETCH, dest=dest, url=url, checksums=checksums, index=index_dir, pack="index",
                      official_split="train", bands="B04,B05")
    index = pd.read_parquet(index_dir / "index.parquet")
    assert len(index) == 24
    names = sorted(index.loc[index.official_split == "train", "name"])
    stores = list((tmp_path / "project").rglob("packed/*/meta.json"))
    assert len(stores) == 1
    store = packed.PackedStore.open(stores[0].parent)
    assert list(store.names) == names and store.index_digest == index_digest(index_dir / "index.parquet")
    made = packed.pack(release["root"], names, tmp_path / "made", "B04,B05", store.index_digest, workers=1)
    assert np.array_equal(np.load(made.path / packed.PIXELS_FILE), np.load(store.path / packed.PIXELS_FILE))
    with pytest.raises(UserError, match="countries: no patch of the index has Atlantis"):
        project.run_stage(FETCH, dest=dest, url=url, checksums=checksums, index=index_dir, pack="index",
                          countries="Atlantis")
    # every patch of the index, in the study's bands: the store pretraining on that index reads, not packs
    project.run_stage(FETCH, dest=dest, url=url, checksums=checksums, index=index_dir, pack="index")
    monkeypatch.setattr(pretrain, "pretrain", lambda *a, **k: (_ for _ in ()).throw(_Stop()))
    caplog.set_level("INFO")
    with pytest.raises(_Stop):
        project.run_stage(pretrain.PRETRAIN, index=index_dir / "index.parquet", exclude_split="none", batch_size=8)
    assert "reusing packed store" in caplog.text
    assert len(list((tmp_path / "project").rglob("packed/*/meta.json"))) == 2



def _local_copy(release, folder: Path, metadata_rows: int | None = None) -> tuple[str, Path]:
    """The record's files in `folder` (its metadata table cut to its first `metadata_rows`: another archive) and
    their MD5SUMS: a `file://` url and checksums for fetch."""
    folder.mkdir()
    for name, data in release["files"].items():
        (folder / name).write_bytes(data)
    if metadata_rows is not None:
        table = folder / reben.METADATA_FILE
        pd.read_parquet(table).head(metadata_rows).to_parquet(table)
    sums = folder / "MD5SUMS"
    sums.write_text("".join(f"{hashlib.md5(f.read_bytes()).hexdigest()}  {f.name}\n" for f in sorted(folder.iterdir())))
    return f"file://{folder}", sums


INDEX_PARTS = "maps,metadata,snow"


def test_the_default_index_is_kept_only_for_the_dest_it_was_built_from(release, tmp_path, capsys):
    """The default index folder is one for every dest: fetched into another dest, its index is built again,
    even when that dest's files are older than the index (they were fetched before it was built)."""
    project = Project(tmp_path / "project", project_env(tmp_path / "project"))
    from simclr_s2.stages.fetch import FETCH

    (url_a, sums_a), (url_b, sums_b) = _local_copy(release, tmp_path / "a"), _local_copy(release, tmp_path / "b", 10)
    dest_a, dest_b = tmp_path / "dest_a", tmp_path / "dest_b"
    project.run_stage(FETCH, dest=dest_b, url=url_b, checksums=sums_b, parts=INDEX_PARTS, index="none")
    index = Path(project.env["SIMCLR_S2_DATA"]) / "reben" / "index" / "index.parquet"
    for dest, url, sums, rows in ((dest_a, url_a, sums_a, 24), (dest_b, url_b, sums_b, 12)):  # B: 10 + 2 snowy
        capsys.readouterr()
        project.run_stage(FETCH, dest=dest, url=url, checksums=sums, parts=INDEX_PARTS)
        assert (index_archive_root(index), len(pd.read_parquet(index))) == (dest, rows)
    assert f"is the index of archive {dest_a}, not of dest {dest_b}; building it again" in capsys.readouterr().out
    project.run_stage(FETCH, dest=dest_b, url=url_b, checksums=sums_b, parts=INDEX_PARTS)
    assert "(kept: newer than" in capsys.readouterr().out


def test_splits_of_another_archive_are_refused_before_the_archive_is_read(release, demo_index, tmp_path,
                                                                            monkeypatch):
    project = Project(tmp_path / "project", project_env(tmp_path / "project"))
    from simclr_s2.stages import fetch as fetch_stage
    from simclr_s2.stages.data import CREATE_SPLITS

    splits = tmp_path / "v1splits"
    project.run_stage(CREATE_SPLITS, index=demo_index, out=splits, kind="random", fractions="100")
    monkeypatch.setattr(fetch_stage, "stream_pack", lambda *a, **k: pytest.fail("the archive was read"))
    url, sums = _local_copy(release, tmp_path / "record")
    dest = tmp_path / "dest"
    with pytest.raises(UserError, match=rf"^splits: {splits} \(scheme basic\) was drawn from the index of archive "
                                        rf"{index_archive_root(demo_index)}; expected splits of the archive "
                                        rf"fetched, {dest} \(draw them from "):
        project.run_stage(fetch_stage.FETCH, dest=dest, url=url, checksums=sums, pack="splits", splits=splits)


@pytest.mark.parametrize("held", ["[]", "7", '{"metadata.parquet": 3}', '{"metadata.parquet": {"md5": "x"}}'])
def test_a_verified_record_of_another_shape_vouches_for_nothing(release, tmp_path, held):
    """dest/.verified.json that parses but is not {file: {md5, stamp}} (damaged, written by hand): the files are
    hashed again, as without it."""
    url, sums = _local_copy(release, tmp_path / "record")
    dest = tmp_path / "dest"
    dest.mkdir()
    shutil.copy(tmp_path / "record" / FILES["metadata"], dest)
    (dest / fetch.VERIFIED).write_text(held)
    assert fetch.fetch(["metadata"], dest, url, sums) == {"metadata": dest / FILES["metadata"]}
    assert set(json.loads((dest / fetch.VERIFIED).read_text())) == {FILES["metadata"]}
