"""main: the study's grid as child runs of one parent: encoders x fractions x schemes x seeds fine-tunes
plus a baseline per (scheme, fraction, seed). A finished cell is reused, an interrupted one resumed from
its checkpoint, and a failed one reported while the rest go on: with backend=local each cell goes through
`ensure_step` in this process, one after another; with backend=ray each is a Ray task running the same
stage on a cluster (simclr_s2.cluster.dispatch).

With split=auto the grid draws its splits itself (create_splits steps, reused when finished), one per
scheme and Variant: each fold of a cross-validation split_kind, each label rule of min_fractions x
ambiguous. Those are dimensions of the grid like seeds: every cell records its variant as tags (fold,
held_out, min_fraction, ambiguous: its label rule whether or not the grid sweeps label rules) and a fold
also as the cell's `fold` parameter, so compare can aggregate over folds and show a label rule's effect. A
given split that is one fold of such a kind gives its cells the fold its manifest names. A reused cell keeps
the tags of the run that made it: cells.csv reports those (the label rule as compare reads it).

With encoders=auto and folds, every demo recipe is pretrained once per fold (fold_encoders), on the index
less every evaluation set of that fold's splits: an encoder pretrained on the whole archive has seen each
fold's test ground, and the leakage guard refuses it. Each fold's cells fine-tune their fold's encoder and
record its fold (tag encoder_fold)."""

from __future__ import annotations

import itertools
import json
import logging
import re
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import pandas as pd
from torch import OutOfMemoryError

from simclr_s2 import disk
from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS, Bands
from simclr_s2.bigearthnet.index import index_digest, load_index
from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages import auto
from simclr_s2.stages.base import Stage, ensure_step
from simclr_s2.stages.classifier import CLASSIFIERS, Classifier, ClassifierSpec, encoder_label
from simclr_s2.stages.data import CREATE_SPLITS, scheme_name
from simclr_s2.stages.inputs import SOURCE, fetcher
from simclr_s2.stages.pretrain import DEMO_ENCODERS, demo_encoder, demo_encoder_spec, encoder_step
from simclr_s2.study.comparison import DEFAULT_LABEL_RULE, fold_encoder_alias, label_rule
from simclr_s2.study.split_kinds import fold_names, is_cv
from simclr_s2.study.splits import SplitManifest, load_manifest
from simclr_s2.tracking.artifacts import Fetcher, is_remote
from simclr_s2.tracking.door import PARENT_TAG, Tracking
from simclr_s2.tracking.names import ENCODER_MODEL
from simclr_s2.tracking.registry import BAND_LIST_TAG, ModelRef, encoder_uri
from simclr_s2.tracking.tracker import StageRun, Step, Tracker

log = logging.getLogger(__name__)

TO_MAKE = "(to make)"
FOLDS = "folds"  # resolved_folds: every fold name of a cross-validation split_kind, joined by ','
GIVEN_FOLD, GIVEN_HELD_OUT = "fold", "held_out"  # resolved_fold / resolved_held_out: the given split's fold
BASELINE_BANDS = "baseline_bands"  # resolved_baseline_bands: the other band lists baselines train on, ';'-joined
STUDY_SET = "study"  # the baselines' own bands (Baseline's default): the band list the demo's encoders read
FOLD_ENCODER = "fold_encoder_"  # resolved fold_encoder_<fold>_<name>: the encoder pretrained for that fold
ENCODER_FOLD_TAG = "encoder_fold"  # on a cell's run: the fold its encoder was pretrained for


