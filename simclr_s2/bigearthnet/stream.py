"""Read the v2.0 archive's `.tar.zst` files as streams: the reference maps into the index, the chosen patches'
bands straight into a packed store, without unpacking 6.6 million files first.

Unpacking BigEarthNet-S2.tar.zst costs 63 GB of downloads plus about as much again of small files (and
hours of file creation); the study reads a few percent of its patches. So the archive is decompressed once,
in order, and each wanted member is handed to the very decoders build_index and the packer use: a patch's
band files are gathered in memory and decoded from there by the packer's strip reader
(`packed.decode_band`), with the packer's own reader on a temporary copy of the files for a patch it
declines (another layout, damage), so the streamed store is the packer's store bit for bit (pixels.npy
and names.txt; meta.json differs in its `created` time, as any two packs do). This process only walks the
stream (zstd decompresses in a thread of its own, a few blocks ahead); worker processes decode, resample
and write a chunk of patches at a time, each row to the row the patch has in the store's list, with the
packer's `store_rows` (the 20 m bands doubled by `bicubic`: torch's values, a fraction of its cost). A map
is decoded from its bytes by the index's own decoder (`reference_map.decode_reference_map`).

A stream that is truncated or corrupt stops at the member it was reading, naming it (zstandard's own
stream_reader ends a truncated file without a word, so the decompression here refuses a file that ends
inside a frame, and reads every stream to its end so the frame checksums are checked). A pack works in the
packer's hidden `.NAME.partial` folder and records which rows are durable; a rerun after a kill continues
from there (the stream is decompressed again, the rows already packed are skipped), a corrupt archive or a
patch the archive lacks or holds broken removes it. Fault point (faults.py): `stream_chunk@<k>` once chunk
k's rows are recorded.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import mmap
import os
import queue
import shutil
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import BinaryIO, Self

import numpy as np
import zstandard
from tqdm import tqdm

from simclr_s2 import disk, faults
from simclr_s2.bigearthnet import packed, reben
from simclr_s2.bigearthnet.bands import PATCH_SIZE
from simclr_s2.bigearthnet.index import ArchiveError, IndexResult, write_v2_index
from simclr_s2.bigearthnet.reader import (
    MISSING_BAND,
    V2_MAPS,
    V2_PATCHES,
    PatchError,
    band_file,
    is_v2_name,
    tile_folder,
)
from simclr_s2.bigearthnet.reference_map import decode_reference_map
from simclr_s2.errors import UserError

CHUNK = 4 << 20
"""Compressed bytes read at a time, each decompressed into one block of up to OUT_BLOCK (`_frames`). With
zstd's own output size (128 KiB) the zstd thread took the GIL back ten times a MiB read, each time making the
walking thread give it up: 4 MiB into one block cut that thread's CPU in the pack by 3-8 % in alternating runs
in one process, about 2 % in fresh processes at load 5 (the one-thread walk unchanged)."""
OUT_BLOCK = 4 * CHUNK
STATE_FILE = "stream.json"
ROWS_FILE = "stream.rows"
"""In a store's .partial folder while a stream packs it: what it packs, and the rows durable so far (int64)."""

log = logging.getLogger(__name__)


class TruncatedError(EOFError):
    """The compressed file ends inside a zstd frame."""


def _frames(fh: BinaryIO) -> Generator[bytes, None, None]:
    """The decompressed bytes of the .zst file `fh` in blocks, frame after frame; TruncatedError for a file
    that ends inside a frame."""
    dctx, frame, data = zstandard.ZstdDecompressor(), None, b""
    while True:
        data = data or fh.read(CHUNK)
        if not data:
            if frame is not None and not frame.eof:
                raise TruncatedError("the file ends inside a zstd frame (truncated)")
            return
        if frame is None or frame.eof:
            frame = dctx.decompressobj(write_size=OUT_BLOCK)
        block = frame.decompress(data)
        data = frame.unused_data if frame.eof else b""
        if block:
            yield block


