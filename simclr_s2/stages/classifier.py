"""finetune and baseline: train the irrigation classifier on one scheme and data fraction, evaluate it on
the shared test set and register it. `train_classifier` is what they and every tuning trial share.

Under torchrun every rank trains: rank 0 resolves the split and the encoder and sends them to the others,
and alone logs, evaluates and registers. --batch-size stays the global batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from simclr_s2.bigearthnet.bands import Bands, bands_or_auto
from simclr_s2.errors import UserError
from simclr_s2.hashing import sha256_file
from simclr_s2.learning import distributed
from simclr_s2.learning.batchnorm import recalibrate, recalibration_wanted
from simclr_s2.learning.datasets import BatchLoader
from simclr_s2.learning.encoder_source import EncoderSource, Scratch
from simclr_s2.learning.feature_cache import cached_training_set
from simclr_s2.learning.metrics import DEFAULT_THRESHOLD, THRESHOLD_SOURCE, near_constant, threshold_source
from simclr_s2.learning.models import IrrigationClassifier, apply_trainable
from simclr_s2.learning.runtime import Progress
from simclr_s2.learning.train import FitConfig, FitResult, fit, predict
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import canonical
from simclr_s2.stages import auto, leakage
from simclr_s2.stages.base import Stage
from simclr_s2.stages.inputs import SplitData, fetcher, load_split_data, loader
from simclr_s2.stages.pretrain import capped, demo_encoder
from simclr_s2.study.comparison import FILE_ENCODER, RECALIBRATED, country_metrics
from simclr_s2.study.promotion import VAL_NEAR_CONSTANT
from simclr_s2.study.splits import (
    MANIFEST,
    NATURAL,
    OVERLAP_METRIC,
    VAL_NATURAL,
    SplitSet,
    load_manifest,
    load_sets,
)
from simclr_s2.study.stats import resampling_groups
from simclr_s2.tracking.artifacts import is_remote
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.evaluation import THRESHOLD_METRIC, log_at_validation_threshold, log_evaluation
from simclr_s2.tracking.names import CLASSIFIER_MODEL
from simclr_s2.tracking.registry import LATEST, SCALING_TAG, encoder_uri
from simclr_s2.tracking.tracker import StageRun
from simclr_s2.tracking.ui import how_to_browse, run_url

ClassifierSpec = specs.Finetune | specs.Baseline
"""The spec of either classifier stage (specs.Training is their base class, what the two share)."""
TUNED_TAG = "simclr_s2.tuned"
REGISTERED_TEST_METRICS = ("test_accuracy", "test_f1", "test_auc", "test_precision", "test_recall")
SPLIT_DIGEST = "split_digest"
"""resolved_split_digest: the sha256 of a given local split folder's manifest for the run's scheme."""
ENCODER_DIGEST = "pretrained_digest"
"""resolved_pretrained_digest: the sha256 of an encoder given as a local state-dict file."""
ALIAS_URI = re.compile(r"models:/[^/@]+@([\w-]+)")  # a registry alias, which may move to another version
MOVING_URI = re.compile(rf"{ALIAS_URI.pattern}|models:/[^/@]+/(?i:{LATEST})")  # an alias, or the newest version


@dataclass(frozen=True)
class Prepared:
    """The inputs one classifier training resolved: its split sets, its encoder's source (pretrained for a
    fine-tune, scratch for a baseline), and what the leakage guard found ("0" for a baseline)."""

    split: SplitData
    encoder: EncoderSource
    overlap: str = "0"


@dataclass
class TrainedClassifier:
    model: IrrigationClassifier
    result: FitResult
    split: SplitData
    bands: Bands
    arch: str
    pretrained: str  # the `pretrained` tag: encoder name, or "scratch"
    policy: str
    batches: Callable[[SplitSet, bool], BatchLoader]
    device: str
    scaling: str


def resolve_training(spec: ClassifierSpec, ctx: Context, make: bool) -> dict[str, str]:
    """`auto` split and encoder, and a capped epoch count; a local split folder's content (SPLIT_DIGEST), a
    registry alias's version and a local encoder file's content (ENCODER_DIGEST) pinned too, so the run's
    key names the data and weights it trains on rather than a folder that may be redrawn in place, an alias
    that may move or a file that may be written over."""
    resolved: dict[str, str] = {}
    if spec.split == "auto":
        resolved["split"] = auto.split_ref(ctx, "auto", spec.scheme, make)
    elif (digest := split_digest(spec.split, spec.scheme)) is not None:
        resolved[SPLIT_DIGEST] = digest
    if spec.pretrained == "auto":
        uri = demo_encoder(ctx, "ben", make)
        if uri is None:
            raise UserError(f"pretrained: auto names the demo encoder, and {auto.NONE_YET}; "
                            "run finetune (which makes it) or give an encoder")
        resolved["pretrained"] = uri
    elif spec.pretrained is not None and (pinned := pinned_alias(spec.pretrained, ctx)) is not None:
        resolved["pretrained"] = pinned
    elif spec.pretrained is not None and (digest := file_digest(spec.pretrained)) is not None:
        resolved[ENCODER_DIGEST] = digest
    return capped(resolved, ctx, spec.epochs)


def split_digest(ref: str, scheme: str) -> str | None:
    """What a local split folder holds for `scheme`: its manifest's sha256, the manifest listing every set's
    sha256 (create_splits writes a folder over). None for a runs:/ or other remote split, whose content
    does not change under its URI, and for a folder without that manifest: the run then fails on it, saying
    why."""
    if is_remote(ref):
        return None
    manifest = Path(ref).expanduser() / scheme / MANIFEST
    return sha256_file(manifest) if manifest.is_file() else None


def file_digest(ref: str) -> str | None:
    """What an encoder given as a local file holds: its sha256. None for a registry or run URI, whose weights
    do not change under it, and for a missing file: the run then fails on it, saying why."""
    if is_remote(ref):
        return None
    path = Path(ref).expanduser()
    return sha256_file(path) if path.is_file() else None


def pinned_alias(uri: str, ctx: Context) -> str | None:
    """A registry alias (models:/name@alias, or the alias alone: encoder_uri) or models:/name/latest as the
    version it names now, models:/name/<version>; None for any other reference, and for an alias the registry
    lacks: the run then fails on it, saying why."""
    uri = encoder_uri(uri)
    if not MOVING_URI.fullmatch(uri):
        return None
    try:
        return Tracking.of(ctx).encoder_ref(uri).uri
    except UserError:
        return None


def prepare(spec: ClassifierSpec, resolved: Mapping[str, str], ctx: Context) -> Prepared:
    """Load the split sets and the encoder (MLflow look-ups and downloads: rank 0 only)."""
    split = load_split_data(fetcher(ctx), resolved.get("split", spec.split), spec.scheme, spec.fraction,
                            fold=spec.fold)
    if spec.pretrained is None:  # a baseline: the one place the two specs part
        return Prepared(split, Scratch(spec.arch, Bands.parse(spec.bands)))
    pretrained = Tracking.of(ctx).load_pretrained(resolved.get("pretrained", spec.pretrained),
                                                  bands_or_auto(spec.bands))
    seen = leakage.encoder_membership(Tracking.of(ctx), dict(pretrained.tags), pretrained.run_id)
    overlap = leakage.evaluation_status(seen, split, spec.allow_pretraining_overlap)
    return Prepared(split, pretrained, overlap)


RECALIBRATION_PATCHES = 2048
"""The most patches a recalibration reads: BatchNorm means and variances are settled long before (the last
stage of a ResNet sees 16 positions of each 120 px patch), and at the study's scale a pass over every
training patch would cost as much as a head's whole fine-tune."""