@dataclass(frozen=True)
class Variant:
    """One split of a scheme the grid draws: a fold of a cross-validation kind (None: no folds) and a label
    rule. The default one (no fold, the default rule) is the split `auto` always meant."""

    fold: int | None = None
    held_out: str | None = None  # the fold's number, or its country
    min_fraction: str = DEFAULT_LABEL_RULE["min_fraction"]
    ambiguous: str = DEFAULT_LABEL_RULE["ambiguous"]

    @property
    def suffix(self) -> str:
        """What tells its cells and resolved split apart: "" for the default, else e.g. "-f2-mf0.05-neg"."""
        return "".join([f"-f{self.fold}" if self.fold is not None else "",
                        f"-mf{self.min_fraction}" if self.min_fraction != DEFAULT_LABEL_RULE["min_fraction"] else "",
                        "-neg" if self.ambiguous == "negative" else ""])

    def splits_params(self, kind: str) -> dict[str, object]:
        """create_splits' parameters beyond index and scheme."""
        return {"kind": kind, "fold": self.fold or 0, "min_fraction": self.min_fraction, "ambiguous": self.ambiguous}

    def tags(self, drawn: bool) -> dict[str, str]:
        """The cell's tags: its fold, and its label rule where the grid drew its split (`drawn`; a given
        split's rule is not known here), the default rule too, so a cell reads the same in every grid."""
        fold = {"fold": str(self.fold), "held_out": str(self.held_out)} if self.fold is not None else {}
        return {**fold, **({"min_fraction": self.min_fraction, "ambiguous": self.ambiguous} if drawn else {})}


@dataclass(frozen=True)
class Cell:
    stage: str  # finetune or baseline
    name: str  # encoder name or baseline arch, for people
    params: dict[str, object] = field(hash=False)
    variant: Variant = Variant()
    tags: dict[str, str] = field(default_factory=dict, hash=False)

    @property
    def label(self) -> str:
        p = self.params
        return f"{self.stage}-{self.name}-{p['scheme']}-{p['fraction']}pct-s{p['seed']}{self.variant.suffix}"

    @property
    def classifier(self) -> Classifier:
        """The stage the cell runs, asked by its entry point name."""
        return CLASSIFIERS[self.stage]

    @property
    def spec(self) -> ClassifierSpec:
        return build(self.classifier.spec, self.params)


@dataclass(frozen=True)
class Protocol:
    """What the cells train: the fine-tuned parts, the baseline networks and the demo encoders' network."""

    trainables: tuple[str, ...]
    baseline_archs: tuple[str, ...]
    encoder_arch: str
    seeds: tuple[int, ...]


STUDY_SEEDS = 5
"""compare resamples seeds (study/stats.py): fewer than 5 leave its intervals and tests to chance."""
STUDY = Protocol(trainables=("all",), baseline_archs=("resnet152",), encoder_arch="resnet152",
                 seeds=tuple(range(STUDY_SEEDS)))
"""The original code's choices (STUDY.md): ResNet-152 encoders, every layer fine-tuned, ResNet-152
baselines from scratch; and seeds 0-4 unless more are given. The write-up's frozen variant is the custom
default (head2)."""


def protocol(spec: specs.Grid) -> Protocol:
    if spec.protocol == "custom":
        return Protocol(spec.trainable, spec.baseline_arch, "resnet18", spec.seeds)
    defaults = specs.Grid()
    if (spec.trainable, spec.baseline_arch) != (defaults.trainable, defaults.baseline_arch):
        raise UserError("protocol: study sets trainable (all) and baseline_arch (resnet152) itself; leave them "
                        "at their defaults, or use protocol=custom")
    if spec.seeds == defaults.seeds:
        return STUDY
    if len(set(spec.seeds)) < STUDY_SEEDS:
        raise UserError(f"seeds: protocol=study runs at least {STUDY_SEEDS} seeds (compare resamples them); "
                        f"got {len(set(spec.seeds))}; leave seeds out (0-4) or give {STUDY_SEEDS} or more")
    return replace(STUDY, seeds=spec.seeds)


def encoder_name(uri: str) -> str:
    """An encoder's name in its cells' labels, the grid's resolved_encoder_<name> and a fold encoder's alias:
    letters, digits, '_' and '-' only (MLflow keys and aliases), short: encoder_label's (the alias,
    v<version>, a file's stem), or run-<id> for a run's model, after the model's name unless it is
    ENCODER_MODEL. The URI stays the cells' `pretrained`."""
    run, model = re.fullmatch(r"runs:/([0-9a-f]+)(?:/.*)?", uri), re.match(r"models:/([^/@]+)", uri)
    label = _word(f"run-{run[1][:12]}" if run else encoder_label(uri))
    return label if not model or model[1] == ENCODER_MODEL else f"{_word(model[1])}-{label}"