def _ahead(blocks: Generator[bytes, None, None], depth: int = 4) -> Generator[bytes, None, None]:
    """`blocks` made in a thread of their own, up to `depth` ahead of the reader: zstandard and the file's
    reads release the GIL, so decompressing overlaps the tar walk on another core. The thread's error is
    raised here, in order; closing this generator stops the thread."""
    made: queue.Queue = queue.Queue(depth)
    stop, end = threading.Event(), object()

    def make() -> None:
        try:
            for block in blocks:
                made.put(block)
                if stop.is_set():
                    return
            made.put(end)
        except BaseException as e:  # noqa: BLE001 (handed to the reader, which raises it)
            made.put(e)

    thread = threading.Thread(target=make, name="zstd-ahead", daemon=True)
    thread.start()
    try:
        while (block := made.get()) is not end:
            if isinstance(block, BaseException):
                raise block
            yield block
    finally:
        stop.set()
        while thread.is_alive():  # free the queue's slots so a blocked `put` returns and sees `stop`
            with contextlib.suppress(queue.Empty):
                made.get(timeout=0.1)


class _Blocks(io.RawIOBase):
    """A raw stream of the bytes `blocks` yields; closing it closes `blocks`."""

    def __init__(self, blocks: Generator[bytes, None, None]) -> None:
        self._blocks, self._out = blocks, memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._out:
            block = next(self._blocks, None)
            if block is None:
                return 0
            self._out = memoryview(block)
        n = min(len(buffer), len(self._out))
        buffer[:n], self._out = self._out[:n], self._out[n:]
        return n

    def close(self) -> None:
        self._blocks.close()
        super().close()


def members(
    path: Path, wanted: Callable[[tarfile.TarInfo], bool], decompress_ahead: bool = True
) -> Iterator[tuple[tarfile.TarInfo, bytes]]:
    """(member, its bytes) of each regular file of the .tar.zst at `path` that `wanted` accepts, in archive
    order, read as one stream; the others are skipped unread. ArchiveError naming the member at a damaged
    or truncated stream. `decompress_ahead`: zstd in a thread of its own (`_ahead`); False decompresses in
    this thread (the benchmark's baseline, as the walk ran before)."""
    last, inside = "(none yet: at the start)", False
    try:
        with open(path, "rb") as fh, \
                io.BufferedReader(_Blocks(_ahead(_frames(fh)) if decompress_ahead else _frames(fh)), CHUNK) as stream:
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                while (member := tar.next()) is not None:
                    tar.members.clear()  # tarfile keeps every header it read: GBs for 6.6 million, one is needed
                    last, inside = member.name, True
                    if member.isfile() and wanted(member):
                        yield member, tar.extractfile(member).read()
                    inside = False
            while stream.read(CHUNK):  # to the end: the frame's checksum is checked there
                pass
    except (zstandard.ZstdError, tarfile.TarError, EOFError) as e:
        where = f"in member {last}" if inside else f"after member {last} (its data or the next header)"
        raise ArchiveError(f"{path}: corrupt or truncated {where}: {e}") from None


def write_tar_zst(root: Path, top: str, out: Path) -> Path:
    """`root/top` as a .tar.zst in the record's form (tests and benchmarks make demo ones): `top/...` paths
    in sorted order, one zstd frame with its checksum."""
    with open(out, "wb") as fh, zstandard.ZstdCompressor(write_checksum=True).stream_writer(fh) as z, \
            tarfile.open(fileobj=z, mode="w|") as tar:
        tar.add(Path(root) / top, arcname=top)
    return out


def _parts(member: tarfile.TarInfo, top: str) -> tuple[str, str, str] | None:
    """(tile folder, patch, file) of `top/<tile folder>/<patch>/<file>`, else None."""
    parts = member.name.removeprefix("./").split("/")
    return (parts[1], parts[2], parts[3]) if len(parts) == 4 and parts[0] == top else None


