"""Download the BigEarthNet v2.0 (reBEN) archive's files, resumably, and verify each before it is used.

The archive is Zenodo record 10891137 (v2.0.0): four files under one base URL. A 63 GB download over hours
will drop; a verified file must never be confused with a half-written one. So a file is written to
`<name>.part`, continued with an HTTP Range request after a drop (retries back off, and a run killed and
started again continues the same way, unless the source's version changed since: `Remote`), its md5 is
computed while it arrives, and only a file that verifies is renamed to its name. A file already in `dest` is
verified and used: with every file present no request is made (offline use). A file that verified once is
recorded in `dest/.verified.json` with its size and mtime, so a rerun does not read 63 GB again to hash it.

What a file is verified against: a `checksums` file (md5sum's `<md5>  <file name>` lines) when given; else
the package's pinned table, the record's sizes and md5 values (PINNED_MD5 says where each md5 was read: Zenodo
itself could not be reached when they were pinned). A file without a pinned md5 is verified by its size
only, and the log says so.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import requests
from tqdm import tqdm

from simclr_s2 import disk, faults
from simclr_s2.errors import UserError

ZENODO = "https://zenodo.org/records/10891137/files"
FILES = {
    "s2": "BigEarthNet-S2.tar.zst",
    "maps": "Reference_Maps.tar.zst",
    "metadata": "metadata.parquet",
    "snow": "metadata_for_patches_with_snow_cloud_or_shadow.parquet",
}
"""Part name (the `parts` parameter) -> file name in the record."""
PINNED_SIZES = {
    "BigEarthNet-S2.tar.zst": 63_251_710_377,
    "Reference_Maps.tar.zst": 282_391_301,
    "metadata.parquet": 3_616_349,
    "metadata_for_patches_with_snow_cloud_or_shadow.parquet": 710_162,
}
"""Bytes of each file of record 10891137 (v2.0.0), as the record lists them."""
PINNED_MD5 = {
    # torchgeo's BigEarthNetV2.metadata_locs, whose URLs are this record's files (github.com/microsoft/torchgeo,
    # torchgeo/datasets/bigearthnet.py at 029863d158b5), the same in tests/datasets/test_bigearthnetV2.py
    # there; the S2 value also in several independent projects' download scripts that check it
    "BigEarthNet-S2.tar.zst": "2245ed2d1a93f6ce637d839bc856396e",
    "Reference_Maps.tar.zst": "95d85a222fa983faddcac51a19f28917",
    # torchgeo's later BigEarthNetV2 (its Hugging Face copy of the record's file, same value), and public
    # acquisition notes that list it as the record's published md5 and matched a 3,616,349-byte download to it
    "metadata.parquet": "55687065e77b6d0b0f1ff604a6e7b49c",
    # not in torchgeo: two public projects' acquisition code and notes list it as the record's published md5,
    # one having matched a 710,162-byte download to it (the weakest source here; checksums=<file> overrides)
    "metadata_for_patches_with_snow_cloud_or_shadow.parquet": "fe31856f4986d446c9468b59d6387c91",
}
"""md5 of each file of record 10891137 (v2.0.0), as published with it (sources above; pass checksums=<file>
to verify against another list)."""
VERIFIED = ".verified.json"
LOCK_FILE = ".fetch.lock"  # held by the fetch downloading into dest (_alone)
CHUNK = 1 << 20
RETRIES = 8
"""Attempts in a row that bring no new byte before a download gives up."""
BACKOFF_S = 2.0
"""First wait after a failed attempt; doubled after each (at most 5 minutes)."""
TIMEOUT_S = 60.0

log = logging.getLogger(__name__)


class FetchError(UserError):
    """A file that cannot be fetched or does not verify; names the file and what to do."""


@dataclass(frozen=True)
class Expected:
    """What a file must be: its size and md5, each None where nothing pins it."""

    file: str
    size: int | None
    md5: str | None

    @property
    def how(self) -> str:
        return "md5" if self.md5 else "size only (no md5 pinned: pass checksums=<file> to verify it)"


def read_checksums(path: Path) -> dict[str, str]:
    """file name -> md5 from md5sum's output (`<md5>  <name>` or `<md5> *<name>`); one line if malformed."""
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise FetchError(f"checksums {path}: cannot read it ({e})") from None
    sums = {}
    for number, line in enumerate(lines, 1):
        md5, _, name = line.strip().partition(" ")
        name = name.strip().lstrip("*")
        if not line.strip():
            continue
        if len(md5) != 32 or not name or any(c not in "0123456789abcdefABCDEF" for c in md5):
            raise FetchError(f"checksums {path}: line {number} is not `<md5>  <file name>`: {line.strip()!r}")
        sums[Path(name).name] = md5.lower()
    return sums