def recalibration_set(split: SplitData, seed: int) -> SplitSet:
    """The patches a frozen encoder's BatchNorm statistics are recomputed on: the largest fraction's training
    set (images only, as pretraining used them), so a 1 % fine-tune's few patches do not set them alone; at
    most RECALIBRATION_PATCHES of them, drawn with the run's seed, in file order (its digest stays the set's)."""
    widest = split.widest_train
    if len(widest.names) <= RECALIBRATION_PATCHES:
        return widest
    picked = np.sort(np.random.default_rng(seed).choice(len(widest.names), RECALIBRATION_PATCHES, replace=False))
    return replace(widest, names=[widest.names[i] for i in picked], labels=widest.labels[picked])


def train_classifier(spec: ClassifierSpec, resolved: Mapping[str, str], prepared: Prepared, ctx: Context,
                     run: StageRun, progress: Progress, checkpoint_path: Path | None) -> TrainedClassifier:
    """Build the classifier, apply the trainable-part policy, log the inputs, and train with early
    stopping (on cached features when the frozen part cannot change)."""
    split, encoder = prepared.split, prepared.encoder
    torch.manual_seed(spec.seed)  # the new layers' weights too (torch seeds each process anew)
    model, bands, scaling = encoder.classifier(spec.dropout), encoder.bands, encoder.scaling
    policy = encoder.trainable(spec.trainable)
    counts = apply_trainable(model, policy)
    use_cache = policy != "all" and spec.feature_cache != "false"
    recalibrated = recalibration_wanted(spec.bn_recalibrate, scaling, policy)
    run.log_params({**encoder.provenance(), "index_digest": split.index_digest,
                    "train_digest": split.train.digest, "val_digest": split.val.digest,
                    "test_digest": split.test.digest, "resolved_bands": bands.text, "policy": policy,
                    "trainable_weights": counts.trainable, "frozen_weights": counts.frozen,
                    "feature_cache_used": use_cache, "split_kind": split.kind})
    run.set_tags({"pretrained": encoder.name, "arch": encoder.arch, "trainable": policy,
                  leakage.OVERLAP_TAG: prepared.overlap, **split.label_rule,  # compare's condition, as main's cells
                  RECALIBRATED: str(recalibrated).lower()})  # part of compare's condition
    for context, s in (("training", split.train), ("validation", split.val), ("test", split.test)):
        run.log_table(_frame(s), name=f"{split.scheme}/{s.path.stem}", source=str(s.path), digest=s.digest,
                      context=context)

    device = distributed.device()
    pool = split.pool

    def batches(s: SplitSet, shuffle: bool) -> BatchLoader:
        return loader(ctx, split.archive_root, s.names, s.labels.astype(np.float32), bands, spec.batch_size,
                      shuffle=shuffle, seed=spec.seed, digest=split.index_digest, store_names=pool,
                      scaling=scaling)

    if recalibrated:
        images = recalibrate(model.encoder, batches(recalibration_set(split, spec.seed), False), device)
        run.log_params({"bn_recalibrated_on": images})
    target, train_batches = model, batches(split.train, True).sharded()
    val_batches = batches(split.val, False).sharded()
    if use_cache:
        target, train_batches, val_batches = cached_training_set(
            model, policy, batches(split.train, False).sharded(), val_batches, spec.batch_size, spec.seed,
            device)
    cfg = FitConfig(epochs=int(resolved.get("epochs", spec.epochs)), lr=spec.lr,
                    weight_decay=spec.weight_decay, patience=spec.patience, seed=spec.seed, device=device,
                    amp=device == "cuda")
    result = fit(target, train_batches, val_batches, cfg, checkpoint_path=checkpoint_path, progress=progress)
    return TrainedClassifier(model, result, split, bands, encoder.arch, encoder.name, policy, batches, device,
                             scaling)