def stream_index(maps: Path, root: Path, out: Path) -> IndexResult:
    """The v2.0 index of `root` (holding the two metadata tables) with the maps read from `maps`
    (Reference_Maps.tar.zst): build_index's rows and rejections for every patch whose map is sound.

    What differs from build_index on the unpacked archive: the band files are not read here (the packer
    names a broken one), so a patch is listed when its map is in the archive; a row without a map is
    "missing patch folder" where build_index would say "missing reference map"."""
    start = time.perf_counter()
    meta, bad_rows = reben.read_records(root)
    rows, broken, stray, folders = [], [], [], []

    def is_map(member: tarfile.TarInfo) -> bool:
        parts = _parts(member, V2_MAPS)
        return parts is not None and parts[2] == f"{parts[1]}_reference_map.tif"

    with tqdm(desc="indexing maps", unit="patch", disable=None) as bar:
        for member, data in members(maps, is_map):
            tile, name, _ = _parts(member, V2_MAPS)
            bar.update()
            if not is_v2_name(name) or tile_folder(name) != tile:
                detail = f"expected in {V2_MAPS}/{tile_folder(name)}/" if is_v2_name(name) else \
                    "not a v2.0 patch name"
                stray.append(PatchError(name, reben.STRAY_FOLDER, f"{V2_MAPS}/{tile}/{name}", detail).as_row())
                continue
            folders.append(name)
            if name not in meta:
                continue
            try:
                ref = decode_reference_map(name, data)
                rows.append((name, ref.codes, ref.pixels, ref.epsg, ref.ulx, ref.uly))
            except PatchError as e:
                broken.append(e.as_row())
    _, unmatched = reben.match_folders(meta, sorted(folders), bad_rows + stray)
    return write_v2_index(root, out, rows, meta, bad_rows + stray + unmatched + broken, start)


def extract(archive: Path, dest: Path) -> int:
    """Unpack the .tar.zst `archive` into `dest` as a stream (what `tar -xf` does; extract=true); a file
    already there with its member's size is kept, so a rerun after a kill continues. Returns files
    written. Each file goes where tar's `data` filter puts it (a leading `/` stripped), and a member that
    would land outside `dest` (`../`, a link in `dest` leading out) stops the unpacking, named."""
    dest = Path(dest).resolve()
    # where the member `wanted` just accepted goes: one entry at a time, never one per member walked (6.6 million
    # in the S2 archive: gigabytes of paths on a rerun that skips them all)
    to_write: dict[str, Path] = {}

    def wanted(member: tarfile.TarInfo) -> bool:
        target = _target(archive, dest, member)
        if target.is_file() and target.stat().st_size == member.size:
            return False
        to_write[member.name] = target
        return True

    written = 0
    for member, data in tqdm(members(archive, wanted), desc=f"unpacking {archive.name}", unit="file",
                             disable=None):
        target = to_write.pop(member.name)
        target.parent.mkdir(parents=True, exist_ok=True)
        with disk.writing(target):  # a full dest named (a rerun rewrites the file, shorter than its member)
            target.write_bytes(data)
        written += 1
    return written


def _target(archive: Path, dest: Path, member: tarfile.TarInfo) -> Path:
    """The path in `dest` (resolved) that `member` of `archive` unpacks to, by tar's `data` filter; an
    ArchiveError, not a tarfile error (which `members` reports as damage), for one outside `dest`."""
    try:
        target = (dest / tarfile.data_filter(member, str(dest)).name).resolve()
        if not target.is_relative_to(dest):
            raise tarfile.OutsideDestinationError(member, str(target))
    except tarfile.FilterError as e:
        raise ArchiveError(f"{archive}: refusing to unpack member {member.name} ({e}: dest {dest})") from None
    return target


def _state(want: packed._Request, archive: Path) -> dict:
    """What a .partial folder's rows were packed from: a rerun continues them only when this matches."""
    stat = archive.stat()
    return {"format_version": packed.FORMAT_VERSION, "index_digest": want.index_digest, "bands": list(want.bands),
            "resampling": want.resampling, "names_digest": packed.names_digest(want.names),
            "archive": archive.name, "archive_size": stat.st_size}


