"""evaluate: score a registered classifier on a split set. It writes nothing but its own run: `auto` finds
the demo splits without making them, downloads go to a temporary folder, and the patches are read from
the split's packed store when one is there (what training packed, or `fetch pack=splits` streamed with no
GeoTIFFs extracted), else from the GeoTIFFs rounded as the store holds them: the same probabilities either
way, and those finetune's test scoring gave (inputs.loader).

On a test set the metrics come twice: at the 0.5 threshold (`<set>_*`), and at the threshold with the best
F1 on the natural-prevalence validation set of the model's own fraction (`val_threshold`,
`<set>_valthr_*`; splits.py: as many labels as that fraction's validation set): on the natural-prevalence
test set (test_natural) that is how a classifier meant for real prevalence would be operated. Splits
made without natural sets fall back to the balanced validation set at `fraction` (tag threshold_set): its
threshold is reported, never operated at (thresholds.operating).
The leakage guard checks the scored set against the encoder's pretraining patches, and a test set and the
validation set its threshold is chosen on against the classifier's own ground (leakage.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import torch

from simclr_s2.bigearthnet.bands import ZSCORE
from simclr_s2.errors import UserError
from simclr_s2.learning.datasets import BatchLoader
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.learning.train import predict
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.stages import auto, leakage
from simclr_s2.stages.base import Stage
from simclr_s2.stages.inputs import SplitData, load_split_data, loader
from simclr_s2.study.splits import NATURAL, VAL_NATURAL, SplitSet, load_sets
from simclr_s2.tracking.artifacts import Fetcher
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.evaluation import log_at_validation_threshold, log_evaluation
from simclr_s2.tracking.registry import SCALING_TAG, ModelRef, classifier_bands
from simclr_s2.tracking.thresholds import OVERLAP_TAG as THRESHOLD_OVERLAP_TAG
from simclr_s2.tracking.thresholds import SET_TAG as THRESHOLD_SET_TAG
from simclr_s2.tracking.thresholds import operating
from simclr_s2.tracking.tracker import StageRun

log = logging.getLogger(__name__)


class Evaluate(Stage[specs.Evaluate]):
    spec = specs.Evaluate
    read_only = True

    def resolve(self, spec: specs.Evaluate, ctx: Context, make: bool = False) -> dict[str, str]:
        return {"split": auto.split_ref(ctx, "auto", spec.scheme, make=False)} if spec.split == "auto" else {}

    def run_name(self, spec: specs.Evaluate, resolved: Mapping[str, str]) -> str:
        return f"evaluate-{spec.scheme}-{spec.set}"

    def tags(self, spec: specs.Evaluate, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"scheme": spec.scheme}

    def execute(self, spec: specs.Evaluate, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        model, ref = run.tracking.load_logged(spec.model_uri, IrrigationClassifier, "model_uri")
        version, tags = ref.version, ref.tags
        same_scheme(tags, spec.scheme, spec.model_uri)
        bands = classifier_bands(ref, model, spec.model_uri, "model_uri", "evaluate reads the archive's bands by name")
        with Fetcher.temporary(ctx.tracking_uri) as fetch:
            split = load_split_data(fetch, resolved.get("split", spec.split), spec.scheme, spec.fraction)
            chosen = split.set(spec.set)
            overlap = leakage.status(leakage.classifier_encoder(run.tracking, tags), chosen.names, split.index,
                                     spec.set, spec.allow_pretraining_overlap)
            validation, own = _own_ground(run.tracking, fetch, ref, split, spec)
            run.log_params({"resolved_model": version or spec.model_uri, f"{spec.set}_digest": chosen.digest})
            run.set_tags({**{k: tags[k] for k in ("pretrained", "arch", "fraction", "seed") if k in tags},
                          leakage.OVERLAP_TAG: overlap, **own, "set_prevalence": f"{chosen.labels.mean():.4f}"})
            device = "cuda" if torch.cuda.is_available() else "cpu"

            def batches(s: SplitSet) -> BatchLoader:
                return loader(ctx, split.archive_root, s.names, s.labels.astype("float32"), bands,
                              spec.batch_size, shuffle=False, seed=0, digest=split.index_digest,
                              store_names=split.pool, pack=False, scaling=tags.get(SCALING_TAG, ZSCORE))

            scored = predict(model, batches(chosen), device)
            if validation:
                metrics = log_at_validation_threshold(run, scored, chosen.names, spec.set,
                                                      predict(model, batches(validation), device))
                log.info(_threshold_line(metrics["val_threshold"], validation, own))
            else:
                metrics = log_evaluation(run, scored, chosen.names, spec.set)
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def same_scheme(tags: Mapping[str, str], scheme: str, model_uri: str) -> None:
    """Refuse to score a classifier on another scheme's labels: its metrics would read as its own."""
    trained = tags.get("scheme")
    if trained is not None and trained != scheme:
        raise UserError(f"scheme: the model {model_uri} was trained on scheme {trained}, not {scheme}; "
                        f"scheme={trained} scores it on its own labels")


