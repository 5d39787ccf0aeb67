"""The worker's side of a cluster job (cluster/tasks.py), without Ray: a task continues the run its driver
made, or reuses a complete run of its key that another command finished once the driver had looked."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import ClassVar

import pytest

from simclr_s2.cluster import tasks
from simclr_s2.cluster.environment import handed_over
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages.base import Stage
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.fingerprint import package_fingerprint
from simclr_s2.tracking.names import COMPLETE_TAG
from simclr_s2.tracking.tracker import Tracker

PARAMS = {"seed": 3}


class Recording(Stage[specs.Baseline]):
    """A stage with the baseline's parameters whose execution only records the run it ran in."""

    spec = specs.Baseline
    exclusive: ClassVar[bool] = True
    ran: ClassVar[list[str]] = []

    def execute(self, spec, resolved, run, ctx) -> None:
        self.ran.append(run.run_id)


class Worker(Recording):
    exclusive: ClassVar[bool] = False  # as tuning workers: identical runs join one study


@pytest.fixture
def ctx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, migrated_store: Path) -> Context:
    """A store of the test's own (a copy of an empty migrated one: no claim here is about making a store)."""
    shutil.copyfile(migrated_store, tmp_path / "mlflow.db")
    for key, value in {"SIMCLR_S2_HOME": str(tmp_path / "home"), "SIMCLR_S2_DATA": str(tmp_path / "data"),
                       "SIMCLR_S2_HEARTBEAT_S": "1"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(tasks, "_configure_worker", lambda: None)  # asks Ray for the task's CPUs
    Recording.ran.clear()
    return Context.from_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db",
                             "MLFLOW_EXPERIMENT_NAME": "tasks"})


def _task(ctx: Context, stage: Stage, reuse: bool = True, run_id: str | None = None) -> tuple[str, str | None]:
    """The run a driver makes for a job of `stage` (or `run_id`: a retry's), and what its task returns."""
    run_id = run_id or Tracking.of(ctx).open(ctx.experiment_id, "cell", {})
    env = handed_over(ctx.tracking_uri, ctx.experiment_id, run_id)
    return run_id, tasks.run_stage(stage, PARAMS, env, package_fingerprint(), reuse)


def test_a_task_reuses_a_run_of_its_key_finished_after_the_driver_looked(ctx):
    stage = Recording()
    step = stage.step(build(stage.spec, PARAMS), {})
    done = Tracker(ctx).ensure(step, lambda run: None, run_name="another command's")
    made, returned = _task(ctx, stage)
    assert returned == done.info.run_id and Recording.ran == []
    assert Tracking.of(ctx).get_run(made).info.lifecycle_stage == "deleted"  # nothing trained in it


def test_a_task_trains_in_its_own_run_with_reuse_off_and_a_retry_keeps_it_once_complete(ctx):
    stage = Recording()
    Tracker(ctx).ensure(stage.step(build(stage.spec, PARAMS), {}), lambda run: None, run_name="another command's")
    made, returned = _task(ctx, stage, reuse=False)
    assert returned == made and Recording.ran == [made]
    _, returned = _task(ctx, stage, run_id=made, reuse=False)  # its worker died after the completion mark
    assert returned == made and Recording.ran == [made]
    assert Tracking.of(ctx).get_run(made).info.lifecycle_stage == "active"


def test_identical_tuning_workers_each_run(ctx):
    stage = Worker()
    first, _ = _task(ctx, stage)
    second, returned = _task(ctx, stage)
    assert returned == second and Recording.ran == [first, second]


def test_a_retry_of_a_run_marked_complete_but_not_finished_finishes_it(ctx):
    """Its worker died between the completion mark and FINISHED: the retry continues it to its end, not
    returns it as done, left RUNNING with its claim."""
    stage = Recording()
    made = Tracking.of(ctx).open(ctx.experiment_id, "cell", {})
    Tracking.of(ctx).set_tag(made, COMPLETE_TAG, "true")
    _, returned = _task(ctx, stage, run_id=made)
    assert returned == made and Tracking.of(ctx).get_run(made).info.status == "FINISHED"
