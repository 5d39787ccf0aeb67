"""Packed store: every GeoTIFF of a patch list read once, kept as memory-mapped arrays at native resolution.

Why: opening a GeoTIFF costs about 0.6 ms, so a loader that opens 10-12 files per sample tops out
near 100-150 samples/s per core, while the study trains dozens of models on the same patches.
Packing pays that cost once; training then gathers rows of a memory-mapped uint16 array per band
group and resamples whole batches with `bands.resample`, the same function the GeoTIFF reader
uses, so both paths give identical tensors.

Layout of a store folder:
    10m.npy, 20m.npy, 60m.npy  uint16 (N, k, s, s) per resolution group present in the band set,
                               bands in the requested order within each group, s = native size
    names.txt                  the N patch names, one per line, row i = names[i]
    meta.json                  format version, index digest, bands, names digest, group shapes

A store only ever appears complete: it is written into a hidden `.NAME.partial` folder beside it
and renamed into place, under a lock file, so an interrupted pack leaves nothing that looks done
and the next pack (of any process) starts that folder again.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from simclr_s2.bigearthnet import reader
from simclr_s2.bigearthnet.bands import (
    NATIVE_SIZE,
    RESOLUTION_M,
    normalise,
    resolve_bands,
    stack_bands,
)
from simclr_s2.errors import UserError

FORMAT_VERSION = 1
META_FILE = "meta.json"
NAMES_FILE = "names.txt"
MAX_CHUNK = 128
"""Patches per unit of parallel work: small enough for a smooth progress bar, large enough to amortise."""

log = logging.getLogger(__name__)


class StoreError(UserError):
    """A store folder that cannot be used: foreign content, unreadable files, or a name it does not hold."""


class PackError(UserError):
    """A patch of the list could not be read while packing; names the patch, file and reason."""


def names_digest(names: Sequence[str]) -> str:
    """sha256 of the ordered names: a store's rows are positions, so order is part of its identity."""
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def group_bands(bands: Sequence[str]) -> dict[int, tuple[str, ...]]:
    """Bands per native resolution (10, 20, 60 m), each in the requested order; only groups present."""
    groups = {
        res: tuple(b for b in bands if RESOLUTION_M[b] == res) for res in sorted(set(RESOLUTION_M.values()))
    }
    return {res: bs for res, bs in groups.items() if bs}


def _group_file(res: int) -> str:
    return f"{res}m.npy"


