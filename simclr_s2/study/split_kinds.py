"""How a split keeps related patches apart: its kind, and the groups each kind keeps in one set.

Neighbouring patches look alike (same field, same acquisition) and 82 % of v1 patches have a temporal
twin (the same footprint on another date), so a random patch-level split puts near copies of test patches
in train and flatters every model. Every kind's overlap (test patches near train, footprint.py) is
measured and recorded in its manifest. The kinds:
- "spatial" (the entry points' default) or "spatial-<n>km": square blocks of n km (SPATIAL_BLOCK_KM by
  default) as in "block", then a buffer: a patch near a patch of another set that takes precedence
  (evaluation sets before train) leaves the split (keep_apart), so no footprint, twin or neighbour is
  ever in two sets (0 overlap).
- "random": patch-level, the study's own (kept for fidelity); no groups, the most overlap.
- "tile": a Sentinel-2 tile (index column `tile`, about 110 x 110 km) is never in two sets. Tiles
  overlap by about 10 km at their edges, so patches at a tile edge can still be near another set's.
- "block-<n>km": square blocks of n km on the UTM grid of each patch's zone (columns `epsg`, `ulx`,
  `uly`: EPSG code and upper-left corner in metres), a block being the cell of the upper-left corner.
  Neighbours across a block edge can still fall in different sets: larger blocks make that rarer.
- "official": the archive's own train / validation / test parts (column `official_split`). v2's parts
  are geographic (each tile cut into rings: core test, then validation, outer train; on tile 33UUP no
  test patch has a train neighbour); v1's are not (99.6 % of its test patches have a train neighbour in
  the same image).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pandas as pd

from simclr_s2.errors import UserError
from simclr_s2.study import footprint

OFFICIAL_COLUMN = "official_split"
OFFICIAL_PARTS = {"train": "train", "val": "validation", "test": "test", "test_natural": "test"}
BLOCK_COLUMNS = ("epsg", "ulx", "uly")
SPATIAL_BLOCK_KM = 12  # 10 x 10 footprints: the buffer leaves out 4-6 % of the demo's patches
KINDS_HELP = ("random, spatial, spatial-<n>km, tile, block-<n>km (n a whole number of km), official, folds-<k> "
              "or folds-<k>-<n>km (k >= 2 spatial folds) or country (leave one country out)")
KIND_PATTERN = (r"random|tile|official|spatial|country|(?:block|spatial)-(?P<km>[1-9][0-9]*)km"
                r"|folds-(?P<k>[2-9]|[1-9][0-9]+)(?:-(?P<fold_km>[1-9][0-9]*)km)?")
_KIND = re.compile(KIND_PATTERN)
COUNTRY_SEP = "|"  # a country kind's group: <country>|<block>
# Who keeps a patch when two sets meet: the evaluation sets stay whole, train gives up its edge.
_PRECEDENCE = ("test_natural", "test", "val", "train")


def check_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise UserError(f"kind {kind!r}: expected {KINDS_HELP}")
    return kind


def is_spatial(kind: str) -> bool:
    """Whether `kind` promises that no footprint or neighbour is in two sets."""
    return kind.startswith("spatial") or is_cv(kind)


def is_cv(kind: str) -> bool:
    """Whether `kind` is one of several splits that each hold out one fold for test."""
    return kind == "country" or kind.startswith("folds-")


def fold_names(index: pd.DataFrame | None, kind: str) -> list[str]:
    """What each fold of a cross-validation kind holds out: "0" ... "k-1", or the index's countries in
    alphabetical order (every country of the index, so the numbering does not depend on the pool; only
    this kind reads `index`)."""
    if kind == "country":
        return sorted(_column(index, "country", kind).astype(str).unique())
    return [str(i) for i in range(int(_KIND.fullmatch(kind).group("k")))]


def group_keys(index: pd.DataFrame, kind: str) -> np.ndarray | None:
    """The group of every index row under `kind` (None for random): a tile, block or official part."""
    if kind == "random":
        return None
    if kind == "official":
        return _column(index, OFFICIAL_COLUMN, kind).to_numpy(dtype=object)
    if kind == "tile":
        return _column(index, "tile", kind).astype(str).to_numpy()
    size_m = 1000 * block_km(kind)
    epsg, ulx, uly = (_column(index, c, kind) for c in BLOCK_COLUMNS)
    cells = [epsg.astype("int64").astype(str),
             *(np.floor_divide(c.to_numpy(dtype=np.float64), size_m).astype(np.int64).astype(str) for c in (ulx, uly))]
    blocks = cells[0] + "/" + cells[1] + "/" + cells[2]
    if kind == "country":
        return (_column(index, "country", kind).astype(str) + COUNTRY_SEP + blocks).to_numpy()
    return blocks.to_numpy()


def block_km(kind: str) -> int | None:
    """The side in km of the square blocks a kind keeps apart (spatial, block, folds and country: a country's
    blocks), None for random, tile and official, which keep no blocks apart."""
    if kind in ("random", "tile", "official"):
        return None
    match = _KIND.fullmatch(kind)
    return int(match.group("km") or match.group("fold_km") or SPATIAL_BLOCK_KM)


def _column(index: pd.DataFrame, column: str, kind: str) -> pd.Series:
    if column not in index.columns:
        raise UserError(f"index has no column {column!r}, which a {kind} split needs")
    series = index[column]
    if kind != "official" and series.isna().any():
        lacking = index.loc[series.isna(), "name"]
        raise UserError(f"index column {column!r} has {len(lacking)} missing values (patches "
                        f"{', '.join(lacking.head(3))}{', ...' if len(lacking) > 3 else ''}); a {kind} split "
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
    names, inverse, group_pos, group_size = _group_totals(groups, pos)
    order = rng.permutation(len(names))
    target = np.empty(len(names), dtype=object)
    natural = (np.cumsum(group_size[order]) - group_size[order]) < natural_share * len(groups)
    target[order[natural]] = "test_natural"
    rest = order[~natural]
    before = np.cumsum(group_pos[rest]) - group_pos[rest]
    total = group_pos[rest].sum()
    _, r_val, r_test = ratios
    target[rest] = np.where(before < r_test * total, "test",
                            np.where(before < (r_test + r_val) * total, "val", "train"))
    return target[inverse]


def _group_totals(groups: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The distinct groups (sorted), each patch's group number, and each group's positives and patches."""
    names, inverse = np.unique(groups, return_inverse=True)
    group_pos = np.bincount(inverse, weights=pos.astype(np.float64), minlength=len(names))
    return names, inverse, group_pos, np.bincount(inverse, minlength=len(names)).astype(np.float64)