def stream_pack(
    archive: Path,
    names: Sequence[str],
    store_dir: Path,
    bands: str | Sequence[str],
    index_digest: str,
    archive_root: Path,
    workers: int | None = None,
    resampling: str = "bicubic",
) -> packed.PackedStore:
    """The packed store of `names` at `store_dir`, read from BigEarthNet-S2.tar.zst (`archive`) as one
    stream: what `packed.open_or_pack(archive_root, ...)` makes from the unpacked archive (reused the same
    way when it is already there). `archive_root` is recorded in the store, as the packer does. `workers`:
    processes packing, this one (walking the stream) counted: 1 packs here, n the walk and n - 1 decoding
    processes; None or 0 one per core."""
    want = packed._request(names, bands, resampling, index_digest)
    store_dir, archive = Path(store_dir), Path(archive)
    with packed._locked(store_dir):
        store = packed.reusable(store_dir, want)
        if store is not None:
            return store
        unfinished = store_dir.with_name(f".{store_dir.name}.partial")
        done = _resume(unfinished, want, archive)
        try:
            _stream_rows(archive, want, unfinished, done, workers)
        except (ArchiveError, packed.PackError) as e:  # a rerun on this archive would fail again: nothing to keep
            shutil.rmtree(unfinished, ignore_errors=True)
            raise type(e)(f"{e}; the unfinished store {unfinished} is removed") from None
        for leftover in (STATE_FILE, ROWS_FILE):
            (unfinished / leftover).unlink()
        packed.finish_store(unfinished, want, archive_root)
        packed._swap_in(unfinished, store_dir)
    return packed.PackedStore.open(store_dir)


def _resume(unfinished: Path, want: packed._Request, archive: Path) -> set[int]:
    """Rows already packed in `unfinished` by a stream of the same request, else a fresh folder and none."""
    state = _state(want, archive)
    try:
        same = json.loads((unfinished / STATE_FILE).read_text()) == state
        recorded = (unfinished / ROWS_FILE).read_bytes()
    except (OSError, ValueError):
        same = False
    if same and (unfinished / packed.PIXELS_FILE).is_file():
        whole = len(recorded) // 8 * 8
        if whole < len(recorded):  # a record cut short (a full disk): cut off, or the next ones would follow it askew
            os.truncate(unfinished / ROWS_FILE, whole)
        rows = set(np.frombuffer(recorded[:whole], dtype=np.int64).tolist())
        log.info("resuming the packing of %s: %d of %d patches already packed", unfinished, len(rows),
                 len(want.names))
        return rows
    if unfinished.exists():
        log.warning("removing %s left by an interrupted pack", unfinished)
        shutil.rmtree(unfinished)
    unfinished.mkdir(parents=True)
    shape = (len(want.names), len(want.bands), PATCH_SIZE, PATCH_SIZE)
    needed = int(np.prod(shape)) * 2
    free = shutil.disk_usage(unfinished).free
    if needed > free:
        shutil.rmtree(unfinished)
        raise UserError(f"store {unfinished.parent}: the store needs {needed / 2**30:,.1f} GiB, its file system "
                        f"has {free / 2**30:,.1f} GiB free")
    np.lib.format.open_memmap(unfinished / packed.PIXELS_FILE, mode="w+", dtype=np.uint16, shape=shape)
    (unfinished / ROWS_FILE).touch()
    (unfinished / STATE_FILE).write_text(json.dumps(state) + "\n")
    return set()