def _word(text: str) -> str:
    return re.sub(r"[^\w-]+", "-", text).strip("-") or "encoder"


def _encoder_items(spec: specs.Grid) -> dict[str, str]:
    """Name -> URI of each encoder given (a bare alias is of ENCODER_MODEL: registry.encoder_uri); two that
    would share a name are one line naming both, not one silently dropped."""
    named: dict[str, str] = {}
    if spec.encoders == specs.NO_ENCODERS:
        return named
    for item in (s.strip() for s in spec.encoders.split(",")):
        uri = encoder_uri(item)
        if (other := named.setdefault(encoder_name(uri), uri)) != uri:
            raise UserError(f"encoders: {other} and {uri} would both be named {encoder_name(uri)!r} in the "
                            "grid; give one as its registry version (models:/<name>/<version>) or rename a file")
    return named


def given_encoders(spec: specs.Grid, ctx: Context, check: bool = False) -> dict[str, ModelRef]:
    """Encoder name (encoder_name) -> where the `encoders` parameter points (none for `auto`), each resolved
    once: a registry version pinned (uri models:/name/<version>, so a cell's key names the exact weights,
    with its tags and run; a runs:/ URI as the version its run registered), anything else as given. An
    encoder the registry lacks stays as given and fails its cells while the rest go on, unless `check` (a
    dry run): then it is the command's one-line error, as is a local file that is not there."""
    if spec.encoders == "auto":
        return {}
    refs = {}
    for name, uri in _encoder_items(spec).items():
        refs[name] = ModelRef(uri, "", {}, None)
        if uri.startswith(("models:/", "runs:/")):
            try:
                refs[name] = Tracking.of(ctx).encoder_ref(uri, "encoders")
            except UserError:
                if check:
                    raise
        elif check and not is_remote(uri) and not Path(uri).expanduser().exists():
            raise UserError(f"encoders: {uri} does not exist")
    return refs


def encoder_uris(spec: specs.Grid, ctx: Context, make: bool, given: Mapping[str, ModelRef]) -> dict[str, str]:
    """Encoder name -> the URI its cells fine-tune: `given`'s, or for `auto` the demo's three encoders,
    pretrained (or reused); without `make` one not yet pretrained shows as `(to make)`."""
    if spec.encoders == "auto":
        arch = protocol(spec).encoder_arch
        return {name: demo_encoder(ctx, name, make, arch) or TO_MAKE for name in DEMO_ENCODERS}
    return {name: ref.uri for name, ref in given.items()}


def variants(spec: specs.Grid, folds: list[str]) -> list[Variant]:
    """The grid's splits per scheme: folds (`folds`: the kind's fold names, [] without folds) x label rules."""
    held: list[tuple[int | None, str | None]] = [(None, None)]
    if folds:
        chosen = range(len(folds)) if spec.folds == "all" else [int(f) for f in spec.folds.split(",")]
        if bad := [f for f in chosen if f >= len(folds)]:
            raise UserError(f"folds: {bad[0]} is not a fold of {spec.split_kind}, which has folds 0 to "
                            f"{len(folds) - 1}")
        held = [(f, folds[f]) for f in chosen]
    return [Variant(f, name, mf, amb) for (f, name), mf, amb in itertools.product(held, spec.min_fractions,
                                                                                  spec.ambiguous)]