def condition_tags(spec: ClassifierSpec, resolved: Mapping[str, str], trained: TrainedClassifier,
                   prepared: Prepared, run: StageRun) -> dict[str, object]:
    """What a registered version says about itself: everything that defines its condition for `compare`
    (encoder and its version: an encoder file's is its content, FILE_ENCODER and its sha256, so two files
    of one name stay two conditions; trainable part, epochs, training settings, tuned or not, split kind,
    what the leakage guard found) and the digests of the data behind it."""
    split, encoder = trained.split, prepared.encoder
    tuned = run.tracking.tags(run.run_id).get(TUNED_TAG, "false")
    digest = resolved.get(ENCODER_DIGEST)
    return {"stage": spec.entry_point, "scheme": spec.scheme, "fraction": spec.fraction, "seed": spec.seed,
            "pretrained": trained.pretrained,
            "encoder_version": encoder.version or (f"{FILE_ENCODER}{digest}" if digest else ""),
            "arch": trained.arch, "trainable": trained.policy, "bands": trained.bands.text,
            SCALING_TAG: trained.scaling, "epochs": resolved.get("epochs", spec.epochs),
            "settings": training_settings(spec), "tuned": tuned, "split_kind": split.kind,
            leakage.OVERLAP_TAG: prepared.overlap, "test_digest": split.test.digest,
            "train_digest": split.train.digest, "val_digest": split.val.digest,
            "index_digest": split.index_digest,
            "encoder_digest": encoder.tags.get(leakage.DIGEST_TAG, ""),
            "run_id": run.run_id}


