"""What runs inside a Ray worker for a grid cell, a tuning worker or a final run: a stage in the run its
driver made."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

import ray
import torch

from simclr_s2.cluster.environment import applied, for_this_node
from simclr_s2.errors import UserError
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import Spec, build
from simclr_s2.stages.base import Stage, find_step, run_command
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.fingerprint import package_fingerprint
from simclr_s2.tracking.names import COMPLETE_TAG
from simclr_s2.tracking.process import quiet_defaults

log = logging.getLogger(__name__)

ATTEMPTS_TAG = "simclr_s2.attempts"


def run_stage(stage: Stage, params: Mapping[str, object], env: Mapping[str, str], code: str,
              reuse: bool) -> str | None:
    """`stage` with `params` as `mlflow run` runs an entry point: `run_command` in the run named by
    MLFLOW_RUN_ID in `env`, created by the driver, reusing finished steps as the driver does (`reuse`).
    Returns the id of the run that holds the result: that one, or the complete run of the same key that
    `_reused` finds.

    Ray starts this again, with the same arguments, when the worker died (up to the task's max_retries):
    Tracker.open then continues that same run, restores its newest checkpoint (this node's state folder,
    else the run's checkpoints/ artifacts, so any node will do) and logs exactly the steps the run lacks.
    A UserError is the cell's own fault and is never retried (retry_exceptions=False)."""
    with applied(env):
        if package_fingerprint() != code:
            raise UserError(f"this Ray worker ({os.uname().nodename}) runs other simclr_s2 code "
                            f"({package_fingerprint()}) than the command that sent the task ({code}): "
                            "install the same version on every node (docs/cluster.md)")
        _configure_worker()
        ctx = Context.from_env({**os.environ, **for_this_node(env)}).with_reuse(reuse)
        spec = build(stage.spec, params)
        if (done := _reused(stage, spec, ctx)) is not None:
            return done
        attempt = _count_attempt(ctx)
        if attempt > 1:
            log.warning("run %s: attempt %d, after its worker died; resuming from its checkpoint",
                        ctx.launcher_run_id, attempt)
        return run_command(stage, spec, ctx)


def _reused(stage: Stage, spec: Spec, ctx: Context) -> str | None:
    """The complete run of the job's key, as `ensure_step` reuses it: one another command finished after the
    driver looked (dispatch.finished) and before this task started would else be trained again. The run made
    for this task is deleted then (the driver reports the one found; what an attempt whose worker died
    trained there is a duplicate); a retry whose own run is complete (its worker died after the completion
    mark) returns that run as it is, whatever `reuse` says (it is the same job, done). Else None with reuse
    off, for a stage whose identical runs are not duplicates (tuning workers join one study), and when the
    job's inputs cannot be found here (`run_command` then fails with the reason)."""
    own = Tracking.of(ctx).get_run(ctx.launcher_run_id) if ctx.launcher_run_id else None
    if own is not None and own.data.tags.get(COMPLETE_TAG) == "true" and own.info.status == "FINISHED":
        return own.info.run_id  # (marked but not yet FINISHED: run_command continues it to its end)
    if not (stage.exclusive and ctx.reuse):
        return None
    try:
        done = find_step(stage, spec, ctx)
    except UserError:
        return None
    if done is None:
        return None
    if done.info.run_id != ctx.launcher_run_id:
        log.info("%s: run %s finished meanwhile; reused", stage.name, done.info.run_id)
        Tracking.of(ctx).delete_run(ctx.launcher_run_id)
    return done.info.run_id


def _configure_worker() -> None:
    """Log as an entry point does, and use as many threads as CPUs the task was given."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("simclr_s2").setLevel(logging.INFO)
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    quiet_defaults()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))


def _count_attempt(ctx: Context) -> int:
    """Count this start on the run (its `simclr_s2.attempts` tag), so a retry shows where people look."""
    run_id = ctx.launcher_run_id or ""
    door = Tracking.of(ctx)
    attempt = int(door.tags(run_id).get(ATTEMPTS_TAG, "0")) + 1
    door.set_tag(run_id, ATTEMPTS_TAG, attempt)
    return attempt