def plan(spec: specs.Grid, encoders: Mapping[str, str], split: Mapping[str, str],
         drawn: list[Variant] | None = None, per_fold: Mapping[int, Mapping[str, str]] | None = None,
         baseline_bands: Sequence[str] = (STUDY_SET,)) -> list[Cell]:
    """Every cell of the grid; `split` maps each scheme and variant (split_key) to the split its cells read;
    `per_fold`: fold -> the encoders pretrained for it, which that fold's cells fine-tune beside `encoders`
    (tagged encoder_fold); `baseline_bands`: the bands each baseline trains on (baselines_bands)."""
    chosen = protocol(spec)
    cells = []
    for scheme in spec.schemes:
        for variant in drawn or [Variant()]:
            tags = variant.tags(spec.split == "auto")
            own = (per_fold or {}).get(variant.fold, {}) if variant.fold is not None else {}
            for fraction in spec.fractions:
                for seed in chosen.seeds:
                    common = {"scheme": scheme, "fraction": fraction, "seed": seed, "epochs": spec.epochs,
                              "split": split[split_key(scheme, variant)],
                              **({"fold": str(variant.fold)} if variant.fold is not None else {})}
                    cells += [Cell("finetune", f"{name}-{trainable}" if len(chosen.trainables) > 1 else name,
                                   {**common, "pretrained": uri, "trainable": trainable}, variant,
                                   {**tags, **({ENCODER_FOLD_TAG: str(variant.fold)} if name in own else {})})
                              for name, uri in {**encoders, **own}.items() for trainable in chosen.trainables]
                    if spec.baseline:
                        cells += [Cell("baseline", arch if bands == STUDY_SET else f"{arch}-{_word(bands)}",
                                       {**common, "arch": arch, **({} if bands == STUDY_SET else {"bands": bands})},
                                       variant, tags)
                                  for arch in chosen.baseline_archs for bands in baseline_bands]
    return cells


def baselines_bands(given: Mapping[str, ModelRef]) -> list[str]:
    """The bands the baselines train on: the study's, and each other band list a given encoder reads (its
    registered band_list: what its fine-tunes read with bands=auto), so compare, which pairs a fine-tune
    only with baselines of its bands, has one for every encoder the registry describes."""
    lists = (Bands.parse(ref.tags[BAND_LIST_TAG]) for ref in given.values() if ref.tags.get(BAND_LIST_TAG))
    return list(dict.fromkeys([STUDY_SET, *(_band_set(b) for b in lists if tuple(b) != STUDY_BANDS)]))


def _band_set(bands: Bands) -> str:
    """A band list as Baseline's `bands` spells it (and a baseline cell's label): `all` for BigEarthNet's 12
    in their order, as a person running `baseline bands=all` does (one key for both), else the names."""
    return "all" if tuple(bands) == BANDS else bands.text


def split_key(scheme: str, variant: Variant) -> str:
    """The name a split is resolved under (resolved_split_<key>): the scheme, then the variant's suffix."""
    return scheme + variant.suffix.replace("-", "_")


def all_folds(spec: specs.Grid, ctx: Context, index: str) -> list[str]:
    """The fold names of the grid's split_kind ([] without folds, or with a split given): country folds are
    the countries of `index`, read here."""
    if spec.split != "auto" or not is_cv(spec.split_kind):
        return []
    if spec.split_kind != "country":
        return fold_names(None, spec.split_kind)
    if index == TO_MAKE:
        raise UserError("folds: country folds are the countries of the demo index, which is not made yet; run "
                        "without dry_run first")
    return fold_names(load_index(fetcher(ctx).path(index, "index")), "country")


def _index_ref(spec: specs.Grid, ctx: Context, make: bool) -> str:
    return (auto.demo_index(ctx, make) or TO_MAKE) if spec.index == "auto" else spec.index