def training_settings(spec: ClassifierSpec) -> str:
    """The training hyperparameters in one string: runs that differ in them are different conditions."""
    return (f"lr={canonical(spec.lr)} batch={spec.batch_size} wd={canonical(spec.weight_decay)} "
            f"dropout={canonical(spec.dropout)} patience={spec.patience}")


def _frame(s: SplitSet) -> pd.DataFrame:
    return pd.DataFrame({"name": s.names, "label": s.labels})


def evaluate_natural(trained: TrainedClassifier, run: StageRun) -> dict[str, str]:
    """Score the natural-prevalence test set at 0.5 and at the threshold chosen on the fraction's
    natural-prevalence validation set (splits.py), as test_natural_* and test_natural_valthr_*; log the
    split's measured footprint overlap of test. Returns the version tags these add (val_threshold)."""
    split = trained.split
    manifest = load_manifest(split.folder, split.scheme)
    if (share := manifest.overlap_shares().get("test")) is not None:
        run.log_metrics({f"{OVERLAP_METRIC}_test": share})
    if split.natural is None or not manifest.natural_validation:
        return {}
    val = load_sets(split.folder, split.scheme).get(split.fraction, VAL_NATURAL)
    run.log_params({"val_natural_digest": val.digest, "val_natural_patches": len(val.names)})
    scored = predict(trained.model, trained.batches(split.natural, False), trained.device)
    validation = predict(trained.model, trained.batches(val, False), trained.device)
    natural = log_at_validation_threshold(run, scored, split.natural.names, NATURAL, validation,
                                          resampling_groups(split.index, split.kind, split.natural.names))
    source = threshold_source(validation[0])
    return {THRESHOLD_METRIC: repr(natural[THRESHOLD_METRIC]),
            "test_natural_valthr_f1": f"{natural['test_natural_valthr_f1']:.4f}",
            **({THRESHOLD_SOURCE: source} if source else {})}


def validation_near_constant(trained: TrainedClassifier, threshold: float) -> bool:
    """Whether the kept model predicts one class for nearly all of its balanced validation patches at the
    threshold it is operated at (metrics.near_constant): what promote may judge it by, as the test set never
    picks a model."""
    return near_constant(predict(trained.model, trained.batches(trained.split.val, False), trained.device)[1],
                         threshold)


FLAGGED_SETS = {"near_constant": "test", VAL_NEAR_CONSTANT: "validation"}  # a flag's tag -> the set it judges


def constant_note(flags: Mapping[str, bool]) -> str:
    """The summary line's note on a model that predicts one class, or nearly, on a set: a score of such a
    model says little, and its version is flagged (compare marks it, promote never ranks it)."""
    named = [f"{FLAGGED_SETS[tag]} ({tag})" for tag, flagged in flags.items() if flagged]
    return f"; predicts one class, or nearly, on {' and '.join(named)}" if named else ""


def encoder_label(uri: str) -> str:
    """A short name for an encoder reference, for run names: the alias, v<version>, or the file's stem."""
    if match := ALIAS_URI.fullmatch(uri):
        return match.group(1)
    if match := re.fullmatch(r"models:/[^/@]+/(\d+)", uri):
        return f"v{match.group(1)}"
    return Path(uri.rstrip("/")).stem


