"""Balanced, nested data-fraction splits of one labelling scheme (STUDY.md, "Splits").

Every later number is measured on these files, so they are exact, reproducible and checked:
the same index, parameters and seed give byte-identical files, and every rule below is verified
when the files are written and again every time one is loaded.

Algorithm of the default kind, "random" (the study's), for P eligible positives and N negatives:

1. The pool is the index less the snow and cloud/shadow patches (unless kept), less patches whose
   label is unknown (<NA> in a caller's labels: ambiguous under the scheme) and, when asked, less
   every patch outside the chosen official split; it is sorted by name so the result does not
   depend on the index's row order.
2. k = min(P, N): the smaller class is taken whole (the positives, in BigEarthNet) and a seeded
   sample of k patches is drawn from the other; both are shuffled (numpy PCG64(seed)).
3. Rounding rule, n = 2k: n_val = round_half_up(r_val * n), n_test = round_half_up(r_test * n),
   n_train = n - n_val - n_test. Each set holds floor(size / 2) positives; when two sets have
   odd sizes, a seeded coin gives one of them the extra positive and the other the extra negative.
4. Within each set the patches are interleaved pairwise, one positive and one negative per pair
   in a seeded order, the odd patch (if any) last, so every prefix is balanced within one patch.
5. Fraction f of train (and of val) is its first max(2, floor(f * size / 100)) patches (capped
   at the set's size): fractions nest, and even the smallest holds both classes.
   One test set serves every fraction.

The full archive, `basic` scheme, no exclusions: k = 13,589, n = 27,178 -> 19,024 / 4,077 / 4,077,
and 190 / 40 train / val patches at 1 %.

Grouped kinds (split_kinds.py) keep every tile, block or official part in one set: "spatial", "tile"
and "block-<n>km" assign whole groups to sets by their positives (split_kinds.assign_groups), "official"
takes the archive's own parts (ratios do not apply); "spatial" then leaves out every patch near a patch
of another set (split_kinds.keep_apart: the buffer, counted in the manifest's pool). Each set is then
balanced inside itself: all its positives and a seeded sample of as many negatives (or the reverse),
interleaved as in step 4, so set sizes follow the groups rather than the rounding rule. Steps 1, 4 and 5
hold for every kind.

Cross-validation kinds, "folds-<k>" and "country", are k splits of one index and seed, one per `fold`:
the fold's blocks (or country) are test, the other folds' blocks go to val and train by their positives,
and the spatial buffer applies. The manifest records `fold` and `held_out` (the fold's number or country;
both null for other kinds and in manifests written before folds).

Overlap, for every kind: how many patches of val, test and test_natural are near (footprint.py: the same
footprint on any date, or one of its 8 neighbours) a patch of the whole train set, recorded in the
manifest (`overlap`; null when the index has no footprints) and logged by create_splits as
footprint_overlap_<set>. A random split logs a warning with it.

Natural-prevalence test set (natural_test=True): drawn before anything else, so no other set holds
its patches and the balanced sets are drawn from what is left. "random": a seeded sample of
round_half_up(natural_share * pool) patches stratified to the pool's prevalence (the count of
positives rounded half up); "official": the same inside the official test part; "spatial", "tile"
and "block": whole groups, in seeded order, until natural_share of the pool is reached, so its
prevalence is the pool's up to the groups' granularity (recorded in the manifest). It is written
in name order and is not balanced.

Natural-prevalence validation sets (with natural_test): val_natural_<fff>pct.csv, where a decision
threshold is chosen for the real prevalence (a threshold chosen on balanced validation is far too low
at 2 %). Drawn from val's ground: the patches of val's groups (every patch for random) in no other set
and, for a spatial kind, near none; seeded by (seed, 1) apart from the rest, so the other files do not
change. As many patches as val at the largest fraction (the ground allowing), the pool's prevalence
rounded half up, ordered so that every prefix keeps that prevalence within one patch; fraction f's
file is the first len(val_<fff>pct.csv) of them: as many labels as the fraction's balanced val, so a run
using both reads up to twice that (docs/study.md). It may share patches with val (both are validation)
and is checked as part of val.

Files, under <out_dir>/<scheme>/: train_<fff>pct.csv and val_<fff>pct.csv per fraction (fff zero
padded), test.csv, test_natural.csv when asked, with lines `name,label` (label 0 or 1, "\\n" line
ends), and manifest.json (sorted keys, no timestamps) with the parameters, the kind, counts,
positives, overlap and sha256 of every file. Manifests whose labels came from the column positive_<scheme>
(the presence column's name before it became present_<scheme>) are read as present_<scheme>'s. Format 1
manifests (before kinds) load as "random" splits,
format 1 and 2 manifests (before footprints) with an unknown overlap.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from simclr_s2.bigearthnet.nomenclature import PRESENT, resolve_scheme
from simclr_s2.errors import UserError
from simclr_s2.study import footprint
from simclr_s2.study.split_kinds import (
    OFFICIAL_COLUMN,
    OFFICIAL_PARTS,
    assign_fold,
    assign_groups,
    check_kind,
    fold_names,
    folds_of,
    group_keys,
    is_cv,
    is_spatial,
    keep_apart,
)

log = logging.getLogger(__name__)

SETS = ("train", "val", "test")
NATURAL = "test_natural"  # the optional natural-prevalence test set
VAL_NATURAL = "val_natural"  # per fraction, with the natural test set: where thresholds are chosen
ALL_SETS = (*SETS, NATURAL)
OFFICIAL_SPLITS = ("train", "validation", "test")
DEFAULT_FRACTIONS = (1, 3, 10, 25, 50, 100)
DEFAULT_RATIOS = (0.70, 0.15, 0.15)
DEFAULT_NATURAL_SHARE = 0.02  # of the pool: ~11,800 patches and ~270 basic positives on the v1 archive
MANIFEST = "manifest.json"
OVERLAP_METRIC = "footprint_overlap"  # create_splits logs footprint_overlap_<set>: the share near train
FORMAT = 3
HEADER = "name,label"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_]+")
_SCHEME_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")  # "custom-1a2b3c4d" for a custom scheme
_SHOWN = 5


class SplitError(UserError):
    """A split file or manifest breaks a rule (tampered, stale, inconsistent): never train on it."""


@dataclass(frozen=True)
class SplitFile:
    """One written file: enough to recheck it byte for byte and to report its class balance."""

    set_name: str
    fraction: int | None  # None for test.csv and test_natural.csv, shared by every fraction
    count: int
    positives: int
    sha256: str


@dataclass(frozen=True)
class SplitManifest:
    """What manifest.json records: the creation parameters, the pool and every file's digest."""

    scheme: str
    classes: tuple[str, ...]
    positives_source: str  # "column present_<scheme>" (older: positive_<scheme>), or the caller's label rule
    seed: int
    fractions: tuple[int, ...]
    ratios: tuple[float, float, float] | None  # None for an official split, whose parts fix the sizes
    exclude_snow_cloud: bool
    official_split: str | None
    index_digest: str
    numpy_version: str  # the seeded sampling is reproducible for a given numpy version
    pool: dict[str, int]
    sizes: dict[str, int]
    files: dict[str, SplitFile]
    kind: str  # "spatial[-<n>km]", "random", "tile", "block-<n>km" or "official" (split_kinds.py)
    natural_share: float | None  # share of the pool drawn for test_natural.csv; None when not written
    groups: dict[str, int]  # tiles, blocks or parts per set for a grouped kind; empty for random
    overlap: dict[str, int] | None  # patches of val, test(_natural) near train; None: no footprints known
    fold: int | None = None  # a cross-validation kind's held-out fold (absent before folds: None)
    held_out: str | None = None  # what that fold is: its number, or its country
    natural_validation: bool = False  # val_natural_<fff>pct.csv written (absent before them: False)
    # the label rule's parameters (min_fraction, ambiguous) of labels by area; None for labels by presence
    # (v1.0) and in manifests written before they were recorded: compare reads None as the default rule
    rule: dict[str, str] | None = None
    format: int = FORMAT

    def overlap_shares(self) -> dict[str, float]:
        """Share of each evaluation set's patches near train: what create_splits logs."""
        return {s: n / self.sizes[s] for s, n in (self.overlap or {}).items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, source: Path) -> SplitManifest:
        try:
            raw = json.loads(text)
            version = raw["format"]
            if version not in range(1, FORMAT + 1):
                raise SplitError(f"{source}: manifest format {version!r}, expected 1 to {FORMAT}; make the "
                                 f"splits again with this version")
            if version == 1:  # written before split kinds: a random split
                raw.update(kind="random", natural_share=None, groups={})
            if version < 3:  # written before footprints: the overlap was never measured
                raw.update(overlap=None, format=FORMAT)
            raw["files"] = {name: SplitFile(**entry) for name, entry in raw["files"].items()}
            for key in ("classes", "fractions", "ratios"):
                raw[key] = None if raw[key] is None else tuple(raw[key])
            return cls(**raw)
        except SplitError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SplitError(f"{source}: not a valid split manifest ({exc})") from None


