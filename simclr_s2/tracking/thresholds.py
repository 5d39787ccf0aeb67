"""The decision threshold a registered classifier is operated at: the one chosen on the natural-prevalence
validation set of its fraction (the best F1 there, logged as `val_threshold` by the classifier run or by
`evaluate` on a test set), else the usual 0.5. An evaluate run's is taken only where it was chosen on a
natural-prevalence set that lies off the model's own ground (`operating`): one chosen on a balanced
validation set is far too low at real prevalence (docs/study.md), and one chosen on patches the model
trained on says nothing of new ground."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from simclr_s2.learning.metrics import DEFAULT_THRESHOLD, THRESHOLD_SOURCE
from simclr_s2.study.splits import VAL_NATURAL
from simclr_s2.tracking.evaluation import THRESHOLD_METRIC as METRIC
from simclr_s2.tracking.names import STAGE_TAG
from simclr_s2.tracking.registry import ModelRef
from simclr_s2.tracking.tracker import COMPLETE_TAG

SET_TAG = "threshold_set"  # an evaluate run's: the validation file its val_threshold was chosen on
OVERLAP_TAG = "threshold_overlap"  # and that file's overlap with the model's own ground ("0", "unknown", ...)


def operating(tags: Mapping[str, str]) -> bool:
    """Whether the val_threshold of an evaluate run with `tags` may operate its model: chosen on a
    natural-prevalence validation set that the leakage guard found off the model's own ground."""
    return tags.get(SET_TAG, "").startswith(f"{VAL_NATURAL}_") and tags.get(OVERLAP_TAG) == "0"


def validation_threshold(client: MlflowClient, ref: ModelRef) -> tuple[float, str]:
    """The threshold for `ref` and where it came from: a `val_threshold` tag on the version, else the newest
    complete evaluate run of that version that logged one it may operate at (`operating`), else
    DEFAULT_THRESHOLD."""
    if METRIC in ref.tags:
        return float(ref.tags[METRIC]), f"the {METRIC} tag of {ref.version}{_unchosen(ref.tags)}"
    if ref.version:
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        runs = client.search_runs(
            experiments, f"tags.{STAGE_TAG} = 'evaluate' and params.resolved_model = '{ref.version}' and "
                         f"tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED' and metrics.{METRIC} >= 0",
            order_by=["attributes.start_time DESC"])
        if run := next((r for r in runs if operating(r.data.tags)), None):
            return run.data.metrics[METRIC], f"{METRIC} of evaluate run {run.info.run_id}{_unchosen(run.data.tags)}"
    return DEFAULT_THRESHOLD, (f"default {DEFAULT_THRESHOLD}: no evaluate run of {ref.version or ref.uri} on "
                               f"a test set chose {METRIC} on a natural-prevalence validation set off its "
                               "training ground")


def _unchosen(tags: Mapping[str, str]) -> str:
    """The note " (<why>)" where the validation set could not choose the threshold (a natural one without a
    positive), else nothing."""
    return f" ({tags[THRESHOLD_SOURCE]})" if THRESHOLD_SOURCE in tags else ""