def _stream_rows(archive: Path, want: packed._Request, out: Path, done: set[int], workers: int | None) -> None:
    """Pack every row not in `done` from the stream, a chunk of patches per task, recording each chunk.

    This process only decompresses and walks the stream and gathers each wanted patch's band files (they lie
    together in the archive); the workers decode, resample and write them."""
    row_of = {name: i for i, name in enumerate(want.names)}
    pixels = out / packed.PIXELS_FILE
    at = np.load(pixels, mmap_mode="r").offset
    how = {"out": pixels, "at": at, "bands": want.bands, "resampling": want.resampling, "archive": archive.name,
           "recorded_in": out / ROWS_FILE}
    decoders = _decoders(workers, len(want.names))
    pool = packed.worker_pool(decoders) if decoders else None
    handoff = contextlib.ExitStack()
    folder = handoff.enter_context(_handoff_folder()) if pool is not None else None
    running: dict[Future, _Slot] = {}  # each chunk in a worker, by the hand-off file it was handed in
    free = [handoff.enter_context(_Slot(folder / f"chunk{k}")) for k in range(2 * decoders)] if folder else []
    got: dict[str, dict[str, bytes]] = {}  # band files of the patches being gathered
    chunk: list[_Patch] = []  # without workers: the chunk's patches, packed here
    slot: _Slot | None = None  # with workers: the hand-off file the chunk is copied into
    recorded = handed = 0  # chunks recorded, patches in the chunks submitted
    bands = set(want.bands)

    def wanted(member: tarfile.TarInfo) -> bool:
        parts = _parts(member, V2_PATCHES)
        if parts is None or parts[1] not in row_of or row_of[parts[1]] in done:
            return False
        return _band(*parts[1:]) in bands

    def record(rows: list[int]) -> None:  # the rows are durable and recorded as packed (_pack_chunk)
        nonlocal recorded
        done.update(rows)
        bar.update(len(rows))
        faults.point("stream_chunk", recorded)
        recorded += 1

    def add(patch: _Patch) -> int:
        """Put a gathered patch in the chunk; returns the patches in it."""
        nonlocal slot
        if pool is None:
            chunk.append(patch)
            return len(chunk)
        while slot is None and not free:  # 2 chunks a worker in flight: wait for one, freeing its hand-off file
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for f in finished:
                free.append(running.pop(f))
                record(f.result())  # re-raises a worker's error
        slot = slot or free.pop()
        return slot.add(*patch)

    def submit() -> None:
        nonlocal handed, slot
        if pool is None:
            handed += len(chunk)
            record(_pack_chunk(chunk, **how))
            chunk.clear()
        else:
            layout = slot.take()
            handed += len(layout)
            running[pool.submit(_pack_handed, slot.path, layout, **how)] = slot
            slot = None

    try:
        with tqdm(total=len(want.names), initial=len(done), unit="patch",
                  desc=f"packing {out.name} from {archive.name}", disable=None) as bar:
            for member, data in members(archive, wanted):
                _, name, file = _parts(member, V2_PATCHES)
                files = got.setdefault(name, {})
                files[_band(name, file)] = data
                if len(files) == len(want.bands) and \
                        add((row_of[name], name, got.pop(name))) >= _chunk_size(handed):
                    submit()
            if chunk or slot:
                submit()
            for f in running:
                record(f.result())
            running.clear()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        handoff.close()
    missing = [n for i, n in enumerate(want.names) if i not in done]
    if missing:
        name = missing[0]
        lacking = sorted(f"{name}_{b}.tif" for b in want.bands if b not in got.get(name, {}))
        error = PatchError(name, MISSING_BAND, lacking[0], "not in the archive")
        raise packed.PackError(f"packing from {archive}: {error} ({len(missing)} of {len(want.names)} patches "
                               "incomplete)")


def _decoders(workers: int | None, patches: int) -> int:
    """Worker processes beside this one for a pack of `patches` by `workers` processes, this one counted: it walks
    the stream, a core's worth of work (the pack's bound on 2 cores), so on 2 cores one decoder beside it, not
    two sharing its core. None or 0: one process per core; 1: no worker, the chunks are packed here."""
    return max(0, min((workers or os.cpu_count() or 1) - 1, patches))


