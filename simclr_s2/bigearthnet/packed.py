"""Packed store: every patch of a list read from its GeoTIFFs once, resampled once, kept as finished rows.

Why: opening a GeoTIFF costs about 0.6 ms through GDAL, so a loader that opens 10-12 files per sample tops
out near 100-150 samples/s per core, and resampling each batch again every epoch cost more than reading
it; the study trains dozens of models on the same patches. Packing reads the band files with
`tiff.decode_uint16_strips` (GDAL for any other layout), resamples with `bands.stack_bands`, the reader's own
function (its 20 m bicubic doubled by `bicubic.py` for a third of the CPU, the same bits), and stores the
result, so a training batch is one read per row plus one conversion (`bands.InputTransform`), done on the GPU
when training runs there.

Layout of a store folder:
    pixels.npy  uint16 (N, C, 120, 120): row i = patch names[i], channels in band order, each band resampled
                to 120 x 120 px with the store's method, rounded half to even and clipped to 0..65535
    names.txt   the N patch names, one per line
    meta.json   format version, index digest, bands, resampling method, names digest, shape

Difference to the direct path (`reader.read_pixels`, float32 DN before z-scoring): a stored pixel is exactly
`clip(rint(direct), 0, 65535)`, rint rounding half to even. So the 10 m bands (not resampled: whole numbers
already) are identical, and a resampled band differs by at most 0.5 DN (0.5 / STD < 0.001 after z-scoring)
wherever the direct value lies in 0..65535: always for nearest and bilinear, and for bicubic everywhere but
where its overshoot next to an edge leaves that range (below 0 beside a pixel near 0), where the store keeps
the bound. Every path then applies the same `InputTransform` to its DN, so a packed z-scored input is
`normalise(clip(rint(direct)))` bit for bit.

A store only ever appears complete: it is written into a hidden `.NAME.partial` folder beside it and
renamed into place, under a lock file, so an interrupted pack leaves nothing that looks done and the next
pack (of any process) starts that folder again.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import hashlib
import json
import logging
import math
import multiprocessing
import os
import resource
import shutil
import signal
import sys
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from simclr_s2 import disk, faults
from simclr_s2.bigearthnet import bicubic, reader
from simclr_s2.bigearthnet.bands import (
    NATIVE_SIZE,
    PATCH_SIZE,
    Bands,
    Resampling,
    check_resampling,
)
from simclr_s2.bigearthnet.tiff import TiffFormatError, decode_uint16_strips
from simclr_s2.errors import UserError

FORMAT_VERSION = 2
META_FILE = "meta.json"
NAMES_FILE = "names.txt"
PIXELS_FILE = "pixels.npy"
DN_MAX = np.iinfo(np.uint16).max
MAX_CHUNK = 64
"""Patches per unit of parallel work: small enough for a smooth progress bar, large enough to amortise."""

log = logging.getLogger(__name__)


class StoreError(UserError):
    """A store folder that cannot be used: foreign content, unreadable files, or a name it does not hold."""


class PackError(UserError):
    """A patch of the list could not be read while packing; names the patch, file and reason."""


def names_digest(names: Sequence[str]) -> str:
    """sha256 of the ordered names: a store's rows are positions, so order is part of its identity."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def read_bands(patch_dir: Path, bands: Sequence[str]) -> dict[str, np.ndarray]:
    """`reader.read_native`, without GDAL for the uncompressed strips BigEarthNet ships (bit-identical).

    A file the fast reader does not take (missing, damaged, another layout or size) goes to
    `reader.read_band`: GDAL reads what it can, and what it cannot is the reader's own PatchError.
    """
    native = {}
    for band in bands:
        try:
            pixels = decode_band(reader.band_file(patch_dir, band).read_bytes(), band)
        except OSError:
            pixels = None
        native[band] = reader.read_band(patch_dir, band) if pixels is None else pixels
    return native