def given_split(spec: specs.Grid, fetch: Fetcher) -> tuple[Variant, SplitManifest, str]:
    """The given split's variant (its fold, as the manifests of its schemes name it; Variant() when it is
    not a fold), one scheme's manifest and the index it was drawn from. One line, before any cell runs, when
    it lacks a scheme or one of the fractions (the splits the grid draws hold create_splits' fractions:
    Grid.validate checks those)."""
    folder = fetch.path(spec.split, "split")
    manifests = [load_manifest(folder, scheme) for scheme in spec.schemes]
    for scheme, manifest in zip(spec.schemes, manifests, strict=True):
        if missing := [f for f in spec.fractions if f not in manifest.fractions]:
            raise UserError(f"fractions: {missing} not in the {scheme!r} splits of {spec.split}: found "
                            f"{list(manifest.fractions)}")
    if len(found := {(m.fold, m.held_out) for m in manifests}) > 1:
        raise UserError(f"split: the schemes of {spec.split} hold out different folds {sorted(found, key=str)}; "
                        "give a split drawn as one fold")
    [(fold, held_out)] = found
    index = json.loads((folder / spec.schemes[0] / SOURCE).read_text())["index"]
    return Variant(fold, held_out), manifests[0], index


def splits(spec: specs.Grid, ctx: Context, make: bool, drawn: list[Variant], index: str) -> dict[str, str]:
    """split_key -> the split its cells read: the one given, or each drawn from `index` (create_splits)."""
    if spec.split != "auto":
        return {split_key(scheme, variant): spec.split for scheme, variant in itertools.product(spec.schemes, drawn)}
    refs = {}
    for scheme, variant in itertools.product(spec.schemes, drawn):
        made = None if index == TO_MAKE else auto.step_run(
            CREATE_SPLITS, build(specs.CreateSplits, {"index": index, "scheme": scheme,
                                                      "natural_test": spec.natural_test,
                                                      "natural_share": spec.natural_share,
                                                      **variant.splits_params(spec.split_kind)}), ctx, make)
        refs[split_key(scheme, variant)] = TO_MAKE if made is None else f"runs:/{made.info.run_id}/splits"
    return refs


def check_drawing(spec: specs.Grid, fetch: Fetcher, index: str) -> None:
    """For a dry run of split=auto, what create_splits would refuse at once, with its own lines: a scheme it
    cannot resolve, and an index (unless still to be made) that is not there or is no index."""
    for scheme in spec.schemes:
        scheme_name(scheme)
    if index != TO_MAKE:
        load_index(fetch.path(index, "index"))


def check_demo_encoders(ctx: Context, fetch: Fetcher, index: str) -> None:
    """encoders=auto without folds fine-tunes the demo's three encoders, pretrained on the demo archive:
    one line for the splits of another index (the real archive), whose encoders must be pretrained on it
    (with folds the grid does that itself, once per fold)."""
    demo = auto.demo_index(ctx, make=False)
    if index == TO_MAKE or (demo is not None and index_digest(fetch.path(index, "index"))
                            == index_digest(fetch.path(demo, "index"))):
        return
    raise UserError(f"encoders: auto fine-tunes the demo's three encoders, pretrained on the demo archive, not on "
                    f"the index of these splits ({index}); pretrain on it first (pretrain --index <that index> "
                    "--exclude-split <the splits> --name ben) and give encoders=ben")


def recipes(spec: specs.Grid, ctx: Context, given: Mapping[str, ModelRef]) -> dict[str, specs.Pretrain]:
    """What a fold grid pretrains once per fold, by encoder name: the demo recipes (encoders=auto), or each
    `given` registry version that was pretrained here, with the settings its run logged. Imported encoders,
    files and versions the registry lacks have no recipe: every fold uses them as they are."""
    arch = protocol(spec).encoder_arch
    if spec.encoders == "auto":
        return {name: demo_encoder_spec(ctx, name, arch) for name in DEMO_ENCODERS}
    keyed = specs.Pretrain().given()
    found = {}
    for name, ref in given.items():
        if ref.version and ref.run_id and ref.tags.get("stage") == "pretrain":
            params = Tracking.of(ctx).get_run(ref.run_id).data.params
            found[name] = build(specs.Pretrain, {k: v for k, v in params.items() if k in keyed})
    return found