def expected(files: list[str], checksums: Path | None) -> list[Expected]:
    """Each file's expectation: the checksums file's md5 (it names what it verifies, so the pinned sizes of
    the record do not apply), else the pinned size and md5."""
    if checksums is None:
        return [Expected(f, PINNED_SIZES.get(f), PINNED_MD5.get(f)) for f in files]
    sums = read_checksums(checksums)
    missing = [f for f in files if f not in sums]
    if missing:
        raise FetchError(f"checksums {checksums}: no line for {', '.join(missing)}")
    return [Expected(f, None, sums[f]) for f in files]


def md5_file(path: Path, upto: int | None = None) -> hashlib._Hash:
    """md5 of the file's first `upto` bytes (all of it by default), as a hash object to go on with."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        left = os.fstat(fh.fileno()).st_size if upto is None else upto
        while left > 0 and (block := fh.read(min(CHUNK * 8, left))):
            digest.update(block)
            left -= len(block)
    return digest


def _source(url: str, file: str) -> str | Path:
    """The file's URL under `url`, or its path when `url` is a local folder (file:// or a plain path)."""
    parsed = urlparse(url)
    if parsed.scheme in ("http", "https"):
        return f"{url.rstrip('/')}/{file}"
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else url).expanduser() / file
    raise FetchError(f"url: {url!r} is neither http(s)://, file:// nor a folder")


@dataclass(frozen=True)
class Remote:
    """A source file as it is now: its size, and what tells one version of it from another (the server's strong
    ETag, else its Last-Modified; a local copy's mtime; "" where the server says neither)."""

    size: int
    version: str


def _remote(session: requests.Session, source: str | Path) -> Remote:
    if isinstance(source, Path):
        try:
            st = source.stat()
        except OSError as e:
            raise FetchError(f"url: cannot read {source} ({e.strerror})") from None
        return Remote(st.st_size, f"mtime_ns {st.st_mtime_ns}")
    try:
        r = session.head(source, allow_redirects=True, timeout=TIMEOUT_S)
        r.raise_for_status()
        etag = r.headers.get("ETag", "")
        version = etag if etag and not etag.startswith("W/") else r.headers.get("Last-Modified", "")
        return Remote(int(r.headers["Content-Length"]), version)
    except (requests.RequestException, KeyError, ValueError) as e:
        raise FetchError(f"url: cannot get the size of {source} ({type(e).__name__}: {e})") from None


class Verified:
    """dest/.verified.json: files that verified, by size and mtime, so a rerun need not hash them again."""

    def __init__(self, dest: Path) -> None:
        self.path = dest / VERIFIED
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            entries = {}
        if not isinstance(entries, dict):  # JSON of another shape (damaged, written by hand) vouches for nothing
            entries = {}
        self.entries = {file: entry for file, entry in entries.items() if isinstance(entry, dict)}

    def _stamp(self, path: Path) -> dict[str, int]:
        st = path.stat()
        return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def holds(self, path: Path, want: Expected) -> bool:
        entry = self.entries.get(path.name, {})
        return entry.get("md5") == want.md5 and entry.get("stamp") == self._stamp(path)

    def add(self, path: Path, want: Expected) -> None:
        self.entries[path.name] = {"md5": want.md5, "stamp": self._stamp(path)}
        partial = self.path.with_name(self.path.name + ".part")
        with disk.writing(partial, partial):
            partial.write_text(json.dumps(self.entries, indent=2) + "\n")
        os.replace(partial, self.path)