class PackedStore:
    """A packed patch list: `read_batch` turns row indices into model-ready (B, C, 120, 120) tensors."""

    def __init__(
        self,
        path: Path,
        names: Sequence[str],
        bands: Sequence[str],
        index_digest: str,
        arrays: dict[int, np.ndarray],
    ) -> None:
        self.path = Path(path)
        self.names = tuple(names)
        self.bands = tuple(bands)
        self.index_digest = index_digest
        self.arrays = arrays
        self._row = {n: i for i, n in enumerate(self.names)}
        self._groups = group_bands(self.bands)

    @classmethod
    def open(cls, path: Path) -> PackedStore:
        """Open a complete store read-only, memory-mapped; StoreError if it is not one or is damaged."""
        path = Path(path)
        meta = _read_meta(path)
        if meta is None:
            raise StoreError(f"{path}: not a complete packed store (no readable {META_FILE})")
        try:
            names = (path / NAMES_FILE).read_text().splitlines()
            arrays = {g["resolution_m"]: np.load(path / g["file"], mmap_mode="r") for g in meta["groups"]}
            bands = resolve_bands(meta["bands"])
            digests = (meta["names_digest"], meta["index_digest"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"{path}: damaged packed store ({e!r})") from e
        shapes = {res: a.shape for res, a in arrays.items()}
        expected = {
            res: (len(names), len(gb), NATIVE_SIZE[gb[0]], NATIVE_SIZE[gb[0]])
            for res, gb in group_bands(bands).items()
        }
        if names_digest(names) != digests[0] or shapes != expected:
            raise StoreError(
                f"{path}: damaged packed store (names or array shapes {shapes} differ from {META_FILE})"
            )
        return cls(path, names, bands, digests[1], arrays)

    def __len__(self) -> int:
        return len(self.names)

    def rows(self, names: Sequence[str]) -> np.ndarray:
        """Row of each name; StoreError naming the first patch the store does not hold."""
        try:
            return np.fromiter((self._row[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as e:
            raise StoreError(f"{self.path}: patch {e.args[0]} is not in this packed store") from None

    def read_batch(
        self, indices: Sequence[int] | np.ndarray, resampling: str = "bicubic", normalised: bool = True
    ) -> torch.Tensor:
        """float32 (B, C, 120, 120) in band order: gather native rows, resample per group, normalise.

        `stack_bands` and `normalise` are the reader's own, applied to the whole batch at once (one
        resample call per band group), so every row equals `read_patch`'s tensor for that patch.
        """
        idx = np.asarray(indices, dtype=np.int64)
        if idx.ndim != 1:
            raise ValueError(f"read_batch expects a 1-d list of row indices, got shape {idx.shape}")
        native: dict[str, np.ndarray] = {}
        for res, arr in self.arrays.items():
            rows = arr[idx]
            native.update({band: rows[:, k] for k, band in enumerate(self._groups[res])})
        x = stack_bands(native, self.bands, resampling)
        return torch.from_numpy(normalise(x, self.bands) if normalised else x)


def _read_meta(path: Path) -> dict | None:
    try:
        meta = json.loads((path / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _mismatch(path: Path, names: Sequence[str], bands: Sequence[str], index_digest: str) -> list[str]:
    """Why the store at `path` cannot serve this request; empty when it can be reused as is."""
    if not path.exists():
        return ["no store yet"]
    meta = _read_meta(path)
    if meta is None:
        return [f"no readable {META_FILE}"]
    reasons = []
    if meta.get("format_version") != FORMAT_VERSION:
        reasons.append(f"format version {meta.get('format_version')} != {FORMAT_VERSION}")
    if meta.get("index_digest") != index_digest:
        reasons.append(f"index digest changed ({str(meta.get('index_digest'))[:12]} -> {index_digest[:12]})")
    if tuple(meta.get("bands", ())) != tuple(bands):
        reasons.append(f"bands changed ({','.join(meta.get('bands', ()))} -> {','.join(bands)})")
    if meta.get("names_digest") != names_digest(names):
        reasons.append(f"patch list changed ({meta.get('n_patches')} -> {len(names)} names, digest differs)")
    return reasons


def open_or_pack(
    archive_root: Path,
    names: Sequence[str],
    store_dir: Path,
    bands: str | Sequence[str],
    index_digest: str,
    workers: int | None = None,
) -> PackedStore:
    """Reuse the store at `store_dir` if it was packed from the same index, bands and names; else pack it.

    Never reuses silently on a difference: the log line says why a store is rebuilt.
    """
    bands, names = _check_request(names, bands, index_digest)
    store_dir = Path(store_dir)
    with _locked(store_dir):
        reasons = _mismatch(store_dir, names, bands, index_digest)
        if not reasons:
            try:
                store = PackedStore.open(store_dir)
            except StoreError as e:
                reasons = [str(e)]
            else:
                log.info("reusing packed store %s (%d patches, %s)", store_dir, len(store), ",".join(bands))
                return store
        return _pack_locked(Path(archive_root), names, store_dir, bands, index_digest, workers, reasons)


def pack(
    archive_root: Path,
    names: Sequence[str],
    store_dir: Path,
    bands: str | Sequence[str],
    index_digest: str,
    workers: int | None = None,
) -> PackedStore:
    """Read every patch of `names` once (in parallel processes) into a new store at `store_dir`.

    An existing store there is replaced only once the new one is complete.
    """
    bands, names = _check_request(names, bands, index_digest)
    store_dir = Path(store_dir)
    with _locked(store_dir):
        return _pack_locked(Path(archive_root), names, store_dir, bands, index_digest, workers, ["asked to"])


def _check_request(
    names: Sequence[str], bands: str | Sequence[str], index_digest: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    names = tuple(names)
    if not names:
        raise UserError("packed store: the patch list is empty")
    if len(set(names)) != len(names):
        raise UserError("packed store: the patch list names a patch twice (rows must be unique)")
    if not index_digest:
        raise UserError("packed store: index_digest is required (it decides when a store is stale)")
    return resolve_bands(bands), names


@contextlib.contextmanager
def _locked(store_dir: Path) -> Iterator[None]:
    """One packer per store at a time (e.g. several ranks of one job); others wait, then reuse its result."""
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


def _pack_locked(
    archive_root: Path,
    names: tuple[str, ...],
    store_dir: Path,
    bands: tuple[str, ...],
    index_digest: str,
    workers: int | None,
    reasons: list[str],
) -> PackedStore:
    if store_dir.exists() and _read_meta(store_dir) is None and any(store_dir.iterdir()):
        raise StoreError(
            f"store_dir {store_dir} exists, is not empty and is not a packed store; refusing to replace it"
        )
    if store_dir.exists():
        log.warning("rebuilding packed store %s: %s", store_dir, "; ".join(reasons))
    else:
        log.info("packing %d patches into %s", len(names), store_dir)
    partial = store_dir.with_name(f".{store_dir.name}.partial")
    if partial.exists():
        log.warning("removing %s left by an interrupted pack", partial)
        shutil.rmtree(partial)
    partial.mkdir()
    try:
        _write(archive_root, names, partial, bands, index_digest, workers, desc=store_dir.name)
        _swap_in(partial, store_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return PackedStore.open(store_dir)


def _write(
    archive_root: Path,
    names: tuple[str, ...],
    out: Path,
    bands: tuple[str, ...],
    index_digest: str,
    workers: int | None,
    desc: str,
) -> None:
    groups = group_bands(bands)
    meta_groups = []
    for res, gb in groups.items():
        shape = (len(names), len(gb), NATIVE_SIZE[gb[0]], NATIVE_SIZE[gb[0]])
        np.lib.format.open_memmap(out / _group_file(res), mode="w+", dtype=np.uint16, shape=shape).flush()
        meta_groups.append(
            {"resolution_m": res, "file": _group_file(res), "bands": list(gb), "shape": list(shape)}
        )

    workers = max(1, min(workers or os.cpu_count() or 1, len(names)))
    chunk = max(1, min(MAX_CHUNK, math.ceil(len(names) / (4 * workers))))
    chunks = [(start, names[start : start + chunk]) for start in range(0, len(names), chunk)]
    with tqdm(total=len(names), unit="patch", desc=f"packing {desc}", disable=None) as progress:
        if workers == 1:
            for start, part in chunks:
                progress.update(_pack_chunk(archive_root, part, start, out, bands))
        else:
            pool = ProcessPoolExecutor(max_workers=workers)
            try:
                futures = {
                    pool.submit(_pack_chunk, archive_root, part, start, out, bands) for start, part in chunks
                }
                while futures:
                    done, futures = wait(futures, return_when=FIRST_EXCEPTION)
                    for f in done:
                        progress.update(f.result())  # re-raises a worker's error
            finally:
                # On an error, drop the queued chunks instead of reading them for nothing.
                pool.shutdown(wait=True, cancel_futures=True)
    for g in meta_groups:
        _fsync(out / g["file"])

    (out / NAMES_FILE).write_text("\n".join(names) + "\n")
    meta = {
        "format_version": FORMAT_VERSION,
        "index_digest": index_digest,
        "bands": list(bands),
        "names_digest": names_digest(names),
        "n_patches": len(names),
        "groups": meta_groups,
        "archive_root": str(archive_root.resolve()),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    _fsync(out / NAMES_FILE)
    _fsync(out / META_FILE)


def _pack_chunk(
    archive_root: Path, names: tuple[str, ...], start: int, out: Path, bands: tuple[str, ...]
) -> int:
    """Read `names` into rows start.. of the open store files; runs in a worker process."""
    groups = group_bands(bands)
    arrays = {res: np.load(out / _group_file(res), mmap_mode="r+") for res in groups}
    for offset, name in enumerate(names):
        try:
            native = reader.read_native(reader.patch_dir(archive_root, name), bands)
        except reader.PatchError as e:
            # Re-raised as a one-argument error: PatchError's own arguments do not survive the
            # trip back from a worker process (it would surface as a BrokenProcessPool).
            raise PackError(f"packing {archive_root}: {e}") from None
        for res, gb in groups.items():
            for k, band in enumerate(gb):
                arrays[res][start + offset, k] = native[band]  # read_band checked size and dtype
    for a in arrays.values():
        a.flush()
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
    dir_fd = os.open(store_dir.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    shutil.rmtree(old, ignore_errors=True)
