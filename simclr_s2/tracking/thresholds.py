"""The decision threshold a registered classifier is operated at: the one chosen on the natural-prevalence
validation set of its fraction (the best F1 there, logged as `val_threshold` by the classifier run or by
`evaluate` on a test set), else the usual 0.5."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from simclr_s2.learning.metrics import DEFAULT_THRESHOLD, THRESHOLD_SOURCE
from simclr_s2.tracking.evaluation import THRESHOLD_METRIC as METRIC
from simclr_s2.tracking.names import STAGE_TAG
from simclr_s2.tracking.registry import ModelRef
from simclr_s2.tracking.tracker import COMPLETE_TAG


def validation_threshold(client: MlflowClient, ref: ModelRef) -> tuple[float, str]:
    """The threshold for `ref` and where it came from: a `val_threshold` tag on the version, else the newest
    complete evaluate run of that version that logged one, else DEFAULT_THRESHOLD."""
    if METRIC in ref.tags:
        return float(ref.tags[METRIC]), f"the {METRIC} tag of {ref.version}{_unchosen(ref.tags)}"
    if ref.version:
        experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
        runs = client.search_runs(
            experiments, f"tags.{STAGE_TAG} = 'evaluate' and params.resolved_model = '{ref.version}' and "
                         f"tags.`{COMPLETE_TAG}` = 'true' and attributes.status = 'FINISHED' and metrics.{METRIC} >= 0",
            order_by=["attributes.start_time DESC"], max_results=1)
        if runs:
            run = runs[0]
            return run.data.metrics[METRIC], f"{METRIC} of evaluate run {run.info.run_id}{_unchosen(run.data.tags)}"
    return DEFAULT_THRESHOLD, (f"default {DEFAULT_THRESHOLD}: no evaluate run of {ref.version or ref.uri} on "
                               f"a test set recorded {METRIC}")


def _unchosen(tags: Mapping[str, str]) -> str:
    """The note " (<why>)" where the validation set could not choose the threshold (a natural one without a
    positive), else nothing."""
    return f" ({tags[THRESHOLD_SOURCE]})" if THRESHOLD_SOURCE in tags else ""
