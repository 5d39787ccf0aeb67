"""A natural validation set without a positive chooses no threshold: the run logs 0.5 and says why, and the
threshold predict reports names that reason beside where it read the value. predict takes an evaluate run's
threshold only where it was chosen at natural prevalence, off the model's own ground."""

from __future__ import annotations

import numpy as np

from simclr_s2.learning.metrics import THRESHOLD_SOURCE
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.evaluation import log_at_validation_threshold
from simclr_s2.tracking.names import STAGE_TAG
from simclr_s2.tracking.registry import ModelRef
from simclr_s2.tracking.thresholds import OVERLAP_TAG, SET_TAG, validation_threshold
from simclr_s2.tracking.tracker import COMPLETE_TAG, Step, Tracker

STEP = Step("evaluate", {"a": "1"}, code="c")
SCORES = np.array([0.02, 0.3, 0.7, 0.9])
OPERATING = {SET_TAG: "val_natural_100pct.csv", OVERLAP_TAG: "0"}  # chosen at natural prevalence, off its ground


def test_a_validation_set_without_a_positive_leaves_the_default_and_says_so(ctx):
    test = (np.array([False, False, True, True]), SCORES, 0.0)
    names = ["p0", "p1", "p2", "p3"]
    with Tracker(ctx).open(STEP, run_name="s") as run:
        chosen = log_at_validation_threshold(run, test, names, "test", (np.zeros(4, bool), SCORES, 0.0))
        picked = log_at_validation_threshold(run, test, names, "again", (test[0], SCORES, 0.0))
    tags = Tracking.of(ctx).tags(run.run_id)
    assert chosen["val_threshold"] == 0.5 and picked["val_threshold"] == 0.7
    assert tags[THRESHOLD_SOURCE] == "default 0.5: the validation set holds no positive"
    ref = ModelRef("models:/m/1", "m/1", {"val_threshold": "0.5", THRESHOLD_SOURCE: tags[THRESHOLD_SOURCE]},
                   None)
    assert validation_threshold(Tracking.of(ctx).client, ref) == (
        0.5, "the val_threshold tag of m/1 (default 0.5: the validation set holds no positive)")


def test_only_a_finished_evaluate_run_supplies_a_version_s_threshold(ctx):
    """A run that wrote its completion mark and then failed to end FINISHED ends FAILED with the mark: its
    threshold is not taken."""
    client = Tracking.of(ctx).client
    for value, status in ((0.7, "FINISHED"), (0.2, "FAILED")):  # the newest is the failed one
        _evaluated(ctx, "m/2", value, OPERATING, status)
    threshold, source = validation_threshold(client, ModelRef("models:/m/2", "m/2", {}, None))
    assert threshold == 0.7 and source.startswith("val_threshold of evaluate run")


def test_a_threshold_chosen_on_balanced_validation_or_on_the_models_ground_is_never_operated_at(ctx):
    """evaluate on splits without natural sets chooses on balanced validation (50 %: far too low for a scene
    at 2 %), and on another split's natural validation set that the model trained on (recorded by
    allow_pretraining_overlap=true): predict maps a scene at neither."""
    client, ref = Tracking.of(ctx).client, ModelRef("models:/m/3", "m/3", {}, None)
    _evaluated(ctx, "m/3", 0.32, {SET_TAG: "val_100pct.csv", OVERLAP_TAG: "0"})
    threshold, source = validation_threshold(client, ref)
    assert threshold == 0.5 and source.startswith("default 0.5: no evaluate run of m/3 on a test set chose")
    chosen = _evaluated(ctx, "m/3", 0.61, OPERATING)
    _evaluated(ctx, "m/3", 0.83, {**OPERATING, OVERLAP_TAG: "override:15"})
    _evaluated(ctx, "m/3", 0.74, {**OPERATING, OVERLAP_TAG: "unknown"})
    _evaluated(ctx, "m/3", 0.29, {SET_TAG: "val_100pct.csv", OVERLAP_TAG: "0"})
    assert validation_threshold(client, ref) == (0.61, f"val_threshold of evaluate run {chosen}")


def _evaluated(ctx, version: str, value: float, tags: dict[str, str], status: str = "FINISHED") -> str:
    """A complete evaluate run of `version` that logged `value` as its val_threshold, with `tags`."""
    client = Tracking.of(ctx).client
    run_id = client.create_run(ctx.experiment_id, tags={STAGE_TAG: "evaluate", COMPLETE_TAG: "true",
                                                        **tags}).info.run_id
    client.log_param(run_id, "resolved_model", version)
    client.log_metric(run_id, "val_threshold", value)
    client.set_terminated(run_id, status)
    return run_id