FIRST_CHUNK = 8
"""Patches in the first chunk; the next ones double up to MAX_CHUNK (`_chunk_size`)."""


def _chunk_size(handed: int) -> int:
    """Patches in the next chunk when `handed` are in earlier ones: 8, 8, 16, 32, then MAX_CHUNK, so the workers
    start after a few patches, not after a whole chunk's walk with a core idle. Not smaller at the end: more
    chunks, each waiting for the disk twice (`_pack_chunk`)."""
    return min(packed.MAX_CHUNK, max(FIRST_CHUNK, handed))


def _band(name: str, file: str) -> str:
    """The band of patch `name`'s band file `file` (`<name>_<band>.tif`)."""
    return file.removeprefix(f"{name}_").removesuffix(".tif")


_Patch = tuple[int, str, dict[str, bytes]]
"""A patch gathered from the stream: its row in the store, its name, and its band -> band file's bytes."""
_Layout = list[tuple[int, str, list[tuple[str, int]]]]
"""A chunk handed off in a file: each patch's row, name, and its bands with their files' sizes, in order."""


HANDOFF_PREFIX = "simclr_s2-stream-"


@contextlib.contextmanager
def _handoff_folder() -> Iterator[Path]:
    """Where chunks of band files pass to the workers: in memory (/dev/shm) where there is one. It is named
    after this process, so a pack killed with chunks in flight has its folder removed by the next pack, not
    left holding memory."""
    shm = Path("/dev/shm")
    base = shm if os.access(shm, os.W_OK) else Path(tempfile.gettempdir())
    disk.remove_left_by_dead(base, f"{HANDOFF_PREFIX}*-*", lambda name: name.removeprefix(HANDOFF_PREFIX).split("-")[0])
    with tempfile.TemporaryDirectory(prefix=f"{HANDOFF_PREFIX}{os.getpid()}-", dir=base) as d:
        yield Path(d)


SLOT_BYTES = 12 << 20
"""A hand-off file's least size: a chunk of MAX_CHUNK patches of 12 band files (10.5 MB) fits; it grows as needed."""


class _Slot:
    """A hand-off file, mapped into the walking process: each patch's band files are copied into it as the
    patch is complete, one after another, and a worker reads the chunk from it (`_pack_handed`). The walking
    process's share of the hand-off is that one copy, where pickling the files for the pool's pipe cost
    several and the pool's threads; and the bytes read from the stream are freed patch by patch, so the walk
    reuses memory in the CPU's cache instead of holding a chunk's worth (megabytes) until it is handed off. The
    files are reused chunk after chunk, as writing into pages a file already has costs a fraction of a new
    file's."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        self._map: mmap.mmap | None = None  # mapped at the first patch (`_grow`)
        self._layout: _Layout = []
        self._end = 0

    def add(self, row: int, name: str, files: dict[str, bytes]) -> int:
        """Copy a patch's band files in after the others; returns the patches in the slot."""
        end = self._end + sum(map(len, files.values()))
        if self._map is None or end > len(self._map):
            self._grow(end)
        for data in files.values():
            self._map[self._end : self._end + len(data)] = data
            self._end += len(data)
        self._layout.append((row, name, [(band, len(data)) for band, data in files.items()]))
        return len(self._layout)

    def _grow(self, end: int) -> None:
        """Map at least `end` bytes of the file, their memory taken now (posix_fallocate): a full /dev/shm is an
        OSError here, not a SIGBUS when a page of the mapping is first written."""
        size = max(end, SLOT_BYTES, 2 * len(self._map) if self._map is not None else 0)
        try:
            os.posix_fallocate(self._fd, 0, size)
        except OSError as e:  # named: the file system that is full is this one, not the store's
            raise (disk.failure(e, self.path) or e) from None
        if self._map is not None:
            self._map.close()
        self._map = mmap.mmap(self._fd, size)

    def take(self) -> _Layout:
        """How to cut the chunk's files apart again; the slot starts over (once the worker has read it)."""
        layout, self._layout, self._end = self._layout, [], 0
        return layout

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        if self._map is not None:
            self._map.close()
        os.close(self._fd)