def fold_encoders(spec: specs.Grid, ctx: Context, make: bool, split: Mapping[str, str], drawn: list[Variant],
                  index: str, kind: str, given: Mapping[str, ModelRef]) -> dict[int, dict[str, str]]:
    """With folds, fold -> each recipe (`recipes`) pretrained (or reused) for that fold, on `index` less the
    evaluation sets (test and natural test) of every split of the fold (each scheme and label rule),
    registered as fold_encoder_alias (ben-folds-5-f2) and tagged with its fold: a pinned URI, or TO_MAKE."""
    held = {v.fold: v.held_out for v in drawn if v.fold is not None}
    found = recipes(spec, ctx, given) if held else {}
    out: dict[int, dict[str, str]] = {}
    for fold, held_out in held.items():
        refs = list(dict.fromkeys(split[split_key(s, v)] for s in spec.schemes for v in drawn if v.fold == fold))
        out[fold] = dict.fromkeys(found, TO_MAKE)
        if index == TO_MAKE or TO_MAKE in refs:
            continue
        for name, recipe in found.items():
            own = replace(recipe, name=fold_encoder_alias(name, kind, fold), index=index, exclude_split=",".join(refs))
            out[fold][name] = encoder_step(own, ctx, make, {"fold": str(fold), "held_out": str(held_out)}) or TO_MAKE
    return {fold: uris for fold, uris in out.items() if uris}


@dataclass(frozen=True)
class Inputs:
    """What the cells read: the variants drawn, each one's split, the shared encoders and those per fold."""

    drawn: list[Variant]
    split: dict[str, str]
    encoders: dict[str, str]
    per_fold: dict[int, dict[str, str]]
    folds: list[str]  # the split_kind's fold names when the grid draws folds, else []
    baseline_bands: list[str] = field(default_factory=lambda: [STUDY_SET])

    def resolved(self) -> dict[str, str]:
        """As the grid run records them (resolved_<key>), for `cells_of` to read back."""
        given = self.drawn[0] if not self.folds and self.drawn[0].fold is not None else None
        return {**{f"encoder_{k}": v for k, v in self.encoders.items()},
                **{f"split_{k}": v for k, v in self.split.items()},
                **({FOLDS: ",".join(self.folds)} if self.folds else {}),
                **({GIVEN_FOLD: str(given.fold), GIVEN_HELD_OUT: str(given.held_out)} if given else {}),
                **{f"{FOLD_ENCODER}{fold}_{name}": uri for fold, uris in self.per_fold.items()
                   for name, uri in uris.items()},
                **({BASELINE_BANDS: ";".join(self.baseline_bands[1:])} if len(self.baseline_bands) > 1 else {})}


def inputs(spec: specs.Grid, ctx: Context, make: bool, fetch: Fetcher, check: bool = False) -> Inputs:
    """The grid's splits and encoders, made when `make`, else found (TO_MAKE where missing). The index and
    each given encoder are resolved once here and handed down; `check` (a dry run): what the command would
    refuse at once is its one-line error here."""
    if spec.split == "auto":
        index = _index_ref(spec, ctx, make)
        if check:
            check_drawing(spec, fetch, index)
        folds = all_folds(spec, ctx, index)
        drawn, kind = variants(spec, folds), spec.split_kind
    else:
        variant, manifest, index = given_split(spec, fetch)
        drawn, kind, folds = [variant], manifest.kind, []
    demo_data = (spec.split, spec.index) == ("auto", "auto")
    if spec.encoders == "auto" and not demo_data and all(v.fold is None for v in drawn):  # before any drawing
        check_demo_encoders(ctx, fetch, index)
    split = splits(spec, ctx, make, drawn, index)
    given = given_encoders(spec, ctx, check)
    per_fold = fold_encoders(spec, ctx, make, split, drawn, index, kind, given)
    if per_fold and spec.encoders == "auto":  # the demo encoders of the whole archive: not used, not made
        return Inputs(drawn, split, {}, per_fold, folds)
    own = set().union(*per_fold.values())
    shared = {name: uri for name, uri in encoder_uris(spec, ctx, make, given).items() if name not in own}
    return Inputs(drawn, split, shared, per_fold, folds, baselines_bands(given))


