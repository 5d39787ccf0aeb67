"""A cluster retry continues the run its killed worker left (MLFLOW_RUN_ID). Killed after training, while
evaluating or registering, the retry evaluates and registers again: the run still holds each figure once
and one model version."""

from __future__ import annotations

import numpy as np
from torch import nn

from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.registry import VERSION_TAG
from simclr_s2.tracking.tracker import Step, Tracker

STEP = Step("s", {"a": "1"}, code="c")


def test_figures_logged_again_without_a_step_are_kept_once(ctx):
    with Tracker(ctx).open(STEP, run_name="s") as run:
        run.log_metrics({"best_epoch": 1, "test_f1": 0.8})  # the killed attempt's evaluation
        run.log_metrics({"best_epoch": 1, "test_f1": 0.8, "test_auc": 0.9})  # the retry's, going further
    history = {key: [(m.step, m.value) for m in Tracking.of(ctx).client.get_metric_history(run.run_id, key)]
               for key in ("best_epoch", "test_f1", "test_auc")}
    assert history == {"best_epoch": [(0, 1.0)], "test_f1": [(0, 0.8)], "test_auc": [(0, 0.9)]}


def test_a_figure_with_a_new_value_is_logged_and_shown(ctx):
    """A retried `tune` counts more trials than its killed attempt: the newer count is the run's."""
    with Tracker(ctx).open(STEP, run_name="s") as run:
        run.log_metrics({"trials_complete": 3, "best": float("nan")})
        run.log_metrics({"trials_complete": 5, "best": float("nan")})
    client = Tracking.of(ctx).client
    assert [m.value for m in client.get_metric_history(run.run_id, "trials_complete")] == [3, 5]
    assert len(client.get_metric_history(run.run_id, "best")) == 1
    assert client.get_run(run.run_id).data.metrics["trials_complete"] == 5


def test_a_model_the_run_registered_already_is_not_registered_again(ctx):
    door, name = Tracking.of(ctx), f"tiny-{ctx.experiment_id}"
    with Tracker(ctx).open(STEP, run_name="s") as run:
        registered = [door.log_and_register(run.run_id, nn.Linear(5, 1), name, np.zeros((2, 5), np.float32), {})
                      for _ in range(2)]  # the killed attempt's registration, then the retry's
    (version,) = door.client.search_model_versions(f"name = '{name}'")
    assert registered == [str(version.version)] * 2 and version.run_id == run.run_id
    assert door.tags(run.run_id)[VERSION_TAG] == f"{name}/{version.version}"
