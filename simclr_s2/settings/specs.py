"""Every entry point's settings, defined once. MLproject (`python -m simclr_s2.app.mlproject`) and the
manual's parameter tables (docs/entry-points.md) are generated from these classes, and tests check both
are in sync, so a default changes in exactly one place.

`auto` means "the demo's": the data, splits or encoder of the demo chain, made when missing (by the
commands that train) and found when present; resolved values are logged as `resolved_<name>`. It fills
only what was left out: a value given is never replaced. A data stage's path left at `auto` is its place
in the data folder (SIMCLR_S2_DATA), the one the demo chain uses. Every check that needs no data is a
field's `check` or a spec's `validate`, so it refuses before anything is read or a run opened.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from simclr_s2.bigearthnet.bands import BANDS, BandError, Bands
from simclr_s2.bigearthnet.download import FILES as FETCH_FILES
from simclr_s2.bigearthnet.download import ZENODO
from simclr_s2.bigearthnet.layouts import LAYOUTS as ARCHIVE_LAYOUTS
from simclr_s2.bigearthnet.nomenclature import AMBIGUOUS, SCHEMES
from simclr_s2.errors import UserError
from simclr_s2.learning.config import (
    ARCHS,
    BN_RECALIBRATE,
    JITTER_MODES,
    OPTIMIZERS,
    TRAINABLE,
    AugmentConfig,
)
from simclr_s2.scenes.scl import DEFAULT_MASK, parse_mask
from simclr_s2.settings.spec import (
    Spec,
    distinct,
    non_negative,
    param,
    percentage,
    percentages,
    positive,
    probability,
    seed_number,
    seed_numbers,
)
from simclr_s2.study.comparison import DEFAULT_LABEL_RULE
from simclr_s2.study.membership import OVERLAP_POLICIES
from simclr_s2.study.promotion import alias_problem, former_alias_problem, run_metric
from simclr_s2.study.search_space import PRUNERS, TARGETS, SearchSpace, check_metric, storage_problem
from simclr_s2.study.split_kinds import KIND_PATTERN, KINDS_HELP, is_cv
from simclr_s2.study.splits import ALL_SETS, OFFICIAL_SPLITS, check_options, scheme_folder_problem
from simclr_s2.study.splits import DEFAULT_FRACTIONS as FRACTIONS

DEMO_ARCHIVE = "demo/BigEarthNet-v1.0"
DEMO_INDEX = "demo/index"
LAYOUTS = tuple(ARCHIVE_LAYOUTS)
_MIN_FRACTION, _AMBIGUOUS = DEFAULT_LABEL_RULE["min_fraction"], DEFAULT_LABEL_RULE["ambiguous"]  # compare's too
REUSE_HELP = "false: run again every step this command would reuse"
OVERLAP_HELP = ("the leakage guard: false stops when the encoder saw the ground of the set (same footprint on any "
                "date, or a neighbour) or its membership cannot be read; unknown goes on past the latter; true "
                "past both (recorded on the run)")


def _whole(value: int) -> str | None:
    return None if value >= 0 else "expected a whole number >= 0"


def _named(value: str) -> str | None:
    return None if value.strip() else "expected a name, or auto"


def _split_kind(value: str) -> str | None:
    return None if re.fullmatch(KIND_PATTERN, value) else f"expected {KINDS_HELP}"


def _auto_or_number(value: str, accept: Callable[[float], bool], expected: str) -> str | None:
    """None when `value` is auto or a number `accept` takes, else what was expected."""
    try:
        ok = value == "auto" or accept(float(value))
    except ValueError:
        ok = False
    return None if ok else f"expected auto or {expected}"


def _share_or_auto(value: str) -> str | None:
    return _auto_or_number(value, lambda x: 0 < x <= 1, "a share in (0, 1]")


def _shares_or_auto(values: tuple[str, ...]) -> str | None:
    return next(filter(None, map(_share_or_auto, values)), None)


def _folds(value: str) -> str | None:
    if value != "all" and not re.fullmatch(r"\d+(,\d+)*", value):
        return "expected all, or distinct fold numbers joined by ','"
    return None if value == "all" else distinct(value.split(","))


def _fold_or_none(value: str) -> str | None:
    return None if value == "none" or value.isdigit() else "expected none or a fold number"


def _bands(value: str) -> str | None:
    try:
        Bands.parse(value)
    except BandError:
        return f"expected study, all, or distinct band names among {','.join(BANDS)} joined by ','"
    return None


def _bands_or_auto(value: str) -> str | None:
    return None if value == "auto" else _bands(value)


def _path(value: str) -> str | None:
    """A blank path (an empty `-P name=`) would be the current folder: refused, whatever the parameter."""
    return None if value.strip() else "expected a path or URI, not an empty value"


def _path_param(default: Any = MISSING, help: str = "") -> Any:
    """A path (folder, file or URI) parameter: never blank."""
    return param(default, help, check=_path)


def _all_or(sep: str, pattern: str, expected: str) -> Callable[[str], str | None]:
    """The check of a choice that is `all` or values matching `pattern` joined by `sep`: a blank one (`-P
    tiles=`) or a value misspelt in form is refused before fetch downloads 63 GB, not after."""
    def check(value: str) -> str | None:
        items = [item.strip() for item in value.split(sep)]
        ok = value == "all" or all(re.fullmatch(pattern, item) for item in items)
        return distinct(items) if ok else f"expected all, or {expected} joined by '{sep}'"
    return check


_official_split = _all_or("+", "|".join(OFFICIAL_SPLITS), " / ".join(OFFICIAL_SPLITS))


def _split_scheme(value: str) -> str | None:
    """A scheme as the folder create_splits filed its splits under (and the tag its models carry): basic,
    expanded or custom_<hash>. 'Basic' or a blank was refused only once the demo chain had been made."""
    if problem := scheme_folder_problem(value):
        return problem
    if value in SCHEMES or re.fullmatch(r"custom_[0-9a-f]{8}", value):
        return None
    close = difflib.get_close_matches(value, SCHEMES, n=1)
    return "expected basic, expanded, or the custom_<hash> folder create_splits named" + (
        f" (closest: {close[0]})" if close else "")


NO_ENCODERS = "none"  # the grid's baselines alone
RESERVED_NAMES = ("auto", NO_ENCODERS, "scratch", "any")  # words `pretrained`, `encoders` and promote read


def _encoder_name(value: str) -> str | None:
    """An encoder's alias: one MLflow takes, and none of the words that mean something else where encoders are
    named (`encoders=none` would plan baselines, promote's `pretrained=scratch` picks baselines)."""
    if value.lower() in RESERVED_NAMES:
        return f"expected an alias other than {', '.join(RESERVED_NAMES)} (they mean something else where " \
               "encoders are named)"
    return alias_problem(value)


def _encoders(value: str) -> str | None:
    """The grid's encoders: `none` plans baselines alone, said so; a blank (`-P encoders=`) planned no fine-tune
    cells silently, and a repeat was dropped."""
    items = [item.strip() for item in value.split(",")]
    return distinct(items) if all(items) else "expected auto, none, or aliases or URIs joined by ','"


def _split_refs(value: str) -> str | None:
    """exclude_split's list: a blank entry ("", ",") would leave no test set out, silently."""
    ok = all(ref.strip() for ref in value.split(","))
    return None if ok else "expected auto, none, or split folders or runs:/ URIs joined by ','"


def _in_data(where: str, help: str) -> Any:
    """A path whose default, auto, is `where` in the data folder: the demo chain's place for it."""
    return param("auto", f"{help}; auto = {where} in the data folder (SIMCLR_S2_DATA, default data in the "
                         "project folder)", check=_path, in_data=where)


def _ratios(values: tuple[float, ...]) -> str | None:
    ok = len(values) == 3 and all(0 < v < 1 for v in values) and abs(sum(values) - 1) < 1e-9
    return None if ok else "expected three fractions in (0, 1) summing to 1, e.g. 0.70,0.15,0.15"


@dataclass(frozen=True)
class MakeDemoData(Spec):
    """A synthetic BigEarthNet-S2 archive in the real on-disk layout, with a learnable irrigation signal."""

    entry_point: ClassVar[str] = "make_demo_data"
    out: str = _in_data(DEMO_ARCHIVE, "folder to write (must be empty or hold this very demo)")
    n_patches: int = param(1000, "patches to write", check=positive)
    seed: int = param(0, "random seed: the same seed writes the same bytes", check=seed_number)
    layout: str = param("v1", "v1 (BigEarthNet-S2 v1.0) or v2 (v2.0 / reBEN, with reference maps)",
                        choices=LAYOUTS)
    scene: str = _path_param("none", "folder to write a synthetic Sentinel-2 scene into (per-band GeoTIFFs, "
                                     "which predict maps) instead of an archive; none = the archive")


@dataclass(frozen=True)
class BuildIndex(Spec):
    """Scan an archive into index.parquet (one row per patch) and index.rejected.parquet (broken patches)."""

    entry_point: ClassVar[str] = "build_index"
    archive: str = _in_data(DEMO_ARCHIVE, "archive folder")
    out: str = _in_data(DEMO_INDEX, "output folder")
    workers: int = param(0, "processes; 0 = one per core", check=_whole, keyed=False)
    check_rasters: bool = param(False, "decode every band too (about 60 patches/s); default: TIFF headers")
    version: str = param("auto", "archive version: auto (recognised from its layout), v1 or v2",
                         choices=("auto", *LAYOUTS))


@dataclass(frozen=True)
class CreateSplits(Spec):
    """Balanced, nested train/val/test splits of one labelling scheme, checked and digested."""

    entry_point: ClassVar[str] = "create_splits"
    index: str = _in_data(f"{DEMO_INDEX}/index.parquet", "index file or runs:/ URI")
    scheme: str = param("basic", "basic, expanded, or class names joined by ';'")
    fractions: tuple[int, ...] = param(FRACTIONS, "percentages of train and validation", check=percentages)
    seed: int = param(0, "random seed", check=seed_number)
    exclude_snow_cloud: bool = param(True, "leave out the official snow and cloud/shadow patches")
    official_split: str = param("all", "all, or train / validation / test joined by '+'", check=_official_split)
    ratios: tuple[float, ...] = param((0.70, 0.15, 0.15), "train, validation and test shares", check=_ratios,
                                      repeats=True)
    out: str = _in_data("demo/splits", "output folder")
    kind: str = param("spatial", "spatial (no footprint, twin on another date or neighbour in two sets; "
                                 "spatial-<n>km: blocks of n km), random (patch level, as the study: warned), tile, "
                                 "block-<n>km, official (the archive's own split), or cross-validation: folds-<k> "
                                 "or folds-<k>-<n>km (k spatial folds) or country (leave one country out), one "
                                 "split per fold", check=_split_kind)
    natural_test: bool = param(False, "also write test_natural.csv at the pool's own prevalence")
    natural_share: float = param(0.02, "share of the pool drawn for test_natural.csv", check=probability)
    min_fraction: str = param(_MIN_FRACTION, "v2.0 archives: share of a patch the scheme's classes must cover "
                              "to be positive; auto = 0.17 (one CORINE mapping unit)", check=_share_or_auto)
    ambiguous: str = param(_AMBIGUOUS, "v2.0 archives: patches with some but less than min_fraction of the "
                           "scheme's classes: left out (exclude) or negative", choices=AMBIGUOUS)
    fold: int = param(0, "kind folds-<k> or country: the fold held out for test, 0 to k-1 (country: the index's "
                         "countries in alphabetical order)", check=_whole)

    def validate(self) -> None:
        official = None if self.official_split == "all" else self.official_split
        check_options(self.kind, official, self.natural_test, self.natural_share, self.fold)


@dataclass(frozen=True)
class Pretrain(Spec):
    """Train a SimCLR encoder (ResNet + projection head, NT-Xent) and register it under an alias."""

    entry_point: ClassVar[str] = "pretrain"
    index: str = _path_param("auto", "index file or runs:/ URI; auto = the demo archive's")
    exclude_split: str = param("auto", "splits whose test sets pretraining must not see (folders or runs:/ "
                                       "URIs, comma-separated); auto = the demo's when index is auto; none",
                               check=_split_refs)
    name: str = param("ben", "alias of the registered encoder, e.g. ben, ca-sgd, ca-adam", check=_encoder_name)
    arch: str = param("resnet18", "encoder", choices=ARCHS)
    bands: str = param("study", "study, all, or band names joined by ','", check=_bands)
    epochs: int = param(2, "epochs", check=positive)
    batch_size: int = param(32, "batch (global, across processes; at least 2: NT-Xent contrasts a patch with the "
                                "others of its batch); the study's 32",
                            check=lambda v: None if v >= 2 else "expected 2 or more")
    temperature: float = param(0.1, "NT-Xent temperature, 0.001..10",
                               check=lambda v: None if 0.001 <= v <= 10 else "expected a temperature in 0.001..10")
    optimizer: str = param("adam", "sgd = cosine decay; lars", choices=OPTIMIZERS)
    lr: float = param(0.001, "learning rate", check=positive)
    seed: int = param(0, "random seed (weights, data order, views)", check=seed_number)
    max_patches: int = param(0, "at most this many patches; 0 = all", check=_whole)
    jitter: str = param("spectral", "colour change: spectral (one gain for all bands, keeps band ratios) or "
                                    "per_band (SimCLR's, changes them)", choices=JITTER_MODES)
    gain: float = param(0.4, "gain drawn from [1 - gain, 1 + gain]", check=probability)
    brightness: float = param(0.0, "per_band only: shift in std units", check=non_negative)
    contrast: float = param(0.0, "per_band only: contrast factor range", check=non_negative)
    crop_min_scale: float = param(0.08, "smallest random crop, as a share of the patch area",
                                  check=lambda v: None if 0 < v <= 1 else "expected a share in (0, 1]")
    view_size: int = param(64, "side in pixels of the views the crops are resized to: 120 keeps the patch's "
                               "(the study's), 64 trains about 3.5x faster (the demo's); 8 to 240",
                          check=lambda v: None if 8 <= v <= 240 else "expected 8..240 pixels")
    blur_p: float = param(0.5, "probability of a Gaussian blur", check=probability)
    noise_std: float = param(0.05, "additive noise in std units", check=non_negative)
    reuse: bool = param(True, REUSE_HELP, keyed=False)

    def validate(self) -> None:
        if self.exclude_split == "auto" and self.index != "auto":
            raise UserError("exclude_split: name the splits whose test sets pretraining must not see, or none")
        self.augment()  # its checks (e.g. brightness only with per_band) before any data is read

    def augment(self) -> AugmentConfig:
        """The views' augmentations from the pretrain parameters (the rest keep SimCLR's defaults)."""
        return AugmentConfig(jitter=self.jitter, gain=self.gain, brightness=self.brightness, contrast=self.contrast,
                             crop_scale=(self.crop_min_scale, 1.0), view_size=self.view_size, blur_p=self.blur_p,
                             noise_std=self.noise_std, bands=tuple(Bands.parse(self.bands)))


@dataclass(frozen=True)
class ImportEncoder(Spec):
    """Register an encoder trained elsewhere (a state dict) like one pretrained here."""

    entry_point: ClassVar[str] = "import_encoder"
    state_dict: str = _path_param(help="a .pt or .safetensors file or an artifact URI (runs:/, s3://, ...): a SimCLR "
                                       "model of this project, or torchgeo's Sentinel-2 ResNet weights that take "
                                       "DN / 10,000 (timm layout)")
    name: str = param(help="alias of the registered version, e.g. ca-adam", check=_encoder_name)
    arch: str = param("auto", "the encoder's network; auto = read from the weights", choices=("auto", *ARCHS))
    bands: str = param("auto", "the data's bands (torchgeo weights: their channels are picked by name); auto = "
                               "all the encoder's bands the archive has (torchgeo's: 12, no B10), or 10/12 by "
                               "channels", check=_bands_or_auto)
    source_bands: str = param("ssl4eo13", "timm layout: the bands its conv1 takes; ssl4eo13 = torchgeo's 13 "
                                          "SSL4EO-S12 bands (B01-B12 with B8A and B10), all = BigEarthNet's 12 in "
                                          "archive order (torchgeo's SENTINEL2_ALL_SECO_ECO)",
                              choices=("ssl4eo13", "all"))


@dataclass(frozen=True)
class Training(Spec):
    """What fine-tunes and baselines share."""

    split: str = _path_param("auto", "create_splits output: folder or runs:/<id>/splits; auto = the demo's")
    scheme: str = param("basic", "labelling scheme of the split", check=_split_scheme)
    fraction: int = param(100, "data fraction in percent", check=percentage)
    epochs: int = param(50, "at most this many epochs", check=positive)
    batch_size: int = param(32, "batch (global, across processes)", check=positive)
    lr: float = param(5e-5, "Adam learning rate", check=positive)
    weight_decay: float = param(0.0, "Adam weight decay", check=non_negative)
    dropout: float = param(0.5, "classifier dropout", check=probability)
    seed: int = param(0, "random seed (new layers, data order, dropout)", check=seed_number)
    fold: str = param("none", "the cross-validation fold the split holds out, as its manifest says (main sets it; "
                              "compare aggregates over folds); none = not a fold", check=_fold_or_none)
    register: bool = param(True, "register the model as a version of simclr-s2-irrigation")
    reuse: bool = param(True, REUSE_HELP, keyed=False)


@dataclass(frozen=True)
class Finetune(Training):
    """Train the irrigation classifier on a pretrained encoder, evaluate it on the test set, register it."""

    entry_point: ClassVar[str] = "finetune"
    pretrained: str = _path_param("auto", "models:/simclr-s2-encoder@ben (or the alias alone: ben), "
                                          "models:/<name>/<version>, runs:/<id>/model of a registered version, or a "
                                          ".pt or .safetensors state dict; auto = the demo's")
    trainable: str = param("head2", "what trains: head2, head or all", choices=TRAINABLE)
    bands: str = param("auto", "auto = the encoder's own", check=_bands_or_auto)
    bn_recalibrate: str = param("auto", "recompute the encoder's BatchNorm statistics on the training patches "
                                        "before training; auto = for encoders trained on other data (torchgeo's) "
                                        "and frozen ones (head2, head)",
                                choices=BN_RECALIBRATE)
    patience: int = param(25, "early-stopping patience on validation AUC", check=positive)
    feature_cache: str = param("auto", "train on cached frozen features (same result, faster)",
                               choices=("auto", "true", "false"))
    allow_pretraining_overlap: str = param("false", OVERLAP_HELP, choices=OVERLAP_POLICIES)
    # What a baseline's parameter says of its network, a fine-tune answers as a class: its encoder's own.
    arch: ClassVar[str] = "auto"


@dataclass(frozen=True)
class Baseline(Training):
    """The same network from scratch, every layer trained, on the same splits."""

    entry_point: ClassVar[str] = "baseline"
    arch: str = param("resnet18", "network", choices=ARCHS)
    bands: str = param("study", "study, all, or band names joined by ','", check=_bands)
    patience: int = param(15, "early-stopping patience on validation AUC", check=positive)
    # What a fine-tune's parameters say of its encoder, a baseline answers as a class: it loads none (its
    # encoder starts from scratch), so every layer trains, no frozen features are cached and no pretrained
    # statistics are recomputed, and no pretraining can overlap its test set (the guard never runs). Training
    # asks the spec, never which spec it has.
    pretrained: ClassVar[None] = None
    trainable: ClassVar[str] = "all"
    feature_cache: ClassVar[str] = "false"
    bn_recalibrate: ClassVar[str] = "false"
    allow_pretraining_overlap: ClassVar[str] = "false"


@dataclass(frozen=True)
class Evaluate(Spec):
    """Score a registered classifier on a split set: metrics, plots and a predictions table."""

    entry_point: ClassVar[str] = "evaluate"
    model_uri: str = _path_param(help="models:/simclr-s2-irrigation@champion, runs:/<id>/model, ...")
    split: str = _path_param("auto", "create_splits output; auto = the demo's (never made here)")
    scheme: str = param("basic", "labelling scheme of the split: the model's own (another is refused)",
                        check=_split_scheme)
    set: str = param("test", "which set; test_natural: the natural-prevalence test set", choices=ALL_SETS)
    fraction: int = param(100, "fraction of the set (train and val)", check=percentage)
    batch_size: int = param(64, "batch", check=positive)
    allow_pretraining_overlap: str = param("false", f"{OVERLAP_HELP}; a test set of another split, and the "
                                                    "validation set its threshold is chosen on, are also checked "
                                                    "against the ground the model trained and validated on, the "
                                                    "same way", choices=OVERLAP_POLICIES)


BACKENDS = ("local", "ray")


def _ray_address(value: str) -> str | None:
    ok = value in ("auto", "local") or re.fullmatch(r"(ray://)?[\w.-]+:\d+", value)
    return None if ok else "expected auto, local, host:port or ray://host:port"


def _backend(what: str) -> Any:
    return param("local", f"where the {what} run: local (in this process) or ray (Ray tasks on a cluster, "
                          "see docs/cluster.md)", choices=BACKENDS, keyed=False)


def _cluster() -> Any:
    return param("auto", "the Ray cluster of backend=ray: auto (the one this machine belongs to, or "
                         "RAY_ADDRESS), local (started here for this command), host:port or ray://host:port",
                 check=_ray_address, keyed=False)


def _resources(what: str, default: float, kind: str) -> Any:
    share = "; fractions share one" if kind == "GPUs" else ""
    return param(default, f"{kind} each {what} takes on the cluster (backend=ray){share}",
                 check=positive if kind == "CPUs" else non_negative, keyed=False)


def _local_only(backend: str, name: str, value: int, what: str) -> None:
    if backend == "local" and value > 1:
        raise UserError(f"{name}: backend=local runs one {what} at a time; use backend=ray, or 1")


@dataclass(frozen=True)
class Grid(Spec):
    """The study's grid as one resumable command: encoders x fractions x schemes x seeds fine-tunes plus
    baselines, each a child run of this one."""

    entry_point: ClassVar[str] = "main"
    encoders: str = param("auto", "aliases (ben) or URIs joined by ','; auto = the demo's three; none = "
                                  "baselines alone", check=_encoders)
    schemes: tuple[str, ...] = param(("basic", "expanded"), "labelling schemes")
    fractions: tuple[int, ...] = param(FRACTIONS, "data fractions in percent", check=percentages)
    seeds: tuple[int, ...] = param((0,), "seeds; protocol=study: 0-4 when left out, else 5 or more",
                                   check=seed_numbers)
    baseline: bool = param(True, "train the from-scratch baselines too")
    baseline_arch: tuple[str, ...] = param(("resnet18",), "baseline networks", choices=ARCHS)
    trainable: tuple[str, ...] = param(("head2",), "fine-tuned parts (each its own cells)", choices=TRAINABLE)
    epochs: int = param(50, "epochs of every cell", check=positive)
    protocol: str = param("custom", "study: the original code's choices (trainable all, resnet152 baselines); "
                                    "custom: the parameters as given", choices=("custom", "study"))
    split: str = _path_param("auto", "create_splits output holding every scheme; auto = drawn from index by the "
                                      "grid, with split_kind, folds, min_fractions and ambiguous")
    index: str = _path_param("auto", "split=auto: the index the grid draws its splits from; auto = the demo's")
    split_kind: str = param("spatial", "split=auto: the splits' kind (create_splits' kind); folds-<k> and country "
                                       "run every fold as cells", check=_split_kind)
    folds: str = param("all", "split_kind folds-<k> or country: the folds to run, all or numbers joined by ','",
                       check=_folds)
    min_fractions: tuple[str, ...] = param((_MIN_FRACTION,), "split=auto, v2.0 index: the label rules to sweep, "
                                           "shares the scheme's classes must cover (auto = 0.17); each its own "
                                           "splits and cells", check=_shares_or_auto)
    ambiguous: tuple[str, ...] = param((_AMBIGUOUS,), "split=auto, v2.0 index: ambiguous patches left out "
                                       "(exclude) and/or counted negative, each its own splits and cells",
                                       choices=AMBIGUOUS)
    natural_test: bool = param(False, "split=auto: also draw natural-prevalence test and validation sets "
                                      "(create_splits' natural_test): thresholds chosen and figures shown at the "
                                      "pool's own prevalence")
    natural_share: float = param(0.02, "split=auto with natural_test: share of the pool drawn for test_natural.csv",
                                 check=probability)
    dry_run: bool = param(False, "only show which cells would run, resume or be reused", keyed=False)
    reuse: bool = param(True, REUSE_HELP, keyed=False)
    backend: str = _backend("cells")
    ray_address: str = _cluster()
    cpus_per_cell: float = _resources("cell", 1.0, "CPUs")
    gpus_per_cell: float = _resources("cell", 0.0, "GPUs")
    parallel: int = param(0, "cells running at once (backend=ray); 0 = as many as the cluster's CPUs and "
                             "GPUs hold", check=_whole, keyed=False)
    retries: int = param(2, "times Ray starts a cell again after its worker died (it resumes from its "
                            "checkpoint in the same run); a cell's own error is never retried", check=_whole,
                         keyed=False)

    def validate(self) -> None:
        _local_only(self.backend, "parallel", self.parallel, "cell")
        if self.encoders == NO_ENCODERS and not self.baseline:
            raise UserError("encoders: none with baseline=false plans no cell; give encoders or baseline=true")
        drawn = ("index", "split_kind", "folds", "min_fractions", "ambiguous")
        if self.split != "auto" and (changed := [n for n in drawn if getattr(self, n) != getattr(Grid, n)]):
            raise UserError(f"{changed[0]}: applies to the splits the grid draws (split=auto); the split given "
                            "is used as it is")
        if self.folds != "all" and not is_cv(self.split_kind):
            raise UserError(f"folds: split_kind {self.split_kind} has no folds; use folds-<k> or country")
        drawn_fractions = CreateSplits().fractions  # the grid draws its splits with create_splits' fractions
        if self.split == "auto" and (missing := [f for f in self.fractions if f not in drawn_fractions]):
            raise UserError(f"fractions: {missing} not in the splits the grid draws (create_splits' fractions "
                            f"{list(drawn_fractions)}); give a split drawn with them")


# each statistic keeps its resamples: n_boot=1e12 ran on for ever, towards 8 TB of them; under 100 a 95 %
# percentile interval is a few resamples' extremes (n_boot=1: a point) and no paired p reaches 0.05 after Holm
MIN_BOOT, MAX_BOOT = 100, 100_000


def _resamples(value: int) -> str | None:
    return None if MIN_BOOT <= value <= MAX_BOOT else f"expected {MIN_BOOT}..{MAX_BOOT:,} resamples"


@dataclass(frozen=True)
class Compare(Spec):
    """The study's comparison for one scheme from the model registry: table and figures across fractions."""

    entry_point: ClassVar[str] = "compare"
    scheme: str = param("basic", "labelling scheme", check=_split_scheme)
    fractions: tuple[int, ...] = param(FRACTIONS, "fractions to show", check=percentages)
    out: str = _path_param("outputs/compare", "output folder (also logged as artifacts)")
    n_boot: int = param(2000, f"bootstrap resamples for intervals and paired tests, {MIN_BOOT}..{MAX_BOOT:,}",
                        check=_resamples)
    test_set: str = param("any", "compare only versions scored on this test set (its digest or a prefix of "
                                 "it, as compare's refusal names them); any = all, refused when they differ; "
                                 "folds = the versions of cross-validation folds (each fold its own test set)")


@dataclass(frozen=True)
class Promote(Spec):
    """Point an alias at the best registered classifier by a validation metric."""

    entry_point: ClassVar[str] = "promote"
    scheme: str = param("basic", "labelling scheme", check=_split_scheme)
    fraction: str = param("any", "a whole percentage, or any")
    pretrained: str = param("any", "encoder name (ben), scratch for baselines, or any")
    metric: str = param("val_f1", "a validation metric: val_f1, val_auc, val_loss, ...")
    alias: str = param("champion", "alias to move", check=alias_problem)
    cross_fractions: bool = param(False, "rank versions of several fractions against each other")
    cross_test_sets: bool = param(False, "rank versions scored on several test sets against each other")
    dry_run: bool = param(False, "only show the choice", keyed=False)

    def validate(self) -> None:
        """Refused before a run opens or the registry is read: a bad fraction, an alias promote keeps a former
        holder in, a test metric."""
        if self.fraction != "any" and not (self.fraction.isdigit() and 0 < int(self.fraction) <= 100):
            raise UserError(f"fraction: expected a whole percentage in 1..100 or any, got {self.fraction!r}")
        if problem := former_alias_problem(self.alias):
            raise UserError(f"alias: {problem}")
        run_metric(self.metric)


@dataclass(frozen=True)
class Tune(Spec):
    """Optuna search over a finetune's (or baseline's) training settings, every trial a nested run."""

    entry_point: ClassVar[str] = "tune"
    target: str = param("finetune", "what to tune", choices=TARGETS)
    pretrained: str = _path_param("auto", "encoder for finetune (ignored for baseline); auto = the demo's")
    split: str = _path_param("auto", "create_splits output; auto = the demo's")
    scheme: str = param("basic", "labelling scheme", check=_split_scheme)
    fraction: int = param(10, "data fraction in percent", check=percentage)
    metric: str = param("val_f1", "val_f1 or val_auc (never a test metric)")
    n_trials: int = param(20, "trials in the study, over all workers", check=positive)
    timeout_s: float = param(0.0, "this worker starts no trial after this many seconds; 0 = none",
                             check=non_negative)
    epochs: int = param(20, "epochs per trial", check=positive)
    study_name: str = param("auto", "auto = <target>-<scheme>-<fraction>pct", check=_named)
    storage: str = param("auto", "auto = SQLite in the state folder, or a database URL", check=storage_problem)
    pruner: str = param("median", "stops hopeless trials early", choices=PRUNERS)
    lr_min: float = param(1e-5, "lowest learning rate", check=positive)
    lr_max: float = param(1e-2, "highest learning rate", check=positive)
    weight_decay_max: float = param(1e-3, "highest weight decay", check=non_negative)
    dropout_min: float = param(0.0, "lowest dropout", check=probability)
    dropout_max: float = param(0.6, "highest dropout", check=probability)
    batch_sizes: tuple[int, ...] = param((16, 32, 64), "batch sizes to try")
    trainables: tuple[str, ...] = param(("head2", "head"), "trainable parts to try (finetune)",
                                        choices=TRAINABLE)
    seed: int = param(0, "random seed", check=seed_number)
    final_run: bool = param(True, "then run the target with the best settings")
    reuse: bool = param(True, REUSE_HELP, keyed=False)
    backend: str = _backend("workers")
    ray_address: str = _cluster()
    workers: int = param(1, "workers joining the study at once (backend=ray: one Ray task each)",
                         check=positive, keyed=False)
    cpus_per_worker: float = _resources("worker", 1.0, "CPUs")
    gpus_per_worker: float = _resources("worker", 0.0, "GPUs")

    def validate(self) -> None:
        _local_only(self.backend, "workers", self.workers, "worker")
        check_metric(self.metric)
        SearchSpace(**{f.name: getattr(self, f.name) for f in fields(SearchSpace)})  # its ranges' checks


PACK = ("none", "splits", "index")


@dataclass(frozen=True)
class Fetch(Spec):
    """Download and verify BigEarthNet v2.0 (Zenodo record 10891137), index it from its reference maps and
    pack chosen patches straight from BigEarthNet-S2.tar.zst (docs/data.md, "The real archive")."""

    entry_point: ClassVar[str] = "fetch"
    parts: tuple[str, ...] = param(tuple(FETCH_FILES), "files of the record: s2 (BigEarthNet-S2.tar.zst, 63 GB), "
                                   "maps (Reference_Maps.tar.zst), metadata, snow (the snow/cloud/shadow table)",
                                   choices=tuple(FETCH_FILES))
    dest: str = _in_data("reben", "folder of the files (those already there are verified and used)")
    url: str = _path_param(ZENODO, "base URL of the files: the record's, a mirror, or a local copy (file:// or a "
                                   "folder)")
    checksums: str = _path_param("pinned", "file of md5sum's `<md5>  <file name>` lines; pinned = the package's table "
                                           "of the record's sizes and md5 values")
    extract: bool = param(False, "unpack the .tar.zst files into dest and index and pack from there")
    index: str = _in_data("reben/index", "folder of index.parquet, built from the maps and metadata; none = no index")
    pack: str = param("none", "splits: the patches of `splits` (for `scheme`) into the store their fine-tunes "
                              "read; index: the index's patches of official_split, countries and tiles",
                      choices=PACK)
    splits: str = _path_param("none", "pack=splits: create_splits output (folder or runs:/ URI)")
    scheme: str = param("basic", "pack=splits: its labelling scheme", check=_split_scheme)
    official_split: str = param("all", "pack=index: all, or train / validation / test joined by '+'",
                                check=_official_split)
    countries: str = param("all", "pack=index: all, or countries joined by ','",
                           check=_all_or(",", r"\S.*", "countries"))
    tiles: str = param("all", "pack=index: all, or Sentinel-2 tiles (e.g. 33UUP) joined by ','",
                       check=_all_or(",", r"\d{2}[A-Z]{3}", "Sentinel-2 tiles such as 33UUP"))
    bands: str = param("study", "pack: study, all, or band names joined by ','", check=_bands)
    workers: int = param(0, "pack: processes at work, 1 = this one alone (streamed: this one reads the archive, "
                            "the n - 1 others decode); 0 = one per core", check=_whole, keyed=False)

    def validate(self) -> None:
        if self.pack != "none" and "s2" not in self.parts:
            raise UserError("parts: pack reads BigEarthNet-S2.tar.zst; add s2")
        if self.pack != "none" and self.index == "none":
            raise UserError("index: pack chooses patches of the index; leave it at auto or name a folder")
        if self.pack == "splits" and self.splits == "none":
            raise UserError("splits: pack=splits needs the create_splits output whose patches it packs")


def _stride(value: int) -> str | None:
    return None if 0 < value <= 120 else "expected window steps of 1..120 px"


def _threshold(value: str) -> str | None:
    return _auto_or_number(value, lambda x: 0 < x < 1, "a probability in (0, 1)")


def _mask(value: str) -> str | None:
    try:
        parse_mask(value)
    except UserError:
        return "expected none or SCL classes among 0..11 joined by ','"
    return None


@dataclass(frozen=True)
class Predict(Spec):
    """Map irrigation over a Sentinel-2 L2A scene: probability and binary COGs, a quicklook, a summary."""

    entry_point: ClassVar[str] = "predict"
    scene: str = _path_param(help="a Sentinel-2 L2A product folder (*.SAFE), a folder of per-band GeoTIFFs "
                                  "(B02.tif ... SCL.tif) or a STAC item (.json)")
    model: str = _path_param("models:/simclr-s2-irrigation@champion", "registered classifier: models:/<name>@<alias> "
                                                                      "or models:/<name>/<version>")
    out: str = _path_param("outputs/predict", "folder of the maps, one subfolder per scene (also logged as artifacts)")
    stride: int = param(120, "window step in 10 m pixels: 120 = windows side by side, maps at 1.2 km; less = "
                             "overlapping windows averaged, maps at 10 m", check=_stride)
    threshold: str = param("auto", "probability for the binary map; auto = the one chosen for this version on "
                                   "natural-prevalence validation (by its run, or by evaluate off its own ground), "
                                   "else 0.5", check=_threshold)
    mask: str = param(",".join(map(str, DEFAULT_MASK)),
                      "SCL classes left out: 0 no data, 1 saturated, 3 cloud shadow, 8/9 cloud, 10 cirrus, 11 "
                      "snow; none = no SCL class (no data, DN 0, is always left out)", check=_mask)
    batch_size: int = param(64, "windows per forward pass", check=positive)


ENTRY_POINTS: dict[str, type[Spec]] = {cls.entry_point: cls for cls in (
    MakeDemoData, BuildIndex, CreateSplits, Pretrain, ImportEncoder, Finetune, Baseline, Evaluate, Grid,
    Compare, Promote, Tune, Predict, Fetch)}