def balanced_folds(groups: np.ndarray, pos: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """The fold (0..k-1) of every patch, whole groups at a time, balanced by positives: groups in order of
    decreasing positives (ties in seeded order) each go to the fold with the fewest positives so far (then
    the fewest patches, then the lowest number). Greedy, so two folds' positives differ by at most the
    largest group's positives. Fewer groups holding positives than folds are refused: some fold's test
    set would hold none, and a cross-validation with such a fold is not one."""
    _, inverse, group_pos, group_size = _group_totals(groups, pos)
    if (holding := int((group_pos > 0).sum())) < k:
        raise UserError(f"kind folds-{k}: the pool has {holding} spatial groups holding positives, fewer than "
                        f"the {k} folds (each fold's test set needs one); use at most folds-{max(holding, 2)}")
    order = rng.permutation(len(group_pos))
    order = order[np.argsort(-group_pos[order], kind="stable")]
    fold_pos, fold_size = np.zeros(k), np.zeros(k)
    fold = np.empty(len(group_pos), dtype=np.int64)
    for g in order:
        f = int(np.lexsort((np.arange(k), fold_size, fold_pos))[0])
        fold[g], fold_pos[f], fold_size[f] = f, fold_pos[f] + group_pos[g], fold_size[f] + group_size[g]
    return fold[inverse]


def folds_of(kind: str, groups: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The fold of every patch under a cross-validation kind, as fold_names spells it: its country, or its
    balanced fold's number."""
    if kind == "country":
        return np.char.partition(groups.astype(str), COUNTRY_SEP)[:, 0]
    return balanced_folds(groups, pos, int(_KIND.fullmatch(kind).group("k")), rng).astype(str)


def assign_fold(groups: np.ndarray, pos: np.ndarray, folds: np.ndarray, fold: str, ratios: Sequence[float],
                natural_share: float, rng: np.random.Generator) -> np.ndarray:
    """The set of every patch of a cross-validation split (`folds`: every patch's fold, folds_of): the
    held-out `fold` is test (its first groups, in seeded order, the natural-prevalence set until it holds
    natural_share of all patches; a share that takes the whole fold is refused); the other folds' groups
    go to validation or train by their positives, in the ratio r_val : r_train."""
    target = np.empty(len(groups), dtype=object)
    held_out = folds == fold
    names, inverse, _, group_size = _group_totals(groups[held_out], pos[held_out])
    order = rng.permutation(len(names))
    natural = np.zeros(len(names), dtype=bool)
    natural[order] = (np.cumsum(group_size[order]) - group_size[order]) < natural_share * len(groups)
    if natural_share and natural.all():
        raise UserError(f"natural_share: {natural_share} of the pool takes all of fold {fold}, which holds "
                        f"{held_out.mean():.1%} of it, and leaves its test set empty; expected a share well "
                        "below the held-out fold's")
    target[held_out] = np.where(natural[inverse], "test_natural", "test")
    r_train, r_val, _ = ratios
    rest = (r_train / (r_train + r_val), r_val / (r_train + r_val), 0.0)
    target[~held_out] = assign_groups(groups[~held_out], pos[~held_out], rest, 0.0, rng)
    return target


def keep_apart(footprints: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Which patches stay in the set `target` gives them so that no two kept patches of different sets are
    near (footprint.near): going from test_natural to train, a patch near a kept patch of an earlier set
    leaves the split. Patches whose target is no set are kept as they are."""
    keep = np.ones(len(target), dtype=bool)
    for i, s in enumerate(_PRECEDENCE[1:], start=1):
        mine = target == s
        keep[mine] = ~footprint.near(footprints[mine], footprints[np.isin(target, _PRECEDENCE[:i]) & keep])
    return keep