class Classifier(Stage[ClassifierSpec]):
    """finetune or baseline, as one stage class with two specs."""

    system_metrics = True

    def __init__(self, spec_cls: type[ClassifierSpec]) -> None:
        self.spec = spec_cls  # type: ignore[misc]

    def resolve(self, spec: ClassifierSpec, ctx: Context, make: bool = True) -> dict[str, str]:
        return resolve_training(spec, ctx, make)

    def run_name(self, spec: ClassifierSpec, resolved: Mapping[str, str]) -> str:
        """Named before the encoder is loaded: by the encoder's URI (its alias), or a baseline's network."""
        if spec.pretrained is None:
            return self._named(spec, spec.arch)
        return self._named(spec, "ben" if spec.pretrained == "auto" else encoder_label(spec.pretrained))

    def _named(self, spec: ClassifierSpec, who: str) -> str:
        return f"{self.name}-{who}-{spec.scheme}-{spec.fraction}pct-s{spec.seed}"

    def tags(self, spec: ClassifierSpec, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"scheme": spec.scheme, "fraction": spec.fraction, "seed": spec.seed}

    def execute(self, spec: ClassifierSpec, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        prepared = distributed.main_only(lambda: prepare(spec, resolved, ctx))
        trained = train_classifier(spec, resolved, prepared, ctx, run, run.progress(),
                                   run.checkpoint_dir / "train.safetensors")
        if not distributed.is_main():
            return
        run.close_publisher(wait=True)
        result = trained.result
        run.log_metrics({"best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
                         **{f"best_{k}": v for k, v in result.best_val.items()}})
        run_name = self._named(spec, prepared.encoder.label)  # a fine-tune's encoder, loaded, says its name
        run.set_tags({"mlflow.runName": run_name})
        split = trained.split
        scored = predict(trained.model, trained.batches(split.test, False), trained.device)
        natural = evaluate_natural(trained, run)
        operated_at = float(natural.get(THRESHOLD_METRIC, DEFAULT_THRESHOLD))
        test = log_evaluation(run, scored, split.test.names, "test",
                              groups=resampling_groups(split.index, split.kind, split.test.names),
                              operated_at=operated_at)
        # compare's per-country table
        run.log_metrics(country_metrics(split.index, split.test.names, *scored[:2]))
        flags = {"near_constant": bool(test["test_near_constant"]),  # compare flags its cell
                 VAL_NEAR_CONSTANT: validation_near_constant(trained, operated_at)}  # promote never ranks it
        run.set_tags({k: "true" for k, flagged in flags.items() if flagged})
        summary = {**{k: f"{v:.4f}" for k, v in result.best_val.items()},
                   **{k: f"{test[k]:.4f}" for k in REGISTERED_TEST_METRICS}, **natural,
                   **{k: str(flagged).lower() for k, flagged in flags.items()}}
        version = ""
        if spec.register:
            example = trained.batches(split.val, False).source.read_batch(np.arange(2))[0].numpy()
            version = run.tracking.log_and_register(
                run.run_id, trained.model, CLASSIFIER_MODEL, example, step=max(result.best_epoch, 0),
                finite={**result.best_val, **{k: test[k] for k in REGISTERED_TEST_METRICS}},
                tags={**condition_tags(spec, resolved, trained, prepared, run), **summary})
        print(f"{run_name}: best epoch {result.best_epoch + 1} of {result.epochs_run}, "
              f"val F1 {summary['val_f1']}, test F1 {summary['test_f1']}, "
              f"test accuracy {summary['test_accuracy']} ({len(split.test.names)} balanced test patches)"
              f"{constant_note(flags)}")
        registered = f"; model {CLASSIFIER_MODEL} version {version}" if version else ""
        print(f"run {run.run_id} in experiment {ctx.experiment_name}{registered}: "
              f"{run_url(ctx.tracking_uri, ctx.experiment_id, run.run_id)}")
        print(f"to browse: {how_to_browse(ctx.tracking_uri)}")


FINETUNE = Classifier(specs.Finetune)
BASELINE = Classifier(specs.Baseline)
CLASSIFIERS = {stage.name: stage for stage in (FINETUNE, BASELINE)}
"""The two stages by entry point name, the name `tune`'s target gives."""