def check(path: Path, want: Expected, digest: str | None = None) -> str | None:
    """What is wrong with `path` against `want`, or None; `digest` is its md5 when already computed."""
    size = path.stat().st_size
    if want.size is not None and size != want.size:
        return f"{size:,} bytes, expected {want.size:,}"
    if want.md5:
        digest = digest or md5_file(path).hexdigest()
        if digest != want.md5:
            return f"md5 {digest}, expected {want.md5}"
    return None


def fetch(parts: list[str], dest: Path, url: str = ZENODO, checksums: Path | None = None) -> dict[str, Path]:
    """Part -> verified file in `dest`: present ones verified, the others downloaded (resumed where a
    `.part` file was left) after checking the disk has room for all of them. A part named twice is fetched
    once."""
    parts = list(dict.fromkeys(parts))
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    wants = expected([FILES[p] for p in parts], checksums)
    with _alone(dest):
        _fetch(wants, dest, url)
    for want in wants:
        if not want.md5:
            log.warning("%s: verified by size only: no md5 pinned; pass checksums=<file> to verify it", want.file)
    return {part: dest / FILES[part] for part in parts}


@contextmanager
def _alone(dest: Path) -> Iterator[None]:
    """One fetch into `dest` at a time: two appending to one `.part` file interleave their bytes, and each
    verifies the bytes it received, not the file it renames into place. Another fetch waits, then finds the
    files there and verified. The lock is a file's (LOCK_FILE): over NFS a folder's lock holds on one machine
    only, a file's on the server. A read-only dest, where nothing will be written, is locked as a folder."""
    try:
        fd = os.open(dest / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o666)
    except OSError as error:
        if error.errno not in (errno.EROFS, errno.EACCES):
            raise
        fd = os.open(dest, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("dest %s: another fetch is downloading into it or verifying it; waiting for it to end", dest)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _fetch(wants: list[Expected], dest: Path, url: str) -> None:
    """`fetch` once it holds `dest`."""
    verified = Verified(dest)
    session = requests.Session()
    missing = []
    for want in wants:
        path = dest / want.file
        if not path.exists():
            missing.append(want)
        elif not verified.holds(path, want):
            problem = check(path, want)
            if problem:
                raise FetchError(f"{path}: {problem}; move it away (or delete it) to download it again")
            verified.add(path, want)
            log.info("%s: present, verified by %s", path, want.how)
    sources = {want.file: _source(url, want.file) for want in missing}
    remotes = {want.file: _remote(session, sources[want.file]) for want in missing}
    for want in missing:
        if want.size is not None and remotes[want.file].size != want.size:
            raise FetchError(f"url: {sources[want.file]} has {remotes[want.file].size:,} bytes, the record's "
                             f"{want.file} has {want.size:,}")
    for want in missing:
        _begun_from(dest / want.file, remotes[want.file])
    _check_space(dest, {f: _to_fetch(dest / f"{f}.part", remote.size) for f, remote in remotes.items()})
    for want in missing:
        _note_version(dest / want.file, remotes[want.file])
        _download(session, sources[want.file], dest / want.file, remotes[want.file].size, want)
        verified.add(dest / want.file, want)


def _have(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


def _begun_from(target: Path, remote: Remote) -> None:
    """Start `target`'s .part over when the source changed since it was begun (its version, recorded beside it
    in `.part.from`, differs): resumed, its bytes and the new file's would make a mixture that fails its md5 only
    once the rest (up to 63 GB) has arrived. A .part without that record (older) is continued."""
    part, began = _part_files(target)
    if part.exists() and began.exists() and began.read_text() != remote.version:
        log.warning("%s: changed at the source since its .part was begun (%s, now %s); downloading it from the "
                    "start", target.name, began.read_text() or "unknown", remote.version or "unknown")
        part.unlink()


def _part_files(target: Path) -> tuple[Path, Path]:
    """`target`'s download in progress and the record of the version it was begun from."""
    return target.with_name(f"{target.name}.part"), target.with_name(f"{target.name}.part.from")


def _note_version(target: Path, remote: Remote) -> None:
    """Record the version a .part about to be begun comes from (`_begun_from` reads it): only once the space
    check passed, so a refused fetch leaves nothing in dest."""
    part, began = _part_files(target)
    if not part.exists():
        with disk.writing(began, began):
            began.write_text(remote.version)


def _to_fetch(part: Path, size: int) -> int:
    """Bytes still to fetch of a `size`-byte file into `part`: all of them when the .part holds more than that
    (`_download` starts it over), not a negative count that would make room for the other files."""
    have = _have(part)
    return size - have if have <= size else size


def _check_space(dest: Path, needed: dict[str, int]) -> None:
    free, total = shutil.disk_usage(dest).free, sum(needed.values())
    if total > free:
        raise FetchError(f"dest {dest}: the download needs {total / 2**30:,.1f} GiB ({', '.join(needed)}), "
                         f"its file system has {free / 2**30:,.1f} GiB free")


def _download(session: requests.Session, source: str | Path, target: Path, size: int, want: Expected) -> None:
    """Fetch `source` into `target.part` (continuing it), verify, rename into place."""
    part, began = _part_files(target)
    if _have(part) > size:
        part.unlink()
    have = _have(part)
    digest = md5_file(part) if have else hashlib.md5(usedforsecurity=False)
    failures, wait = 0, BACKOFF_S
    with tqdm(total=size, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
              disable=None) as bar:
        while have < size:
            start = have
            try:
                offset, blocks = _open(session, source, have)
                if offset < have:  # the server ignored the Range request: start over
                    log.warning("%s: the server does not resume; downloading it from the start", target.name)
                    have, digest = 0, hashlib.md5(usedforsecurity=False)
                    bar.reset()
                with disk.writing(part), open(part, "ab" if have else "wb") as fh:  # a full disk: named, kept
                    for block in blocks:
                        fh.write(block)
                        digest.update(block)
                        have += len(block)
                        bar.update(len(block))
                        faults.point("download", have)
                if have < size and isinstance(source, Path):  # a local copy does not grow by waiting
                    raise FetchError(f"{source}: the file holds {have:,} bytes, expected {size:,}; copy it whole "
                                     "and run again")
                if have < size:  # a response that ends early without an error is a dropped transfer too
                    raise _Retry(f"the response ended at byte {have:,}")
            except RETRYABLE as e:
                failures = 0 if have > start else failures + 1
                if failures >= RETRIES:
                    raise FetchError(f"{source}: download failed {RETRIES} times in a row at byte "
                                     f"{have:,} of {size:,} ({e}); run again to continue") from None
                log.warning("%s: transfer dropped at byte %s of %s (%s); retrying in %.0f s",
                            target.name, f"{have:,}", f"{size:,}", e, wait)
                time.sleep(wait)
                wait = BACKOFF_S if have > start else min(wait * 2, 300.0)
            except requests.HTTPError as e:
                raise FetchError(f"url: {source}: {e}") from None
    problem = check(part, Expected(want.file, size, want.md5), digest.hexdigest())  # its size: the file's own
    if problem:
        part.unlink()
        began.unlink(missing_ok=True)
        raise FetchError(f"{target.name}: {problem}; the downloaded file is deleted, run again to download it "
                         "anew (a mirror that serves another file needs its own checksums=)")
    os.replace(part, target)
    began.unlink(missing_ok=True)
    log.info("%s: downloaded, verified by %s", target, want.how)


class _Retry(requests.ConnectionError):
    """An attempt worth trying again: a server error (HTTP 5xx, 429), or a response that ended short."""


RETRYABLE = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


def _open(session: requests.Session, source: str | Path, start: int) -> tuple[int, Iterator[bytes]]:
    """(offset the bytes begin at, the bytes of `source` from there, a block at a time): `start`, or 0 from a
    server that ignores Range."""
    if isinstance(source, Path):
        return start, _file_blocks(source, start)
    r = session.get(source, headers={"Range": f"bytes={start}-"} if start else {}, stream=True, timeout=TIMEOUT_S)
    if r.status_code >= 500 or r.status_code == 429:
        r.close()
        raise _Retry(f"HTTP {r.status_code}")
    r.raise_for_status()
    return (start if r.status_code == 206 else 0), _response_blocks(r)


def _response_blocks(r: requests.Response) -> Iterator[bytes]:
    with r:
        yield from r.iter_content(CHUNK)


def _file_blocks(path: Path, start: int) -> Iterator[bytes]:
    with open(path, "rb") as fh:
        fh.seek(start)
        while block := fh.read(CHUNK):
            yield block
