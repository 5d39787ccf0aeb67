"""How a split keeps related patches apart: its kind, and the groups each kind keeps in one set.

Neighbouring patches look alike (same field, same acquisition), so a random patch-level split puts near
copies of test patches in train and flatters every model. The kinds:
- "random": patch-level, the study's own (kept for fidelity); no groups.
- "tile": a Sentinel-2 tile (index column `tile`, about 110 x 110 km) is never in two sets. Tiles
  overlap by about 10 km at their edges, so a block kind is the stricter geographic guarantee.
- "block-<n>km": square blocks of n km on the UTM grid of each patch's zone (columns `epsg`, `ulx`,
  `uly`: EPSG code and upper-left corner in metres), a block being the cell of the upper-left corner.
  Neighbours across a block edge or a UTM zone boundary can still fall in different sets: larger blocks
  make that rarer.
- "official": the archive's own train / validation / test parts (column `official_split`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError

OFFICIAL_COLUMN = "official_split"
OFFICIAL_PARTS = {"train": "train", "val": "validation", "test": "test", "test_natural": "test"}
BLOCK_COLUMNS = ("epsg", "ulx", "uly")
_KIND = re.compile(r"random|tile|official|block-([1-9][0-9]*)km")


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise UserError(f"kind {kind!r}: expected random, tile, block-<n>km (n a whole number of km) or official")
    return kind


def group_keys(index: pd.DataFrame, kind: str) -> np.ndarray | None:
    """The group of every index row under `kind` (None for random): a tile, block or official part."""
    if kind == "random":
        return None
    if kind == "official":
        return _column(index, OFFICIAL_COLUMN, kind).to_numpy(dtype=object)
    if kind == "tile":
        return _column(index, "tile", kind).astype(str).to_numpy()
    size_m = 1000 * int(_KIND.fullmatch(kind).group(1))
    epsg, ulx, uly = (_column(index, c, kind) for c in BLOCK_COLUMNS)
    cells = [epsg.astype("int64").astype(str),
             *(np.floor_divide(c.to_numpy(dtype=np.float64), size_m).astype(np.int64).astype(str) for c in (ulx, uly))]
    return (cells[0] + "/" + cells[1] + "/" + cells[2]).to_numpy()


def _column(index: pd.DataFrame, column: str, kind: str) -> pd.Series:
    if column not in index.columns:
        raise UserError(f"index has no column {column!r}, which a {kind} split needs")
    series = index[column]
    if kind != "official" and series.isna().any():
        raise UserError(f"index column {column!r} has {int(series.isna().sum())} missing values; a {kind} split "
                        f"needs it for every patch")
    return series


def assign_groups(groups: np.ndarray, pos: np.ndarray, ratios: Sequence[float], natural_share: float,
                  rng: np.random.Generator) -> np.ndarray:
    """The set of every patch ("train", "val", "test" or "test_natural") for a tile or block split, whole
    groups at a time.

    Groups (sorted, then put in a seeded random order) go first to the natural-prevalence set until it
    holds natural_share of the patches, if asked; the rest are cut by their running count of positives:
    a group goes to test while the positives before it are under r_test of the remaining positives, then
    to val under r_test + r_val, then to train. The sets thus hold about r_test / r_val / r_train of the
    positives, which decide the balanced sets' sizes."""
    names, inverse = np.unique(groups, return_inverse=True)
    group_pos = np.bincount(inverse, weights=pos.astype(np.float64), minlength=len(names))
    group_size = np.bincount(inverse, minlength=len(names)).astype(np.float64)
    order = rng.permutation(len(names))
    target = np.empty(len(names), dtype=object)
    natural = (np.cumsum(group_size[order]) - group_size[order]) < natural_share * len(groups)
    target[order[natural]] = "test_natural"
    rest = order[~natural]
    before = np.cumsum(group_pos[rest]) - group_pos[rest]
    total = group_pos[rest].sum()
    _, r_val, r_test = ratios
    target[rest] = np.where(before < r_test * total, "test", np.where(before < (r_test + r_val) * total, "val", "train"))
    return target[inverse]