def decode_band(data: bytes, band: str) -> np.ndarray | None:
    """The native pixels of `band` from its file's bytes by the fast strip reader, or None where that reader
    does not take them (another layout, damage, another size): GDAL decides those (`reader.read_band`)."""
    try:
        pixels = decode_uint16_strips(data)
    except TiffFormatError:
        return None
    return pixels if pixels.shape == (NATIVE_SIZE[band], NATIVE_SIZE[band]) else None


def quantise(x: np.ndarray) -> np.ndarray:
    """Resampled float32 DN -> the stored uint16: clipped to 0..65535 and rounded half to even (in x, in
    place), then cast (exact: whole numbers in range)."""
    np.clip(x, 0, DN_MAX, out=x)
    return np.rint(x, out=x).astype(np.uint16)


def store_rows(native: Sequence[dict[str, np.ndarray]], bands: tuple[str, ...], resampling: str) -> np.ndarray:
    """The store's uint16 rows of a chunk's patches (their native rasters by band): `quantise(bands.stack_bands(
    batch, bands, resampling))` bit for bit, for less. A 10 m band's uint16 pixels are its rows already
    (quantising a whole number in range gives it back), so they are copied into place once; only the other
    bands are stacked, resampled (`bicubic.stack_bands`) and quantised."""
    rows = np.empty((len(native), len(bands), PATCH_SIZE, PATCH_SIZE), np.uint16)
    kept = [i for i, b in enumerate(bands)
            if all(p[b].shape == rows.shape[-2:] and p[b].dtype == np.uint16 for p in native)]
    for row, patch in zip(rows, native, strict=True):
        for i in kept:
            row[i] = patch[bands[i]]
    resampled = [i for i in range(len(bands)) if i not in kept]
    if resampled:
        names = [bands[i] for i in resampled]
        batch = {band: np.stack([patch[band] for patch in native]) for band in names}
        step = max(1, _RESAMPLED_AT_ONCE // len(names))
        for start in range(0, len(native), step):  # a few patches at a time: the floats stay in the CPU's cache
            part = {band: x[start : start + step] for band, x in batch.items()}
            rows[start : start + step, resampled] = quantise(bicubic.stack_bands(part, names, resampling))
    return rows


_RESAMPLED_AT_ONCE = 16
"""Rasters `store_rows` resamples and quantises in one go (a block's float32 stays in the CPU's cache)."""


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The packing processes: one torch thread each (the processes are the parallelism), and on Linux each
    forked from this process and dying with it, so a pack killed outright (SIGKILL, a lost session) leaves
    no worker holding its caller's pipes or memory. The workers start here, before the caller starts any
    thread of its own (the stream's decompression): a fork copies only the forking thread."""
    context = multiprocessing.get_context("fork" if _LINUX else None)
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_start_worker, initargs=(os.getpid(),))
    pool.submit(int)  # with fork, the first task forks every worker, here and now: no need to wait for it
    return pool


def _start_worker(parent: int) -> None:
    torch.set_num_threads(1)
    if _LINUX:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the signal was asked for
            os.kill(os.getpid(), signal.SIGKILL)


_LINUX = sys.platform.startswith("linux")
_PR_SET_PDEATHSIG = 1
"""prctl(2): the signal a process gets when the thread that forked it ends (the pool forks in the caller's)."""


class PackedStore:
    """A packed patch list, read a batch of rows at a time.

    Model inputs (`read_inputs`) are converted straight from the memory map: the page cache's own pages,
    no copy of the uint16 rows first. Stored rows (`read_dn`, for pinned memory) are copied with one `pread`
    each. A reader names the rows it will read next (`advise`, once per batch), and rows the disk must serve
    are then asked for all at once (WILLNEED hints), so a store larger than RAM is read many rows at a time
    (about 3x the rate of page faults alone, measured here).
    """

    def __init__(
        self, path: Path, names: Sequence[str], bands: Bands, resampling: Resampling, index_digest: str
    ) -> None:
        self.path = Path(path)
        self.names = tuple(names)
        self.bands = bands
        self.resampling = resampling
        self.index_digest = index_digest
        self.pixels: np.memmap = np.load(self.path / PIXELS_FILE, mmap_mode="r")
        # the same pages as a plain array: a row of it is a view, without np.memmap's Python-level slicing
        self._mapped = self.pixels.view(np.ndarray)
        self.row_shape = (len(self.bands), PATCH_SIZE, PATCH_SIZE)
        self._row_bytes = math.prod(self.row_shape) * 2
        self._fd = os.open(self.path / PIXELS_FILE, os.O_RDONLY)
        # is the store out of the page cache? (hint the next batch: `advise`) Loader threads read and hint at
        # once, so the flag changes under a lock, and `_misses` counts the evidence that it is cold (a read
        # that waited, hints that sent reads) so a hint that found its rows cached cannot clear evidence
        # another thread found meanwhile
        self._cold_lock = threading.Lock()
        self._cold, self._misses = True, 0
        weakref.finalize(self, os.close, self._fd)
        self._row = {n: i for i, n in enumerate(self.names)}

    @classmethod
    def open(cls, path: Path) -> PackedStore:
        """Open a complete store read-only; StoreError if it is not one or is damaged."""
        path = Path(path)
        meta = _read_meta(path)
        if meta is None:
            raise StoreError(f"{path}: not a complete packed store (no readable {META_FILE})")
        try:
            names = (path / NAMES_FILE).read_text().splitlines()
            store = cls(
                path,
                names,
                Bands.parse(meta["bands"]),
                check_resampling(meta["resampling"]),
                meta["index_digest"],
            )
            digest = meta["names_digest"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{path}: damaged packed store ({e!r})") from e
        shape, expected = store.pixels.shape, (len(names), *store.row_shape)
        if names_digest(names) != digest or shape != expected or store.pixels.dtype != np.uint16:
            raise StoreError(
                f"{path}: damaged packed store ({PIXELS_FILE} holds {shape} {store.pixels.dtype}, "
                f"{META_FILE} and {NAMES_FILE} say {expected} uint16 in that order)"
            )
        return store

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """Row of each name; StoreError naming the first patch the store does not hold."""
        try:
            return np.fromiter((self._row[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as e:
            raise StoreError(f"{self.path}: patch {e.args[0]} is not in this packed store") from None

    def read_dn(self, rows: Sequence[int] | np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint16 (B, C, 120, 120) of `rows` in order (repeats allowed), into `out` if given (e.g. pinned)."""
        rows = self._checked(rows)
        out = np.empty((len(rows), *self.row_shape), np.uint16) if out is None else out
        for _ in self._read_each(rows, lambda k: out[k]):
            pass
        return out

    def read_inputs(
        self, rows: Sequence[int] | np.ndarray, transform: Callable[..., np.ndarray]
    ) -> np.ndarray:
        """float32 (B, C, 120, 120) model inputs of `rows`: `transform(dn, out=...)` of each row read
        straight from the memory map into its place in the batch (one pass over the row, which stays in
        the CPU cache for the conversion's next ones), the rows taken in file order so a disk serves them
        nearly in sequence. Whether the batch waited for the disk (major page faults) decides `advise`."""
        rows = self._checked(rows)
        out = np.empty((len(rows), *self.row_shape), np.float32)
        faults = _major_faults()
        for k in np.argsort(rows, kind="stable"):
            transform(self._mapped[rows[k]], out=out[k])
        if _major_faults() > faults:
            self._missed()
        return out

    def advise(self, rows: Sequence[int] | np.ndarray) -> None:
        """Ask the disk for `rows` now (WILLNEED), in file order, while the store is out of the page cache:
        a loader names each batch here once, before it is read (the next one while this one is converted,
        so the disk reads it meanwhile). The store counts as cached from hints that sent nothing to the
        disk until a read waits for it (a fresh store: not cached), so a store in the page cache skips the
        hints (they cost a system call a row) and a cold one hints every batch; the reads never hint."""
        with self._cold_lock:
            if not self._cold:
                return
            misses = self._misses
        blocks = _blocks_read()
        for row in np.sort(self._checked(rows)):
            os.posix_fadvise(self._fd, self._offset(row), self._row_bytes, os.POSIX_FADV_WILLNEED)
        if _blocks_read() > blocks:
            self._missed()
        with self._cold_lock:  # cached only if nothing, in any thread, missed the page cache meanwhile
            self._cold = self._misses != misses

    def _missed(self) -> None:
        """A read waited for the disk, or hints sent it reads: the store is (partly) out of the page cache."""
        with self._cold_lock:
            self._cold, self._misses = True, self._misses + 1

    def _checked(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.ndim != 1 or (len(rows) and not 0 <= rows.min() <= rows.max() < len(self)):
            raise IndexError(f"{self.path}: rows must be a 1-d list in 0..{len(self) - 1}")
        return rows

    def _read_each(self, rows: np.ndarray, into: Callable[[int], np.ndarray]) -> Iterator[int]:
        """Read rows[k] into `into(k)` and yield k, for each k in turn.

        A row in the page cache is read without waiting (RWF_NOWAIT); one that is not tells `advise` to hint.
        """
        for k, row in enumerate(rows):
            buffer, offset = memoryview(into(k)).cast("B"), self._offset(row)
            try:
                got = os.preadv(self._fd, [buffer], offset, os.RWF_NOWAIT)
            except OSError:  # not cached (EAGAIN), or a kernel without RWF_NOWAIT: read it the plain way
                got = 0
            if got < self._row_bytes:
                self._missed()
                got += os.preadv(self._fd, [buffer[got:]], offset + got)
            if got != self._row_bytes:
                raise StoreError(f"{self.path}: {PIXELS_FILE} is truncated at row {row}")
            yield k

    def _offset(self, row: int) -> int:
        return self.pixels.offset + int(row) * self._row_bytes


def _major_faults() -> int:
    """Page faults this thread waited on the disk for: a batch without any was served by the page cache."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_majflt


def _blocks_read() -> int:
    """Blocks this thread sent the disk to read, hints included: hints on cached rows send none."""
    return resource.getrusage(resource.RUSAGE_THREAD).ru_inblock


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def packed_from(path: Path) -> tuple[str, tuple[str, ...], str] | None:
    """What the store at `path` was packed from (index digest, band names, resampling), from its meta.json
    alone: a cheap look before `PackedStore.open` reads and checks the names list. None without one."""
    meta = _read_meta(path) or {}
    try:
        return str(meta["index_digest"]), tuple(meta["bands"]), str(meta["resampling"])
    except (KeyError, TypeError):
        return None


@dataclass(frozen=True)
class _Request:
    """What a store holds, checked: it is reused only when all four match."""

    names: tuple[str, ...]
    bands: Bands
    resampling: Resampling
    index_digest: str


def _request(
    names: Sequence[str], bands: Bands | str, resampling: str, index_digest: str
) -> _Request:
    names = tuple(names)
    if not names:
        raise UserError("packed store: the patch list is empty")
    if len(set(names)) != len(names):
        raise UserError("packed store: the patch list names a patch twice (rows must be unique)")
    if not index_digest:
        raise UserError("packed store: index_digest is required (it decides when a store is stale)")
    return _Request(names, Bands.parse(bands), check_resampling(resampling), index_digest)


def _mismatch(path: Path, want: _Request) -> list[str]:
    """Why the store at `path` cannot serve this request; empty when it can be reused as is."""
    if not path.exists():
        return ["no store yet"]
    meta = _read_meta(path)
    if meta is None:
        return [f"no readable {META_FILE}"]
    reasons = []
    if meta.get("format_version") != FORMAT_VERSION:
        reasons.append(f"format version {meta.get('format_version')} != {FORMAT_VERSION}")
    if meta.get("index_digest") != want.index_digest:
        reasons.append(
            f"index digest changed ({str(meta.get('index_digest'))[:12]} -> {want.index_digest[:12]})"
        )
    if tuple(meta.get("bands", ())) != want.bands:
        reasons.append(f"bands changed ({','.join(meta.get('bands', ()))} -> {','.join(want.bands)})")
    if meta.get("resampling") != want.resampling:
        reasons.append(f"resampling changed ({meta.get('resampling')} -> {want.resampling})")
    if meta.get("names_digest") != names_digest(want.names):
        reasons.append(
            f"patch list changed ({meta.get('n_patches')} -> {len(want.names)} names, digest differs)"
        )
    return reasons


def open_or_pack(
    archive_root: Path,
    names: Sequence[str],
    store_dir: Path,
    bands: Bands | str,
    index_digest: str,
    workers: int | None = None,
    resampling: str = "bicubic",
) -> PackedStore:
    """Reuse the store at `store_dir` if it was packed from the same index, bands, resampling and names; else
    pack it. Never reuses silently on a difference: the log line says why a store is rebuilt.
    """
    want = _request(names, bands, resampling, index_digest)
    store_dir = Path(store_dir)
    with _locked(store_dir):
        store = reusable(store_dir, want)
        return store if store is not None else _pack_locked(Path(archive_root), want, store_dir, workers)


def reusable(store_dir: Path, want: _Request) -> PackedStore | None:
    """The store at `store_dir`, said to be reused, when it serves `want` and opens; else None, once the log
    says why it is packed (anew): it differs, is damaged or is not there yet. The packer and the streamed
    pack both decide here, so both rebuild a damaged store. Call it holding the store's lock (`_locked`)."""
    reasons = _mismatch(store_dir, want)
    if not reasons:
        try:
            return reused(PackedStore.open(store_dir))
        except StoreError as e:
            reasons = [str(e)]
    _say_why_packing(store_dir, want, reasons)
    return None


def _say_why_packing(store_dir: Path, want: _Request, reasons: list[str]) -> None:
    """Log why the store at `store_dir` is packed (anew); StoreError for a folder there that holds something
    else, which a pack must not replace."""
    if store_dir.exists() and _read_meta(store_dir) is None and any(store_dir.iterdir()):
        raise StoreError(
            f"store_dir {store_dir} exists, is not empty and is not a packed store; refusing to replace it"
        )
    if store_dir.exists():
        log.warning("rebuilding packed store %s: %s", store_dir, "; ".join(reasons))
    else:
        log.info("packing %d patches into %s", len(want.names), store_dir)


def reused(store: PackedStore) -> PackedStore:
    """`store`, said to be reused rather than packed: the one line the packer, the stream and a loader that
    finds a store already packed all log."""
    log.info("reusing packed store %s (%d patches, %s)", store.path, len(store), ",".join(store.bands))
    return store


def pack(
    archive_root: Path,
    names: Sequence[str],
    store_dir: Path,
    bands: Bands | str,
    index_digest: str,
    workers: int | None = None,
    resampling: str = "bicubic",
) -> PackedStore:
    """Read every patch of `names` once (in parallel processes) into a new store at `store_dir`.

    An existing store there is replaced only once the new one is complete.
    """
    want = _request(names, bands, resampling, index_digest)
    store_dir = Path(store_dir)
    with _locked(store_dir):
        _say_why_packing(store_dir, want, ["asked to"])
        return _pack_locked(Path(archive_root), want, store_dir, workers)


@contextlib.contextmanager
def _locked(store_dir: Path) -> Iterator[None]:
    """One packer per store at a time (e.g. several ranks of one job); others wait, then reuse its result.
    A full or read-only disk, here or while packing, is one line naming the store and its file system."""
    with disk.writing(store_dir):
        store_dir.parent.mkdir(parents=True, exist_ok=True)
        with open(store_dir.parent / f".{store_dir.name}.lock", "w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("waiting for another process packing %s", store_dir)
                fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def _pack_locked(archive_root: Path, want: _Request, store_dir: Path, workers: int | None) -> PackedStore:
    unfinished = store_dir.with_name(f".{store_dir.name}.partial")
    if unfinished.exists():
        log.warning("removing %s left by an interrupted pack", unfinished)
        shutil.rmtree(unfinished)
    unfinished.mkdir()
    try:
        _write(archive_root, want, unfinished, workers, desc=store_dir.name)
        _swap_in(unfinished, store_dir)
    except BaseException:
        shutil.rmtree(unfinished, ignore_errors=True)
        raise
    return PackedStore.open(store_dir)


def _write(archive_root: Path, want: _Request, out: Path, workers: int | None, desc: str) -> None:
    names = want.names
    shape = (len(names), len(want.bands), PATCH_SIZE, PATCH_SIZE)
    at = np.lib.format.open_memmap(out / PIXELS_FILE, mode="w+", dtype=np.uint16, shape=shape).offset

    workers = max(1, min(workers or os.cpu_count() or 1, len(names)))
    chunk = max(1, min(MAX_CHUNK, math.ceil(len(names) / (4 * workers))))
    chunks = [(names[start : start + chunk], start) for start in range(0, len(names), chunk)]
    task = partial(
        _pack_chunk,
        archive_root,
        out=out / PIXELS_FILE,
        at=at,
        bands=want.bands,
        resampling=want.resampling,
    )
    written = 0

    def record(n: int) -> None:
        nonlocal written
        progress.update(n)
        faults.point("pack_chunk", written)
        written += 1

    with tqdm(total=len(names), unit="patch", desc=f"packing {desc}", disable=None) as progress:
        if workers == 1:
            for part, start in chunks:
                record(task(part, start))
        else:
            pool = worker_pool(workers)
            try:
                futures = {pool.submit(task, part, start) for part, start in chunks}
                while futures:
                    done, futures = wait(futures, return_when=FIRST_EXCEPTION)
                    for f in done:
                        record(f.result())  # re-raises a worker's error
            finally:
                # On an error, drop the queued chunks instead of reading them for nothing.
                pool.shutdown(wait=True, cancel_futures=True)
    finish_store(out, want, archive_root)


def finish_store(out: Path, want: _Request, archive_root: Path) -> None:
    """The last step of a store whose pixels.npy is written: names.txt and meta.json beside it, all made
    durable (the packer and the streamed pack both end here, so their stores are the same bit for bit)."""
    _fsync(out / PIXELS_FILE)
    (out / NAMES_FILE).write_text("\n".join(want.names) + "\n")
    meta = {
        "format_version": FORMAT_VERSION,
        "index_digest": want.index_digest,
        "bands": list(want.bands),
        "resampling": want.resampling,
        "names_digest": names_digest(want.names),
        "n_patches": len(want.names),
        "file": PIXELS_FILE,
        "dtype": "uint16",
        "shape": [len(want.names), len(want.bands), PATCH_SIZE, PATCH_SIZE],
        "archive_root": str(Path(archive_root).resolve()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _fsync(out / NAMES_FILE)
    _fsync(out / META_FILE)


def _pack_chunk(
    archive_root: Path,
    names: tuple[str, ...],
    start: int,
    *,
    out: Path,
    at: int,
    bands: tuple[str, ...],
    resampling: str,
) -> int:
    """Read, resample and quantise `names` into rows start.. of the array file `out` (its rows from byte
    `at`); runs in a worker process (one torch thread: the workers are the parallelism). One pwrite, not a
    memory map: no page faults on the new file's pages, no msync."""
    native = []
    for name in names:
        try:
            native.append(read_bands(reader.patch_dir(archive_root, name), bands))
        except reader.PatchError as e:
            # Re-raised as a one-argument error: PatchError's own arguments do not survive the
            # trip back from a worker process (it would surface as a BrokenProcessPool).
            raise PackError(f"packing {archive_root}: {e}") from None
    rows = store_rows(native, bands, resampling)
    fd = os.open(out, os.O_WRONLY)
    try:
        if os.pwrite(fd, rows, at + start * rows[0].nbytes) != rows.nbytes:
            raise OSError(f"{out}: short write of rows {start}..{start + len(names) - 1} (disk full?)")
    finally:
        os.close(fd)
    return len(names)


def _fsync(path: Path) -> None:
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def _swap_in(partial: Path, store_dir: Path) -> None:
    """Rename the finished folder into place; an old store is moved aside first and removed after."""
    old = store_dir.with_name(f".{store_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if store_dir.exists():
        os.replace(store_dir, old)
    os.replace(partial, store_dir)
    disk.sync_folder(store_dir.parent)
    shutil.rmtree(old, ignore_errors=True)
