"""What training and evaluation read: the index, split sets and patch loaders named by parameters (a local
path or an artifact URI; `auto` is resolved before, in auto.py)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simclr_s2.bigearthnet.bands import ZSCORE
from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.errors import UserError
from simclr_s2.learning import distributed
from simclr_s2.learning.datasets import BatchLoader, make_loader
from simclr_s2.settings.context import Context
from simclr_s2.study.splits import NATURAL, SplitSet, load_manifest, load_sets
from simclr_s2.tracking.artifacts import Fetcher

SOURCE = "source.json"


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
    index: pd.DataFrame
    # every patch of the scheme's splits at every fraction: what one packed store holds, so every fraction
    # (they nest) and every set reads the same store, packed once
    pool: list[str]

    def set(self, name: str) -> SplitSet:
        """A set by name: train, val, test or test_natural (one line when the split has none)."""
        if name == NATURAL and self.natural is None:
            raise UserError(f"set: {self.folder / self.scheme} has no natural-prevalence test set; make the "
                            "splits with natural_test=true")
        return {"train": self.train, "val": self.val, "test": self.test, NATURAL: self.natural}[name]


def load_split_data(fetch: Fetcher, ref: str, scheme: str, fraction: int) -> SplitData:
    """Load and verify train/val (at `fraction`) and the shared test set; the index the splits were drawn
    from is found through the source.json create_splits wrote beside them."""
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
    sets = {name: splits.get(fraction, name) for name in ("train", "val", "test")}
    natural = splits.get(fraction, NATURAL) if manifest.natural_share is not None else None
    largest = max(manifest.fractions)
    pool = sorted({*sets["test"].names, *(natural.names if natural else []),
                         *(n for name in ("train", "val") for n in splits.get(largest, name).names)})
    return SplitData(ref, folder, scheme, fraction, Path(source["archive_root"]), digest, **sets,
                     kind=manifest.kind, natural=natural, index=index, pool=pool)


@dataclass(frozen=True)
class IndexData:
    frame: pd.DataFrame
    path: Path
    digest: str
    archive_root: Path


def read_index(fetch: Fetcher, ref: str) -> IndexData:
    path = fetch.path(ref, "index")
    return IndexData(load_index(path), path, index_digest(path), index_archive_root(path))


def store_path(ctx: Context, digest: str, bands: str, pool: list[str]) -> Path:
    """The packed store of the sorted patch list `pool` of the index `digest` with `bands` (as given to
    `loader`): where training packs it on first use, and where `fetch pack=...` streams it beforehand."""
    key = hashlib.sha256("\n".join([digest, bands, *pool]).encode()).hexdigest()[:16]
    return ctx.state_dir("packed") / key


def loader(ctx: Context, archive_root: Path, names: list[str], labels: np.ndarray | None, bands: str,
           batch_size: int, *, shuffle: bool, seed: int, digest: str, store_names: list[str] | None = None,
           pack: bool = True, scaling: str = ZSCORE) -> BatchLoader:
    """Batches from the packed store of `store_names` (default `names`), packed on first use; with
    `pack=False` (commands that write nothing) straight from the GeoTIFFs. Inputs come scaled as the
    model expects (`scaling`, bands.SCALINGS) and on the device training runs on."""
    pool = sorted(store_names or names)
    store = store_path(ctx, digest, bands, pool) if pack else None
    return make_loader(archive_root, names, labels, bands, batch_size=batch_size, shuffle=shuffle, seed=seed,
                       store_dir=store, index_digest=digest, store_names=pool, scaling=scaling,
                       device=distributed.device())
