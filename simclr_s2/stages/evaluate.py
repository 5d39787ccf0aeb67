"""evaluate: score a registered classifier on a split set. It writes nothing but its own run: `auto` finds
the demo splits without making them, downloads go to a temporary folder, and the patches are read from
the split's packed store when one is there (what training packed, or `fetch pack=splits` streamed with no
GeoTIFFs extracted), else from the GeoTIFFs rounded as the store holds them: the same probabilities either
way, and those finetune's test scoring gave (inputs.loader).

On a test set the metrics come twice: at the 0.5 threshold (`<set>_*`), and at the threshold with the best
F1 on the natural-prevalence validation set of the model's own fraction (`val_threshold`,
`<set>_valthr_*`; splits.py: as many labels as that fraction's validation set): on the natural-prevalence
test set (test_natural) that is how a classifier meant for real prevalence would be operated. Splits
made without natural sets fall back to the balanced validation set at `fraction` (tag threshold_set).
The leakage guard checks the scored set against the encoder's pretraining patches, and a test set against the
classifier's own training and validation patches (leakage.py)."""

from __future__ import annotations

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
from simclr_s2.tracking.evaluation import log_at_validation_threshold, log_evaluation
from simclr_s2.tracking.registry import SCALING_TAG, ModelRef, encoder_bands
from simclr_s2.tracking.tracker import StageRun


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
        bands = encoder_bands(tags, model.encoder.in_channels)
        with Fetcher.temporary(ctx.tracking_uri) as fetch:
            split = load_split_data(fetch, resolved.get("split", spec.split), spec.scheme, spec.fraction)
            chosen = split.set(spec.set)
            overlap = leakage.status(leakage.classifier_encoder(run.tracking, tags), chosen.names, split.index,
                                     spec.set, spec.allow_pretraining_overlap)
            own = _training_overlap(run, fetch, ref, split, chosen, spec)
            run.log_params({"resolved_model": version or spec.model_uri, f"{spec.set}_digest": chosen.digest})
            run.set_tags({**{k: tags[k] for k in ("pretrained", "arch", "fraction", "seed") if k in tags},
                          leakage.OVERLAP_TAG: overlap, **own, "set_prevalence": f"{chosen.labels.mean():.4f}"})
            device = "cuda" if torch.cuda.is_available() else "cpu"

            def batches(s: SplitSet) -> BatchLoader:
                return loader(ctx, split.archive_root, s.names, s.labels.astype("float32"), bands,
                              spec.batch_size, shuffle=False, seed=0, digest=split.index_digest,
                              store_names=split.pool, pack=False, scaling=tags.get(SCALING_TAG, ZSCORE))

            scored = predict(model, batches(chosen), device)
            if spec.set in ("test", NATURAL):
                validation = _threshold_set(split.folder, spec.scheme, int(tags.get("fraction", spec.fraction)),
                                            split.val)
                run.set_tags({"threshold_set": validation.path.name})
                metrics = log_at_validation_threshold(run, scored, chosen.names, spec.set,
                                                      predict(model, batches(validation), device))
            else:
                metrics = log_evaluation(run, scored, chosen.names, spec.set)
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


def same_scheme(tags: Mapping[str, str], scheme: str, model_uri: str) -> None:
    """Refuse to score a classifier on another scheme's labels: its metrics would read as its own."""
    trained = tags.get("scheme")
    if trained is not None and trained != scheme:
        raise UserError(f"scheme: the model {model_uri} was trained on scheme {trained}, not {scheme}; "
                        f"scheme={trained} scores it on its own labels")


def _training_overlap(run: StageRun, fetch: Fetcher, ref: ModelRef, split: SplitData, chosen: SplitSet,
                      spec: specs.Evaluate) -> dict[str, str]:
    """The training_overlap tag of a scored test set (leakage module doc): "0" at once for the model's own
    balanced test set, which create_splits kept off its training ground (a natural test set is checked: only
    the balanced one's digest is recorded, and another split may share it); {} for train and val, which a
    person scores knowingly."""
    if spec.set not in ("test", NATURAL):
        return {}
    if spec.set == "test" and split.test.digest == ref.tags.get("test_digest"):
        return {leakage.TRAINING_TAG: "0"}
    ground = leakage.classifier_ground(run.tracking, fetch, ref.tags, ref.run_id)
    return {leakage.TRAINING_TAG: leakage.training_status(ground, chosen.names, split.index, spec.set,
                                                          spec.allow_pretraining_overlap)}


def _threshold_set(folder: Path, scheme: str, fraction: int, balanced: SplitSet) -> SplitSet:
    """Where the threshold is chosen: the natural-prevalence validation set of the model's fraction, or
    `balanced` (the validation set at the `fraction` parameter) for splits made without one."""
    splits = load_sets(folder, scheme)
    if not splits.manifest.natural_validation or fraction not in splits.manifest.fractions:
        return balanced
    return splits.get(fraction, VAL_NATURAL)


EVALUATE = Evaluate()