def cells_of(spec: specs.Grid, resolved: Mapping[str, str]) -> list[Cell]:
    """The grid's cells from what its run resolved (Inputs.resolved)."""
    if FOLDS in resolved:
        drawn = variants(spec, resolved[FOLDS].split(","))
    elif GIVEN_FOLD in resolved:
        drawn = [Variant(int(resolved[GIVEN_FOLD]), resolved[GIVEN_HELD_OUT])]
    else:
        drawn = variants(spec, [])
    per_fold: dict[int, dict[str, str]] = {}
    for key, uri in _prefixed(resolved, FOLD_ENCODER).items():
        fold, name = key.split("_", 1)
        per_fold.setdefault(int(fold), {})[name] = uri
    others = resolved[BASELINE_BANDS].split(";") if BASELINE_BANDS in resolved else []
    return plan(spec, _prefixed(resolved, "encoder_"), _prefixed(resolved, "split_"), drawn, per_fold,
                [STUDY_SET, *others])


def _step(cell: Cell, ctx: Context) -> Step | None:
    """The cell's step, found without making anything (None while its encoder or split is to be made)."""
    if TO_MAKE in map(str, cell.params.values()):
        return None
    stage = cell.classifier
    try:
        return stage.step(cell.spec, stage.resolve(cell.spec, ctx, make=False))
    except UserError:
        return None


def status(cell: Cell, ctx: Context) -> str:
    """What running the cell would do: reuse a finished run, resume an interrupted one, or run anew."""
    step, tracker = _step(cell, ctx), Tracker(ctx)
    if step is None:
        return "run"
    if ctx.reuse and tracker.find_complete(step):
        return "reuse"
    return "resume" if tracker.unfinished(step) else "run"


def _prefixed(values: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k.removeprefix(prefix): v for k, v in values.items() if k.startswith(prefix)}