def _own_ground(client: Tracking, fetch: Fetcher, ref: ModelRef, split: SplitData,
                spec: specs.Evaluate) -> tuple[SplitSet | None, dict[str, str]]:
    """On a test set: the validation set its threshold is chosen on (`_threshold_set`), and the tags that
    say how both lie on the classifier's own ground (leakage module doc): training_overlap, threshold_set and
    threshold_overlap. "0" at once on the model's own split (`own_split`): its test sets are those its run
    scored, kept off its ground as far as the split's kind keeps them (a random split's footprint overlap is
    in its manifest), and its validation sets are its own. (None, {}) for train and val, which a person
    scores knowingly."""
    if spec.set not in ("test", NATURAL):
        return None, {}
    validation = _threshold_set(split.folder, spec.scheme, int(ref.tags.get("fraction", spec.fraction)), split.val)
    checked = {leakage.TRAINING_TAG: (spec.set, split.set(spec.set)),
               THRESHOLD_OVERLAP_TAG: (f"{validation.path.name} threshold", validation)}
    if own_split(split, ref.tags):
        found = dict.fromkeys(checked, "0")
    else:
        ground = leakage.classifier_ground(client, fetch, ref.tags, ref.run_id)
        found = {tag: leakage.training_status(ground, s.names, split.index, name, spec.allow_pretraining_overlap)
                 for tag, (name, s) in checked.items()}
    return validation, {**found, THRESHOLD_SET_TAG: validation.path.name}


def own_split(split: SplitData, tags: Mapping[str, str]) -> bool:
    """Whether `split` is the one the model was trained on: its test set, and its training and validation sets
    at the model's fraction, are those whose digests the version recorded."""
    splits = load_sets(split.folder, split.scheme)
    fraction = int(tags.get("fraction", -1))
    if fraction not in splits.manifest.fractions or split.test.digest != tags.get("test_digest"):
        return False
    return (splits.get(fraction, "train").digest, splits.get(fraction, "val").digest) == \
        (tags.get("train_digest"), tags.get("val_digest"))


def _threshold_line(threshold: float, validation: SplitSet, tags: Mapping[str, str]) -> str:
    """One line on where val_threshold was chosen and whether predict may operate the model at it."""
    use = ("predict threshold=auto may operate the model at it" if operating(tags)
           else "reported only: predict never operates a model at it")
    return (f"val_threshold {threshold:.4g} chosen on {validation.path.name} ({len(validation.names)} patches, "
            f"prevalence {validation.labels.mean():.4f}, training overlap {tags[THRESHOLD_OVERLAP_TAG]}): {use}")


def _threshold_set(folder: Path, scheme: str, fraction: int, balanced: SplitSet) -> SplitSet:
    """Where the threshold is chosen: the natural-prevalence validation set of the model's fraction, or
    `balanced` (the validation set at the `fraction` parameter) for splits made without one."""
    splits = load_sets(folder, scheme)
    if not splits.manifest.natural_validation or fraction not in splits.manifest.fractions:
        return balanced
    return splits.get(fraction, VAL_NATURAL)


EVALUATE = Evaluate()