_MAPPED: dict[Path, mmap.mmap] = {}
"""The hand-off files as a worker maps them, kept from chunk to chunk (`_mapped`)."""


def _mapped(path: Path, n: int) -> memoryview:
    """The first `n` bytes of the hand-off file `path`, read-only, valid until the file is written again. A
    worker reads a chunk's band files where the walking process copied them, not copied again, and a page once
    mapped stays mapped (reading into a buffer of the worker's cost a copy of every chunk)."""
    mapped = _MAPPED.get(path)
    if mapped is None or len(mapped) < n:  # a file not seen yet, or grown since (`_Slot.add`)
        with open(path, "rb") as fh:
            mapped = _MAPPED[path] = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    if len(mapped) < n:
        raise OSError(f"{path}: short read of a chunk of band files")
    return memoryview(mapped)[:n]


def _pack_handed(path: Path, layout: _Layout, **how) -> list[int]:
    """`_pack_chunk` of a chunk handed off in a `_Slot`'s file. The band files are views of the file as mapped,
    not copies."""
    data = _mapped(path, sum(n for _, _, sizes in layout for _, n in sizes))
    patches, at = [], 0
    for row, name, sizes in layout:
        files = {}
        for band, n in sizes:
            files[band], at = data[at : at + n], at + n
        patches.append((row, name, files))
    return _pack_chunk(patches, **how)


def _pack_chunk(
    patches: list[_Patch], *, out: Path, at: int, bands: tuple[str, ...], resampling: str, archive: str,
    recorded_in: Path,
) -> list[int]:
    """The packer's chunk (`packed._pack_chunk`) for patches whose band files are in memory: decoded with
    the packer's fast reader (`packed.decode_band`), made rows by the packer's `store_rows` as one batch,
    each row written to its place and synced to disk, then recorded as packed (appended to `recorded_in`,
    synced). Returns the rows written. The syncs are here, in a worker, not in the one process walking the
    stream, which would wait for the disk twice a chunk."""
    native = []
    for _, name, files in patches:
        decoded = {band: packed.decode_band(files[band], band) for band in bands}
        native.append(decoded if all(v is not None for v in decoded.values()) else
                      _read_as_files(name, files, bands, archive))
    rows = packed.store_rows(native, bands, resampling)
    fd = os.open(out, os.O_WRONLY)
    try:
        for (row, _, _), pixels in zip(patches, rows, strict=True):
            if os.pwrite(fd, pixels, at + row * pixels.nbytes) != pixels.nbytes:
                raise OSError(f"{out}: short write of row {row} (disk full?)")
        os.fdatasync(fd)  # durable before they are recorded as packed
    finally:
        os.close(fd)
    written = np.asarray([row for row, _, _ in patches], dtype=np.int64)
    fd = os.open(recorded_in, os.O_WRONLY | os.O_APPEND)  # one write: the workers' records never interleave
    try:
        if os.write(fd, written.tobytes()) != written.nbytes:
            raise OSError(f"{recorded_in}: short write of the rows packed (disk full?)")
        os.fsync(fd)
    finally:
        os.close(fd)
    return written.tolist()


def _read_as_files(name: str, files: dict[str, bytes], bands: tuple[str, ...], archive: str) -> dict[str, np.ndarray]:
    """A patch with a band file the fast reader does not take (another layout, damage): its files written to a
    temporary folder and read by the packer's reader there, so GDAL reads what it can and what it cannot is the
    packer's own error."""
    with tempfile.TemporaryDirectory(prefix="simclr_s2-stream-") as tmp:
        folder = Path(tmp) / name
        folder.mkdir()
        for band, data in files.items():
            band_file(folder, band).write_bytes(data)
        try:
            return packed.read_bands(folder, bands)
        except PatchError as e:
            raise packed.PackError(f"packing from {archive}: {e}") from None