class Grid(Stage[specs.Grid]):
    spec = specs.Grid

    def resolve(self, spec: specs.Grid, ctx: Context, make: bool = True) -> dict[str, str]:
        ctx = ctx.with_reuse(spec.reuse)
        return inputs(spec, ctx, make, fetcher(ctx)).resolved()

    def run_name(self, spec: specs.Grid, resolved: Mapping[str, str]) -> str:
        return f"grid-{'-'.join(spec.schemes)}"

    def tags(self, spec: specs.Grid, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"stage": "grid"}

    def dry_run(self, spec: specs.Grid, ctx: Context) -> None:
        """Each cell and what running it would do, once its encoders and splits are known to exist."""
        ctx = ctx.with_reuse(spec.reuse)
        with Fetcher.temporary(ctx.tracking_uri) as fetch:  # a dry run writes nothing
            found = inputs(spec, ctx, False, fetch, check=True)
        for cell in plan(spec, found.encoders, found.split, found.drawn, found.per_fold, found.baseline_bands):
            print(f"{status(cell, ctx):7s} {cell.label}  {cell.params.get('pretrained', '')}")

    def execute(self, spec: specs.Grid, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        ctx = ctx.with_reuse(spec.reuse)
        cells = cells_of(spec, resolved)
        rows = on_ray(spec, cells, ctx, run) if spec.backend == "ray" else in_process(cells, ctx, run)
        table = pd.DataFrame(rows)
        print(table[["cell", "status", "run_id"]].to_string(index=False))  # first: writing the table may fail
        counts = table["status"].value_counts()  # each status logged, 0 too: `metrics.cells_failed = 0` finds them
        run.log_metrics({"cells": len(table), **{f"cells_{k}": int(counts.get(k, 0))
                                                 for k in ("finished", "reused", "failed")}})
        with tempfile.TemporaryDirectory() as tmp, disk.writing(Path(tmp) / "cells.csv"):
            table.to_csv(Path(tmp) / "cells.csv", index=False)
            run.log_artifacts(Path(tmp), "grid")
        failed = table[table["status"] == "failed"]
        if len(failed):
            raise UserError(f"{len(failed)} of {len(table)} grid cells failed (see grid/cells.csv): "
                            + "; ".join(failed["cell"].head(3)))


def _row(cell: Cell, run_id: str, status: str, error: str = "",
         recorded: Mapping[str, str] | None = None) -> dict[str, object]:
    """A line of cells.csv: the cell's tags as the run holding it `recorded` them where given (a reused run
    keeps those of the grid that made it), else as planned."""
    tags = cell.tags if recorded is None else recorded_tags(cell, recorded)
    return {"cell": cell.label, "stage": cell.stage, **cell.params, **tags, "run_id": run_id,
            "status": status, "error": error}


def recorded_tags(cell: Cell, tags: Mapping[str, str]) -> dict[str, str]:
    """The cell's tags as a run's `tags` hold them ("" where absent), its label rule read as compare reads
    it (label_rule): what the comparison will take the cell for."""
    read = {**tags, **label_rule(tags)}
    return {key: read.get(key, "") for key in cell.tags}


def in_process(cells: list[Cell], ctx: Context, run: StageRun) -> list[dict[str, object]]:
    """backend=local: the cells one after another in this process."""
    rows = []
    for i, cell in enumerate(cells, 1):
        log.info("grid cell %d/%d %s: %s", i, len(cells), cell.label, status(cell, ctx))
        try:
            done = ensure_step(cell.classifier, cell.spec, ctx, parent_run_id=run.run_id, tags=cell.tags)
            made_here = done.data.tags.get(PARENT_TAG) == run.run_id  # else another command's, reused or awaited
            rows.append(_row(cell, done.info.run_id, "finished" if made_here else "reused", recorded=done.data.tags))
        except Exception as error:
            if (reason := _cell_failure(error, ctx)) is None:
                raise
            log.error("grid cell %s failed: %s", cell.label, reason)
            step = _step(cell, ctx)
            failed = Tracker(ctx).unfinished(step) if step else []
            rows.append(_row(cell, failed[0].info.run_id if failed else "", "failed", str(reason)))
    return rows


def _cell_failure(error: Exception, ctx: Context) -> Exception | None:
    """Why a cell failed when the grid goes on without it (a user error, a GPU out of memory, a full or
    read-only disk: the other cells may fit, and cells.csv says why); None for a bug."""
    if isinstance(error, (UserError, OutOfMemoryError)):
        return error
    return disk.unnamed(error, {"SIMCLR_S2_HOME": ctx.home})


def on_ray(spec: specs.Grid, cells: list[Cell], ctx: Context, run: StageRun) -> list[dict[str, object]]:
    """backend=ray: finished cells reused here without a task; every other cell one Ray task, `parallel`
    at once, each in a child run of this one made before its task starts (see cluster/dispatch.py)."""
    from simclr_s2.cluster import dispatch  # Ray is imported only by the commands that use it

    jobs = [dispatch.Job(cell.label, cell.classifier, cell.params, cell.tags) for cell in cells]
    reused = {job.label: dispatch.finished(job, ctx) for job in jobs}
    todo = [job for job in jobs if reused[job.label] is None]
    run.log_metrics({"cells_dispatched": len(todo)})
    placement = dispatch.Placement(spec.ray_address, spec.cpus_per_cell, spec.gpus_per_cell, spec.parallel,
                                   spec.retries)
    ended = {o.job.label: o for o in dispatch.run_jobs(todo, ctx, run.run_id, placement, "cells")}
    rows = []
    for cell in cells:
        found, outcome = reused[cell.label], ended.get(cell.label)
        if outcome is not None and outcome.reused:  # another command finished it once its task was sent
            found = run.tracking.get_run(outcome.run_id)
        if found is not None:
            rows.append(_row(cell, found.info.run_id, "reused", recorded=found.data.tags))
        else:
            rows.append(_row(cell, outcome.run_id, "failed" if outcome.error else "finished", outcome.error))
    return rows


GRID = Grid()