@dataclass(frozen=True)
class SplitSet:
    """One loaded, verified set: names and 0/1 labels in file order, and the file's sha256."""

    names: list[str]
    labels: np.ndarray  # int64, 1 = positive
    digest: str
    path: Path


def file_name(set_name: str, fraction: int) -> str:
    """File of a set at a fraction; the test files are the same for every fraction."""
    return f"{set_name}.csv" if set_name in ("test", NATURAL) else f"{set_name}_{fraction:03d}pct.csv"


def split_sizes(n: int, ratios: Sequence[float] = DEFAULT_RATIOS) -> tuple[int, int, int]:
    """(train, val, test) sizes of n patches: val and test rounded half up, train takes the rest.

    The ratios are read as the decimals they print as, so 0.15 * 27,178 = 4,076.7 rounds to
    4,077 exactly, free of binary floating-point noise.
    """
    n_val, n_test = (_round_half_up(r, n) for r in ratios[1:])
    return n - n_val - n_test, n_val, n_test


def _round_half_up(share: float, n: int) -> int:
    return math.floor(Fraction(repr(float(share))) * n + Fraction(1, 2))


def fraction_size(n_set: int, fraction: int) -> int:
    """Patches of a set in a fraction: floor(fraction % of it), at least 2 so both classes appear."""
    return min(n_set, max(2, n_set * fraction // 100))


def create_splits(
    index: pd.DataFrame,
    scheme: str,
    out_dir: Path,
    fractions: Sequence[int] = DEFAULT_FRACTIONS,
    seed: int = 0,
    exclude_snow_cloud: bool = True,
    official_split: str | None = None,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    index_digest: str = "",
    positives: pd.Series | None = None,
    classes: Sequence[str] = (),
    *,
    kind: str = "random",
    natural_test: bool = False,
    natural_share: float = DEFAULT_NATURAL_SHARE,
    label_rule: str = "caller",
    fold: int = 0,
    rule: Mapping[str, str] | None = None,
) -> SplitManifest:
    """Write the balanced, nested splits of one scheme under out_dir/scheme (see the module doc).

    positives: the labels of a custom scheme, a Series aligned with `index`: bool, or pandas' nullable
    "boolean" where <NA> marks a patch that is not eligible (ambiguous); None reads the column
    present_<scheme> (label presence, v1.0's rule). label_rule: how the caller's labels were made, recorded
    in the manifest as their source; rule: the parameters of that rule (min_fraction, ambiguous) as
    compare groups runs by them, for labels by area. classes: the scheme's class names, recorded in the manifest only.
    official_split: "train", "validation", "test" or a "+" join such as "train+validation" keeps only
    those patches of the BigEarthNet authors' split (not with kind "official", which uses all three).
    kind: "random", "spatial[-<n>km]", "tile", "block-<n>km" or "official" (split_kinds.py; the entry
    point's default is "spatial", this library's the study's "random"). natural_test: also write
    test_natural.csv at the pool's prevalence, natural_share of the pool. fold: the fold a cross-validation
    kind ("folds-<k>", "country") holds out for test, 0 to fold count - 1. Files of an earlier call that
    the new manifest does not list are removed, so the folder always matches its manifest.
    """
    _check_scheme(scheme)
    fractions = _check_fractions(fractions)
    ratios = _check_ratios(ratios)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise UserError(f"seed: expected an integer >= 0, got {seed!r}")
    official = check_options(kind, official_split, natural_test, natural_share, fold)
    _check_unique_names(index)
    held_out = _held_out(index, kind, fold)

    pos, known, source = _labels(index, scheme, positives)
    parts = OFFICIAL_SPLITS if kind == "official" else official
    keep, pool = _pool_mask(index, exclude_snow_cloud, parts)
    if parts and not keep.any() and pool["outside_official_split"]:
        raise UserError(_outside_official(index, kind, parts, pool["outside_official_split"]))
    pool["ambiguous_labels"] = int((keep & ~known).sum())
    keep &= known
    pool["eligible"] = int(keep.sum())
    groups, prints = group_keys(index, kind), _footprints(index, kind)
    order = np.argsort(index["name"].to_numpy(dtype=str)[keep], kind="stable")
    names = index["name"].to_numpy(dtype=str)[keep][order]
    pos = pos[keep][order]
    groups = None if groups is None else groups[keep][order]
    prints = None if prints is None else prints[keep][order]
    pool.update(positives=int(pos.sum()), negatives=int((~pos).sum()))

    rng = np.random.Generator(np.random.PCG64(int(seed)))
    share = natural_share if natural_test else 0.0
    sets, buffer = _draw_kind(kind, names, pos, groups, prints, ratios, share, rng, scheme, held_out)
    if is_spatial(kind):
        pool["buffer"] = buffer
    if natural_test:
        sets[VAL_NATURAL] = _natural_validation(names, pos, sets, groups, prints, kind, int(seed))
    files: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    keys: dict[str, tuple[str, int | None]] = {}
    for s in ("train", "val", VAL_NATURAL) if natural_test else ("train", "val"):
        set_names, labels = sets[s]
        for f in fractions:  # val_natural holds as many patches as val at each fraction
            size = min(len(set_names), fraction_size(len(sets["val" if s == VAL_NATURAL else s][0]), f))
            files[file_name(s, f)], keys[file_name(s, f)] = (set_names[:size], labels[:size]), (s, f)
    for s in ("test", NATURAL):
        if s in sets:
            files[file_name(s, 0)], keys[file_name(s, 0)] = sets[s], (s, None)
    _verify(files, fractions, _Reference(pd.Index(names), pos, groups, kind, prints if is_spatial(kind) else None))
    overlap = None if prints is None else _overlap(sets, names, prints)

    scheme_dir = Path(out_dir) / scheme
    scheme_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, (set_names, labels) in files.items():
        data = _csv_bytes(set_names, labels)
        (scheme_dir / name).write_bytes(data)
        entries[name] = SplitFile(
            set_name=keys[name][0],
            fraction=keys[name][1],
            count=len(set_names),
            positives=int(labels.sum()),
            sha256=hashlib.sha256(data).hexdigest(),
        )
    for stale in _split_files(scheme_dir):
        if stale.name not in entries:
            stale.unlink()
    manifest = SplitManifest(
        scheme=scheme,
        classes=tuple(classes),
        positives_source=label_rule if positives is not None else source,
        seed=int(seed),
        fractions=fractions,
        ratios=None if kind == "official" else ratios,
        exclude_snow_cloud=bool(exclude_snow_cloud),
        official_split="+".join(official) if official else None,
        index_digest=index_digest,
        numpy_version=np.__version__,
        pool=pool,
        sizes={s: len(sets[s][0]) for s in (*ALL_SETS, VAL_NATURAL) if s in sets},
        files=dict(sorted(entries.items())),
        kind=kind,
        natural_share=float(natural_share) if natural_test else None,
        groups=_group_counts(names, groups, sets),
        overlap=overlap,
        fold=int(fold) if held_out is not None else None,
        held_out=held_out,
        natural_validation=natural_test,
        rule=None if rule is None else dict(rule),
    )
    (scheme_dir / MANIFEST).write_text(manifest.to_json(), encoding="utf-8")
    log.info("splits %s (%s): %s in %s, overlap %s", scheme, kind, manifest.sizes, scheme_dir, overlap)
    if kind == "random":
        share = manifest.overlap_shares().get("test")
        log.warning("kind random assigns patches one by one, so the same ground (another date, a neighbour) "
                    "lands in train and test: %s of the test patches are near train; kind spatial keeps "
                    "them apart", "an unmeasured share" if share is None else f"{share:.1%}")
    return manifest


def check_options(kind: str, official_split: str | None, natural_test: bool, natural_share: float,
                  fold: int) -> tuple[str, ...]:
    """The checks of create_splits' options that need no index, so its entry point asks them before anything
    is read or a run opened (a country fold's range waits for the index's countries). Returns the official
    parts kept."""
    official = _parse_official(official_split)
    kind = check_kind(kind)
    if kind == "official" and official:
        raise UserError(f"official_split {official_split!r}: a kind 'official' split uses all three parts; "
                        f"leave official_split unset")
    if natural_test and not 0 < natural_share < 1:
        raise UserError(f"natural_share: expected a share of the pool between 0 and 1, got {natural_share!r}")
    if not is_cv(kind) and fold != 0:
        raise UserError(f"fold {fold!r}: kind {kind} has no folds; use folds-<k> or country, or fold 0")
    if is_cv(kind) and kind != "country":
        _check_fold(kind, fold, fold_names(None, kind))
    return official


def _held_out(index: pd.DataFrame, kind: str, fold: int) -> str | None:
    """What fold `fold` of a cross-validation kind holds out (split_kinds.fold_names); None for other kinds,
    which have fold 0 only (check_options)."""
    if not is_cv(kind):
        return None
    names = fold_names(index, kind)
    _check_fold(kind, fold, names)
    return names[fold]


def _check_fold(kind: str, fold: int, names: list[str]) -> None:
    if isinstance(fold, bool) or not isinstance(fold, (int, np.integer)) or not 0 <= fold < len(names):
        raise UserError(f"fold {fold!r}: kind {kind} has folds 0 to {len(names) - 1}"
                        + (f" ({', '.join(names)})" if kind == "country" else ""))


def _natural_validation(names: np.ndarray, pos: np.ndarray, sets: _Sets, groups: np.ndarray | None,
                        prints: np.ndarray | None, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The natural-prevalence validation list (module doc): names and labels, prevalence-stratified order."""
    at = pd.Index(names)
    taken = np.zeros(len(names), dtype=bool)
    for s in ("train", "test", NATURAL):
        if s in sets:
            taken[at.get_indexer(sets[s][0])] = True
    val = at.get_indexer(sets["val"][0])
    ground = ~taken if groups is None else ~taken & np.isin(groups, groups[val])
    if prints is not None and is_spatial(kind):
        ground &= ~footprint.near(prints, prints[taken])
    n = min(len(val), int(ground.sum()))
    n_pos = min(math.floor(Fraction(n * int(pos.sum()), max(len(pos), 1)) + Fraction(1, 2)), int((ground & pos).sum()))
    n_pos = max(n_pos, n - int((ground & ~pos).sum()))
    rng = np.random.Generator(np.random.PCG64([seed, 1]))
    chosen_pos = rng.permutation(names[ground & pos])[:n_pos]
    chosen_neg = rng.permutation(names[ground & ~pos])[:n - n_pos]
    rank = np.r_[(np.arange(n_pos) + 0.5) / max(n_pos, 1), (np.arange(n - n_pos) + 0.5) / max(n - n_pos, 1)]
    order = np.argsort(rank, kind="stable")
    labels = np.r_[np.ones(n_pos, np.int64), np.zeros(n - n_pos, np.int64)]
    return np.r_[chosen_pos, chosen_neg][order], labels[order]


def _footprints(index: pd.DataFrame, kind: str) -> np.ndarray | None:
    """Every row's footprint; None when the index lacks some (an index made before footprints, a synthetic
    one), which a spatial kind refuses."""
    columns = list(footprint.COLUMNS)
    known = set(columns) <= set(index.columns) and not index[columns].isna().to_numpy().any()
    return footprint.of(index) if known or is_spatial(kind) else None


def _overlap(sets: _Sets, names: np.ndarray, prints: np.ndarray) -> dict[str, int]:
    """Patches of each evaluation set near a patch of the whole train set (footprint.near)."""
    at = pd.Index(names)
    train = prints[at.get_indexer(sets["train"][0])]
    return {s: int(footprint.near(prints[at.get_indexer(sets[s][0])], train).sum())
            for s in ("val", "test", NATURAL) if s in sets}


def load_manifest(split_dir: Path, scheme: str) -> SplitManifest:
    """The manifest of a scheme's splits (not yet checked against its files: load_split does that)."""
    if problem := scheme_folder_problem(scheme):
        raise UserError(f"scheme: {problem}")
    _check_scheme(scheme)
    path = Path(split_dir) / scheme / MANIFEST
    if not path.is_file():
        found = sorted(p.parent.name for p in Path(split_dir).glob(f"*/{MANIFEST}"))
        raise UserError(f"split: no splits for scheme {scheme!r} in {split_dir}: found schemes {found}")
    return SplitManifest.from_json(path.read_text(encoding="utf-8"), path)


def load_split(
    split_dir: Path,
    scheme: str,
    fraction: int,
    set_name: str,
    index: pd.DataFrame | None = None,
    positives: pd.Series | None = None,
) -> SplitSet:
    """Load one set after checking every file of the scheme against its manifest and the rules (see
    `load_sets`). set_name: one of ALL_SETS; "test_natural" only where the splits were made with
    natural_test.
    """
    return load_sets(split_dir, scheme, index, positives).get(fraction, set_name)


@dataclass(frozen=True)
class SchemeSplits:
    """Every set of one scheme's splits, read and checked once, by file name."""

    folder: Path
    manifest: SplitManifest
    sets: dict[str, SplitSet]

    def get(self, fraction: int, set_name: str) -> SplitSet:
        """The set `set_name` at `fraction` (one line when the splits have no such set)."""
        scheme = self.folder.name
        if set_name not in (*ALL_SETS, VAL_NATURAL):
            raise UserError(f"set {set_name!r}: expected one of {list(ALL_SETS)}")
        if fraction not in self.manifest.fractions:
            raise UserError(
                f"fraction {fraction!r} not in the {scheme!r} splits: found {list(self.manifest.fractions)}"
            )
        if set_name == NATURAL and self.manifest.natural_share is None:
            raise UserError(f"set {NATURAL!r}: the {scheme!r} splits in {self.folder.parent} have no "
                            "natural-prevalence test set; make them with natural_test")
        if set_name == VAL_NATURAL and not self.manifest.natural_validation:
            raise UserError(f"set {VAL_NATURAL!r}: the {scheme!r} splits in {self.folder.parent} have no "
                            "natural-prevalence validation sets; make them again with natural_test")
        return self.sets[file_name(set_name, fraction)]


def load_sets(split_dir: Path, scheme: str, index: pd.DataFrame | None = None,
              positives: pd.Series | None = None) -> SchemeSplits:
    """Every set of the scheme, after checking every file against its manifest and the rules.

    With `index`, also checks that every name is in it, still eligible under the manifest's
    exclusions, official split and kind (no tile, block or part in two sets; official sets inside
    their own part), and carries the index's label (a column scheme) or the label in `positives`
    (a caller's scheme: the same Series as given to create_splits; <NA> = not eligible).
    """
    manifest = load_manifest(split_dir, scheme)
    scheme_dir = Path(split_dir) / scheme
    files, digests = _read_files(scheme_dir, manifest)
    _verify(files, manifest.fractions, None if index is None else _reference(index, manifest, positives))
    sets = {name: SplitSet(names=names.tolist(), labels=labels, digest=digests[name], path=scheme_dir / name)
            for name, (names, labels) in files.items()}
    return SchemeSplits(scheme_dir, manifest, sets)


_Sets = dict[str, tuple[np.ndarray, np.ndarray]]


def _draw_kind(kind: str, names: np.ndarray, pos: np.ndarray, groups: np.ndarray | None, prints: np.ndarray | None,
               ratios: tuple[float, ...], share: float, rng: np.random.Generator, scheme: str,
               held_out: str | None) -> tuple[_Sets, int]:
    """The sets of one kind (module doc): the natural-prevalence set first when share > 0, then the
    balanced sets from the patches left; and how many patches a spatial kind's buffer left out.
    held_out: the fold a cross-validation kind tests on."""
    buffer = 0
    if kind == "random":
        natural = _natural_sample(pos, np.ones(len(names), dtype=bool), share, rng)
        sets = _draw(names[~natural], pos[~natural], ratios, rng, scheme)
    elif kind == "official":
        natural = _natural_sample(pos, groups == "test", share, rng)
        own_set = {part: s for s, part in OFFICIAL_PARTS.items() if s in SETS}
        target = np.where(natural, NATURAL, [own_set[part] for part in groups])
        sets = _balanced_sets(names, pos, target, rng, kind, scheme)
    else:
        if is_cv(kind):
            target = assign_fold(groups, pos, folds_of(kind, groups, pos, rng), held_out, ratios, share, rng)
        else:
            target = assign_groups(groups, pos, ratios, share, rng)
        if is_spatial(kind):
            apart = keep_apart(prints, target)
            target, buffer = np.where(apart, target, None), int((~apart).sum())
        natural = target == NATURAL
        sets = _balanced_sets(names, pos, target, rng, kind, scheme)
    if share:
        sets[NATURAL] = (names[natural], pos[natural].astype(np.int64))
    return sets, buffer


def _natural_sample(pos: np.ndarray, among: np.ndarray, share: float, rng: np.random.Generator) -> np.ndarray:
    """Mask of a seeded sample of round_half_up(share * m) of the m patches `among`, holding the count
    of positives their prevalence gives (rounded half up); nothing drawn when share is 0."""
    chosen = np.zeros(len(pos), dtype=bool)
    if not share:
        return chosen
    pos_at, neg_at = np.flatnonzero(among & pos), np.flatnonzero(among & ~pos)
    n = _round_half_up(share, len(pos_at) + len(neg_at))
    n_pos = math.floor(Fraction(n * len(pos_at), max(len(pos_at) + len(neg_at), 1)) + Fraction(1, 2))
    chosen[rng.choice(pos_at, size=n_pos, replace=False)] = True
    chosen[rng.choice(neg_at, size=n - n_pos, replace=False)] = True
    return chosen


def _balanced_sets(names: np.ndarray, pos: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                   kind: str, scheme: str) -> _Sets:
    """Each of SETS balanced inside its own patches (`target` names the set of each patch): all of its
    smaller class and a seeded sample of as many of the other, interleaved."""
    sets = {}
    for s in SETS:
        inside = target == s
        pos_names, neg_names = names[inside & pos], names[inside & ~pos]
        k = min(len(pos_names), len(neg_names))
        if k == 0:
            raise UserError(f"scheme {scheme!r}, kind {kind}: the {s} set gets {len(pos_names)} positives and "
                            f"{len(neg_names)} negatives; every set needs both (try smaller groups or random)")
        pos_names = pos_names[rng.choice(len(pos_names), size=k, replace=False)]
        neg_names = neg_names[rng.choice(len(neg_names), size=k, replace=False)]
        sets[s] = _interleave(pos_names, neg_names, rng)
    return sets


def _group_counts(names: np.ndarray, groups: np.ndarray | None, sets: _Sets) -> dict[str, int]:
    if groups is None:
        return {}
    at = pd.Index(names)
    return {s: len(set(groups[at.get_indexer(sets[s][0])])) for s in ALL_SETS if s in sets}


def _draw(
    names: np.ndarray, pos: np.ndarray, ratios: tuple[float, ...], rng: np.random.Generator, scheme: str
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Balanced sample, cut into train/val/test, each interleaved pairwise (steps 2-4 of the module doc)."""
    pos_names, neg_names = names[pos], names[~pos]
    k = min(len(pos_names), len(neg_names))
    sizes = split_sizes(2 * k, ratios)
    if min(sizes) < 2:
        raise UserError(
            f"scheme {scheme!r}: {len(pos_names)} positives and {len(neg_names)} negatives eligible give "
            f"train/val/test sizes {sizes}; every set needs at least 2 patches"
        )
    # choice(size=len(population)) is a full shuffle, so both classes take one code path.
    pos_names = pos_names[rng.choice(len(pos_names), size=k, replace=False)]
    neg_names = neg_names[rng.choice(len(neg_names), size=k, replace=False)]
    n_pos = [size // 2 for size in sizes]
    odd = [i for i, size in enumerate(sizes) if size % 2]
    if odd:  # two odd sizes, since they add up to an even n
        n_pos[odd[int(rng.integers(2))]] += 1
    n_neg = [size - p for size, p in zip(sizes, n_pos, strict=True)]
    pos_parts = np.split(pos_names, np.cumsum(n_pos)[:-1])
    neg_parts = np.split(neg_names, np.cumsum(n_neg)[:-1])
    return {s: _interleave(p, q, rng) for s, p, q in zip(SETS, pos_parts, neg_parts, strict=True)}


def _interleave(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One positive and one negative per pair, in seeded order, the odd patch last: prefixes stay balanced."""
    m = min(len(pos), len(neg))
    pairs = np.stack([pos[:m], neg[:m]], axis=1)
    labels = np.tile(np.array([1, 0], dtype=np.int64), (m, 1))
    flip = rng.integers(0, 2, size=m).astype(bool)
    pairs[flip] = pairs[flip, ::-1]
    labels[flip] = labels[flip, ::-1]
    names = np.concatenate([pairs.ravel(), pos[m:], neg[m:]])
    tail = np.concatenate([np.ones(len(pos) - m, np.int64), np.zeros(len(neg) - m, np.int64)])
    return names, np.concatenate([labels.ravel(), tail])


def _pool_mask(
    index: pd.DataFrame, exclude_snow_cloud: bool, official: tuple[str, ...]
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows eligible for a split by the index's flags, and how many each filter removed (for the manifest)."""
    keep = np.ones(len(index), dtype=bool)
    pool = {"index_rows": len(index), "excluded_snow_cloud": 0, "outside_official_split": 0}
    if exclude_snow_cloud:
        flagged = _bool_column(index, "snow") | _bool_column(index, "cloud_shadow")
        pool["excluded_snow_cloud"] = int(flagged.sum())
        keep &= ~flagged
    if official:
        if OFFICIAL_COLUMN not in index.columns:
            raise UserError(f"index has no column {OFFICIAL_COLUMN!r}: cannot use the official split")
        inside = index[OFFICIAL_COLUMN].isin(official).to_numpy()
        pool["outside_official_split"] = int((keep & ~inside).sum())
        keep &= inside
    return keep, pool


def _outside_official(index: pd.DataFrame, kind: str, parts: tuple[str, ...], eligible: int) -> str:
    """Why no eligible patch is in the official `parts`: said so, rather than as an empty set further on."""
    what = "kind official" if kind == "official" else f"official_split {'+'.join(parts)}"
    unlisted = int(index[OFFICIAL_COLUMN].isna().sum())
    return (f"{what}: none of the index's {eligible} eligible patches is in the archive's official "
            f"{'/'.join(parts)} split ({unlisted} of its {len(index)} rows have no official part in column "
            f"{OFFICIAL_COLUMN!r}, as patches outside the official lists, such as a synthetic demo's); expected "
            "an index of the real archive")


def _labels(index: pd.DataFrame, scheme: str, positives: pd.Series | None) -> tuple[np.ndarray, np.ndarray, str]:
    """Positive flags, which rows have a label at all (False: ambiguous, in no set) and their source."""
    if positives is not None:
        return *_caller_labels(index, positives), "caller"
    column = f"{PRESENT}{scheme}"
    if column not in index.columns:
        found = sorted(c for c in index.columns if c.startswith(PRESENT))
        raise UserError(f"index has no column {column!r} for scheme {scheme!r}: found {found}; pass positives")
    return _bool_column(index, column), np.ones(len(index), dtype=bool), f"column {column}"


def _caller_labels(index: pd.DataFrame, positives: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """A caller's labels: bool, or nullable "boolean" whose <NA> marks a patch that is not eligible."""
    if not isinstance(positives, pd.Series) or not positives.index.equals(index.index):
        raise UserError("positives: expected a Series with the index DataFrame's row index")
    if not pd.api.types.is_bool_dtype(positives.dtype):
        raise UserError(f"positives: expected booleans (<NA> for not eligible), got dtype {positives.dtype}")
    known = positives.notna().to_numpy(dtype=bool)
    return positives.fillna(False).to_numpy(dtype=bool), known


class _Reference(NamedTuple):
    """What a split may hold: the eligible names of the index, their labels when known, their group
    under the split's kind (None for random) and, for a spatial kind, their footprints."""

    eligible: pd.Index
    truth: np.ndarray | None
    groups: np.ndarray | None
    kind: str
    footprints: np.ndarray | None


def _reference(index: pd.DataFrame, manifest: SplitManifest, positives: pd.Series | None) -> _Reference:
    """The eligible names by the index, the manifest's filters and kind, and the labels when known."""
    _check_unique_names(index)
    official = OFFICIAL_SPLITS if manifest.kind == "official" else _parse_official(manifest.official_split)
    keep, _ = _pool_mask(index, manifest.exclude_snow_cloud, official)
    column = f"{PRESENT}{manifest.scheme}"
    if positives is not None:
        truth, known = _caller_labels(index, positives)
        keep &= known
    elif manifest.positives_source in (f"column {column}", f"column positive_{manifest.scheme}") \
            and column in index.columns:
        truth = _bool_column(index, column)
    else:
        truth = None
    groups = group_keys(index, manifest.kind)
    prints = footprint.of(index)[keep] if is_spatial(manifest.kind) else None
    return _Reference(pd.Index(index["name"].to_numpy(dtype=str)[keep]), None if truth is None else truth[keep],
                      None if groups is None else groups[keep], manifest.kind, prints)


def _verify(files: _Sets, fractions: tuple[int, ...], reference: _Reference | None) -> None:
    """The rules of a split; raises SplitError naming the file and up to five offending patches.

    reference: the eligible names of the index, their true labels and groups (None when unknown).
    Smaller fractions are checked to be prefixes of the largest, so the largest train and val
    files and the test files stand for all files in the remaining checks.
    """
    for name, (names, labels) in files.items():
        dup = pd.Index(names)
        if not dup.is_unique:
            _fail(name, "names listed twice", dup[dup.duplicated()])
        natural = name == file_name(NATURAL, 0) or name.startswith(VAL_NATURAL)
        if not natural and abs(2 * int(labels.sum()) - len(labels)) > 1:
            _fail(name, f"classes not balanced: {int(labels.sum())} positives of {len(labels)}", [])
    largest = {s: file_name(s, fractions[-1]) for s in ALL_SETS if file_name(s, fractions[-1]) in files}
    natural_val = file_name(VAL_NATURAL, fractions[-1])
    for s in ("train", "val", VAL_NATURAL) if natural_val in files else ("train", "val"):
        full_names, full_labels = files[file_name(s, fractions[-1])]
        for f in fractions[:-1]:
            name = file_name(s, f)
            names, labels = files[name]
            head_names, head_labels = full_names[: len(names)], full_labels[: len(names)]
            wrong = (names != head_names) | (labels != head_labels) if len(names) <= len(full_names) else None
            if wrong is None or wrong.any():
                rows = [] if wrong is None else names[wrong]
                _fail(name, f"not the first {len(names)} rows of {file_name(s, fractions[-1])} (fractions must "
                            "nest)", rows)
    if natural_val in files:  # drawn on val's ground: checked as part of val from here on
        joined = np.r_[files[largest["val"]][0], files[natural_val][0]], np.r_[files[largest["val"]][1],
                                                                               files[natural_val][1]]
        first = np.unique(joined[0], return_index=True)[1]
        files = {**files, largest["val"]: (joined[0][first], joined[1][first])}
    for s, name in largest.items():
        names = files[name][0]
        plain = pd.Series(names, dtype=object).str.fullmatch(_PLAIN_NAME).to_numpy(dtype=bool)
        if not plain.all():
            _fail(name, "not plain patch names", names[~plain])
    sets = list(largest)
    for i, a in enumerate(sets):
        for b in sets[i + 1 :]:
            shared = np.intersect1d(files[largest[a]][0], files[largest[b]][0])
            if len(shared):
                _fail(largest[b], f"patches also in {largest[a]} (sets must be disjoint)", shared)
    if reference is not None:
        _verify_reference({s: files[name] for s, name in largest.items()}, largest, reference)


def _verify_reference(sets: _Sets, files: dict[str, str], reference: _Reference) -> None:
    """Every name eligible in the index with the index's label, no group in two sets and, for a spatial
    kind, no patch near another set's."""
    groups = {}
    for s, (names, labels) in sets.items():
        at = reference.eligible.get_indexer(names)
        if (at < 0).any():
            _fail(files[s], "patches not in the index or excluded by the manifest's filters", names[at < 0])
        if reference.truth is not None:
            wrong = reference.truth[at] != labels.astype(bool)
            if wrong.any():
                _fail(files[s], "labels differ from the index", names[wrong])
        if reference.groups is not None:
            groups[s] = reference.groups[at]
    if reference.kind == "official":  # the parts are the groups, and test_natural shares test's part
        for s, found in groups.items():
            if (outside := found != OFFICIAL_PARTS[s]).any():
                _fail(files[s], f"patches outside the official {OFFICIAL_PARTS[s]} part", sets[s][0][outside])
        return
    listed = list(groups)
    for i, a in enumerate(listed):
        for b in listed[i + 1 :]:
            shared = np.intersect1d(groups[a].astype(str), groups[b].astype(str))
            if len(shared):
                _fail(files[b], f"{reference.kind} groups also in {files[a]} (no group may be in two sets)", shared)
    if reference.footprints is not None:
        _verify_apart(sets, files, reference)


def _verify_apart(sets: _Sets, files: dict[str, str], reference: _Reference) -> None:
    """No patch near a patch of another set (same footprint on any date, or a neighbour): a spatial kind's
    promise, which the groups alone do not keep at block edges."""
    prints = {s: reference.footprints[reference.eligible.get_indexer(names)] for s, (names, _) in sets.items()}
    for a, b in itertools.combinations(sets, 2):
        close = footprint.near(prints[b], prints[a])
        if close.any():
            _fail(files[b], f"patches on or next to the ground of {files[a]} (a {reference.kind} split keeps "
                            "them apart)", sets[b][0][close])


def _read_files(scheme_dir: Path, manifest: SplitManifest) -> tuple[_Sets, dict[str, str]]:
    """Every file the manifest lists, parsed, after checking it is present and its sha256 matches."""
    expected = {file_name(s, f) for s in SETS for f in manifest.fractions}
    if manifest.natural_share is not None:
        expected.add(file_name(NATURAL, 0))
    if manifest.natural_validation:
        expected |= {file_name(VAL_NATURAL, f) for f in manifest.fractions}
    if set(manifest.files) != expected:
        raise SplitError(
            f"{scheme_dir / MANIFEST}: lists {sorted(manifest.files)}, expected {sorted(expected)}"
        )
    files, digests = {}, {}
    for name, entry in manifest.files.items():
        path = scheme_dir / name
        if not path.is_file():
            found = sorted(p.name for p in _split_files(scheme_dir))
            raise SplitError(f"{path}: listed in the manifest but missing; found {found}")
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise SplitError(
                f"{path}: sha256 {digest[:12]}... differs from the manifest's {entry.sha256[:12]}..."
            )
        names, labels = _parse_csv(data, path)
        if len(names) != entry.count or int(labels.sum()) != entry.positives:
            raise SplitError(
                f"{path}: {len(names)} patches, {int(labels.sum())} positives; the manifest says "
                f"{entry.count}, {entry.positives}"
            )
        files[name], digests[name] = (names, labels), digest
    return files, digests


def _csv_bytes(names: np.ndarray, labels: np.ndarray) -> bytes:
    rows = np.char.add(np.char.add(names.astype(str), ","), labels.astype(str))
    return "\n".join([HEADER, *rows.tolist()]).encode("utf-8") + b"\n"


def _parse_csv(data: bytes, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Strict reader of the format _csv_bytes writes: anything else is a tampered file."""
    try:
        lines = data.decode("utf-8").split("\n")
    except UnicodeDecodeError:
        raise SplitError(f"{path}: not UTF-8 text") from None
    if lines[0] != HEADER or lines[-1] != "":
        raise SplitError(f"{path}: expected header {HEADER!r} and a final newline")
    pairs = [line.rpartition(",") for line in lines[1:-1]]
    bad = [i for i, (name, comma, label) in enumerate(pairs) if not comma or label not in ("0", "1")]
    if bad:
        raise SplitError(f"{path}: line {bad[0] + 2} is not `name,0` or `name,1`: {lines[bad[0] + 1]!r}")
    names = np.array([p[0] for p in pairs], dtype=str)
    labels = np.array([p[2] == "1" for p in pairs], dtype=np.int64)
    return names, labels


def _split_files(scheme_dir: Path) -> list[Path]:
    return [
        p
        for p in scheme_dir.glob("*.csv")
        if re.fullmatch(r"(train|val|val_natural)_\d{3}pct\.csv|test\.csv|test_natural\.csv", p.name)
    ]


def _fail(file: str, problem: str, patches: Sequence[str] | np.ndarray) -> None:
    shown = ", ".join(repr(str(p)) for p in list(patches)[:_SHOWN])
    more = f" (and {len(patches) - _SHOWN} more)" if len(patches) > _SHOWN else ""
    raise SplitError(f"{file}: {problem}" + (f": {shown}{more}" if shown else ""))


def _bool_column(index: pd.DataFrame, column: str) -> np.ndarray:
    """A boolean column of the index without missing values, as a numpy array; nothing else."""
    if column not in index.columns:
        raise UserError(f"index has no column {column!r}")
    series = index[column]
    if not pd.api.types.is_bool_dtype(series.dtype) or series.isna().any():
        raise UserError(f"{column}: expected booleans without missing values, got dtype {series.dtype}")
    return series.to_numpy(dtype=bool)


def _check_unique_names(index: pd.DataFrame) -> None:
    if "name" not in index.columns:
        raise UserError("index has no column 'name'")
    dup = index["name"].duplicated()
    if dup.any():
        raise UserError(f"index lists patches twice: {index['name'][dup].head(_SHOWN).tolist()}")


def scheme_name(spec: str) -> tuple[str, tuple[str, ...]]:
    """The scheme's name and classes; a custom scheme (class names joined by ';') is named by a hash of
    its sorted classes, so the same classes always land in the same folder."""
    scheme, classes = resolve_scheme(spec)
    if scheme == "custom":
        scheme = "custom_" + hashlib.sha256(";".join(sorted(classes)).encode()).hexdigest()[:8]
    return scheme, classes


def scheme_folder_problem(scheme: str) -> str | None:
    """Splits are read by their folder's name: what is wrong with a class list create_splits filed under
    another name (a custom scheme's custom_<hash>), with the name to give; None for a folder's name."""
    try:
        folder = scheme_name(scheme)[0]
    except UserError:  # not a class list: a folder's name (custom_<hash>), checked as one
        return None
    return None if folder == scheme else f"create_splits files the splits of {scheme!r} under {folder}; give " \
                                         f"scheme={folder}"


def _check_scheme(scheme: str) -> None:
    if not isinstance(scheme, str) or not _SCHEME_NAME.fullmatch(scheme):
        raise UserError(f"scheme {scheme!r}: expected letters, digits, '_' and '-' (not first) only")


def _check_fractions(fractions: Sequence[int]) -> tuple[int, ...]:
    values = tuple(sorted(set(fractions)))
    if not values or any(
        isinstance(f, bool) or not isinstance(f, (int, np.integer)) or not 1 <= f <= 100 for f in values
    ):
        raise UserError(f"fractions {list(fractions)!r}: expected whole percentages between 1 and 100")
    return tuple(int(f) for f in values)


def _check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(r) for r in ratios)
    if len(values) != 3 or min(values) <= 0 or abs(sum(values) - 1) > 1e-9:
        raise UserError(
            f"ratios {list(ratios)!r}: expected three positive train/val/test ratios adding up to 1"
        )
    return values


def _parse_official(spec: str | None) -> tuple[str, ...]:
    if not spec:
        return ()
    parts = tuple(spec.split("+"))
    if any(p not in OFFICIAL_SPLITS for p in parts) or len(set(parts)) != len(parts):
        raise UserError(
            f"official_split {spec!r}: expected one or more of {list(OFFICIAL_SPLITS)} joined by '+'"
        )
    return tuple(p for p in OFFICIAL_SPLITS if p in parts)
