"""What training and evaluation read: the index, split sets and patch loaders named by parameters (a local
path or an artifact URI; `auto` is resolved before, in auto.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simclr_s2.bigearthnet.bands import ZSCORE, Bands, Resampling
from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.bigearthnet.packed import PackedStore, StoreError, packed_from, reused
from simclr_s2.bigearthnet.reader import patch_dir
from simclr_s2.errors import UserError
from simclr_s2.learning import distributed
from simclr_s2.learning.datasets import BatchLoader, PackedDataset, StoreRoundedPatchDataset, make_loader
from simclr_s2.settings.context import Context
from simclr_s2.study.splits import NATURAL, VAL_NATURAL, SplitManifest, SplitSet, load_manifest, load_sets
from simclr_s2.tracking.artifacts import Fetcher

SOURCE = "source.json"
RESAMPLING: Resampling = "bicubic"  # how the stages' stores resample the 20 m and 60 m bands (make_loader's default)


def fetcher(ctx: Context) -> Fetcher:
    """Downloads cached in the state folder, for the commands that may write there."""
    return Fetcher(ctx.state_dir("downloads"), ctx.tracking_uri)


@dataclass(frozen=True)
class SplitData:
    """The sets of one scheme and fraction, verified against the index they were drawn from."""

    ref: str
    folder: Path
    scheme: str
    fraction: int
    archive_root: Path
    index_digest: str
    train: SplitSet
    val: SplitSet
    test: SplitSet
    kind: str  # "random", "tile", "block-<n>km" or "official"
    natural: SplitSet | None  # the natural-prevalence test set, when the split has one
    # the largest fraction's training set: its images, never its labels, are what pretraining used too, so a
    # fraction's training may read them where it needs images only (a frozen encoder's BatchNorm statistics)
    widest_train: SplitSet
    index: pd.DataFrame
    # every patch of the scheme's splits at every fraction (natural validation sets too): what one packed
    # store holds, so every fraction (they nest) and every set reads the same store, packed once
    pool: list[str]
    label_rule: dict[str, str]  # the manifest's rule (min_fraction, ambiguous), {} where it records none

    def set(self, name: str) -> SplitSet:
        """A set by name: train, val, test or test_natural (one line when the split has none)."""
        if name == NATURAL and self.natural is None:
            raise UserError(f"set: {self.folder / self.scheme} has no natural-prevalence test set; make the "
                            "splits with natural_test=true")
        return {"train": self.train, "val": self.val, "test": self.test, NATURAL: self.natural}[name]


def load_split_data(fetch: Fetcher, ref: str, scheme: str, fraction: int,
                    fold: str | None = None) -> SplitData:
    """Load and verify train/val (at `fraction`) and the shared test set; the index the splits were drawn
    from is found through the source.json create_splits wrote beside them. `fold`: the fold a training
    says the split holds out (its parameter, which compare groups runs by), checked against the manifest."""
    folder = fetch.path(ref, "split")
    source_file = folder / scheme / SOURCE
    if not source_file.is_file():
        load_manifest(folder, scheme)  # names the schemes that do exist
        raise UserError(f"split: {source_file} is missing; make splits with the create_splits entry point")
    source = json.loads(source_file.read_text())
    index_path = fetch.path(source["index"], "index named by the split")
    digest = index_digest(index_path)
    if load_manifest(folder, scheme).index_digest != digest:
        raise UserError(f"split: {folder / scheme} was drawn from another index than {source['index']}")
    index = load_index(index_path)
    splits = load_sets(folder, scheme, index)
    manifest = splits.manifest
    if fold is not None:
        _check_fold(fold, manifest, folder / scheme)
    sets = {name: splits.get(fraction, name) for name in ("train", "val", "test")}
    natural = splits.get(fraction, NATURAL) if manifest.natural_share is not None else None
    largest = max(manifest.fractions)
    widest = {name: splits.get(largest, name)
              for name in (("train", "val", VAL_NATURAL) if manifest.natural_validation else ("train", "val"))}
    pool = sorted({*sets["test"].names, *(natural.names if natural else []),
                   *(n for widest_set in widest.values() for n in widest_set.names)})
    return SplitData(ref, folder, scheme, fraction, Path(source["archive_root"]), digest, **sets,
                     kind=manifest.kind, natural=natural, widest_train=widest["train"], index=index, pool=pool,
                     label_rule=manifest.rule or {})


def _check_fold(given: str, manifest: SplitManifest, where: Path) -> None:
    """One line when the `fold` parameter disagrees with the fold the split holds out (none: not a fold)."""
    held = "none" if manifest.fold is None else str(manifest.fold)
    if (given if given == "none" else str(int(given))) != held:
        what = (f"holds out fold {held} ({manifest.held_out})" if manifest.fold is not None
                else "is not a cross-validation fold")
        raise UserError(f"fold: the split {where} {what}, but fold={given} was given; expected fold={held}")


@dataclass(frozen=True)
class IndexData:
    frame: pd.DataFrame
    path: Path
    digest: str
    archive_root: Path


def read_index(fetch: Fetcher, ref: str) -> IndexData:
    path = fetch.path(ref, "index")
    return IndexData(load_index(path), path, index_digest(path), index_archive_root(path))


def store_path(ctx: Context, digest: str, bands: Bands, pool: list[str]) -> Path:
    """The packed store of the sorted patch list `pool` of the index `digest` with `bands`: where training
    packs it on first use, and where `fetch pack=...` streams it beforehand."""
    return ctx.state_dir("packed") / _store_key(digest, bands, pool)


def _store_key(digest: str, bands: Bands, pool: list[str]) -> str:
    return hashlib.sha256("\n".join([digest, bands.text, *pool]).encode()).hexdigest()[:16]


def _existing_store(ctx: Context, digest: str, bands: Bands, pool: list[str]) -> PackedStore | None:
    """A complete store packed as `loader` would pack `pool` (index, bands, resampling) that holds every patch
    of it: the one `store_path` names, else a larger one (the whole index's, which pretraining packs), so a
    split's patches are never packed twice. None otherwise. Looks only: creates no folder, takes no lock."""
    folder = ctx.home / "packed"
    exact = folder / _store_key(digest, bands, pool)
    for path in [exact, *sorted(p for p in folder.glob("*") if p != exact)] if folder.is_dir() else []:
        if packed_from(path) != (digest, tuple(bands), RESAMPLING):
            continue  # another index's, bands' or resampling's store: its names are not read
        try:
            store = PackedStore.open(path)
            store.rows(pool)  # StoreError when it lacks one
            return store
        except StoreError:
            continue
    return None


def loader(ctx: Context, archive_root: Path, names: list[str], labels: np.ndarray | None, bands: Bands,
           batch_size: int, *, shuffle: bool, seed: int, digest: str, store_names: list[str] | None = None,
           pack: bool = True, scaling: str = ZSCORE) -> BatchLoader:
    """Batches from a store that holds `store_names` (default `names`): theirs, else a larger one (see
    `_existing_store`), else theirs packed on first use. With
    `pack=False` (commands that write nothing) that store when it is there (e.g. streamed by `fetch`, with
    no GeoTIFFs extracted), else the GeoTIFFs rounded as a store holds them: the same inputs either way.
    Inputs come scaled as the model expects (`scaling`, bands.SCALINGS) and on the device training runs on."""
    pool = sorted(store_names or names)
    store = _existing_store(ctx, digest, bands, pool)
    if store is None and pack:
        return make_loader(archive_root, names, labels, bands, RESAMPLING, batch_size=batch_size,
                           shuffle=shuffle, seed=seed, store_dir=store_path(ctx, digest, bands, pool),
                           index_digest=digest, store_names=pool, scaling=scaling,
                           device=distributed.device())
    if store is not None:
        reused(store)
    elif not patch_dir(archive_root, names[0]).is_dir():
        raise UserError(f"split: no packed store of its patches in bands {bands.text} under {ctx.home / 'packed'} "
                        f"and no GeoTIFFs in {archive_root}; make the store (fetch pack=splits bands=...) or "
                        "extract the archive (fetch extract=true)")
    source = (PackedDataset(store, labels, store.rows(names), scaling) if store is not None
              else StoreRoundedPatchDataset(archive_root, names, labels, bands, RESAMPLING, scaling))
    return BatchLoader(source, batch_size, shuffle, seed, device=distributed.device())
