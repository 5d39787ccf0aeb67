"""The driver's side of running stages on a Ray cluster: a finished run is reused without any task; every
other job becomes one Ray task, at most `parallel` at once, in an MLflow run made here.

Where a job's run is created, and why here: the driver creates it (a child of the dispatching run, with
`mlflow.parentRunId` set in the very call that creates it) and hands its id to the task, which continues
it as `mlflow run` hands a run to an entry point (MLFLOW_RUN_ID, `run_command`). So the run id is fixed
before the task starts: when the worker dies, Ray's retry of the task receives the same arguments and
continues the same run from its newest checkpoint artifact, instead of a new run resuming a stale one
(which is what `ensure_step` would do, leaving a deleted run behind per retry). A job whose key another
command finished after the driver looked is reused by its task, which deletes the run made here and
returns the finished one's id (tasks._reused): the outcome says so. A run whose task never
reached Tracker.open, or whose worker died for good, is ended FAILED here with the reason; when the command
itself stops (Ctrl-C), the tasks still out are cancelled and their runs ended KILLED.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import TYPE_CHECKING

import ray
from ray.exceptions import RayError, RayTaskError

from simclr_s2.cluster import tasks
from simclr_s2.cluster.connection import capacity, connected
from simclr_s2.cluster.environment import handed_over
from simclr_s2.cluster.progress import Progress
from simclr_s2.errors import UserError
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import Spec, build
from simclr_s2.stages.base import Stage, find_step
from simclr_s2.tracking.connectivity import TrackingUnreachable, server_lost
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.endings import describe
from simclr_s2.tracking.fingerprint import package_fingerprint
from simclr_s2.tracking.names import STAGE_TAG

if TYPE_CHECKING:
    from mlflow.entities import Run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """Where and how the tasks run: the cluster, each task's CPUs and GPUs, how many at once (0: as many
    as the cluster holds), and how often a task whose worker died starts again."""

    address: str
    cpus: float = 1.0
    gpus: float = 0.0
    parallel: int = 0
    retries: int = 2


@dataclass(frozen=True)
class Job:
    """One stage to run on the cluster, with its parameters and the tags its run starts with."""

    label: str
    stage: Stage
    params: Mapping[str, object]
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def spec(self) -> Spec:
        return build(self.stage.spec, self.params)


@dataclass(frozen=True)
class Outcome:
    """How a job ended: its run, and the reason when it failed. `reused`: the run is another command's, found
    complete by the task (tasks._reused), and the one made for the job is gone."""

    job: Job
    run_id: str
    error: str = ""
    reused: bool = False


def finished(job: Job, ctx: Context) -> Run | None:
    """The finished run a job would reuse (None with reuse off, or when its inputs cannot be resolved
    here: its task then fails with the reason)."""
    if not ctx.reuse:
        return None
    try:
        return find_step(job.stage, job.spec, ctx)
    except UserError:
        return None


def run_jobs(jobs: Sequence[Job], ctx: Context, parent_run_id: str, placement: Placement,
             what: str) -> list[Outcome]:
    """Every job as a Ray task (none, and no cluster, when there are none); outcomes in the jobs' order."""
    if not jobs:
        return []
    with connected(placement.address):
        return _Dispatch(ctx, parent_run_id, placement, Progress(len(jobs), what)).run(jobs)


def ensure_on_cluster(job: Job, ctx: Context, parent_run_id: str, placement: Placement) -> str:
    """The id of the finished run of `job`: reused, or run now as one task (UserError when it failed)."""
    done = finished(job, ctx)
    if done is not None:
        return done.info.run_id
    (outcome,) = run_jobs([job], ctx, parent_run_id, placement, "runs")
    if outcome.error:
        raise UserError(f"{job.label}: {outcome.error}")
    return outcome.run_id


@cache
def _remote_stage():
    return ray.remote(tasks.run_stage)


@dataclass(frozen=True)
class _Sent:
    index: int
    job: Job
    run_id: str


class _Dispatch:
    def __init__(self, ctx: Context, parent_run_id: str, placement: Placement, progress: Progress) -> None:
        self.ctx, self.parent_run_id, self.placement, self.progress = ctx, parent_run_id, placement, progress

    def run(self, jobs: Sequence[Job]) -> list[Outcome]:
        slots = self.placement.parallel or capacity(self.placement.cpus, self.placement.gpus)
        queue, pending, outcomes = deque(enumerate(jobs)), {}, {}
        try:
            while queue or pending:
                while queue and len(pending) < slots:
                    ref, sent = self._submit(*queue.popleft())
                    pending[ref] = sent
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                outcomes[pending[ref].index] = self._collect(ref, pending[ref])
                sent = pending.pop(ref)
                self.progress.ended(sent.job.label, outcomes[sent.index].error)
        except BaseException as error:
            self._abandon(pending, error)
            raise
        finally:
            self.progress.close()
        return [outcomes[i] for i in range(len(jobs))]

    def _abandon(self, pending: Mapping[ray.ObjectRef, _Sent], error: BaseException) -> None:
        """Cancel the tasks still out and end their runs KILLED with why: after Ctrl-C (or a failure here)
        no task may go on training, and no run may stay RUNNING with nobody to end it."""
        reason = f"the command that dispatched it stopped: {describe(error)}"
        tracking = Tracking.of(self.ctx)
        lost = isinstance(error, TrackingUnreachable) or server_lost(error) is not None
        for ref, sent in pending.items():
            try:
                ray.cancel(ref)
            except Exception as late:  # noqa: BLE001 - the other tasks and runs must still be ended
                log.warning("cannot cancel the task of %s: %s", sent.job.label, late)
            if lost:  # telling the server would only wait for it again
                continue
            try:
                if tracking.get_run(sent.run_id).info.status == "RUNNING":  # unless its task ended it already
                    tracking.end(sent.run_id, "KILLED", reason)
            except Exception as late:  # noqa: BLE001 - the error that stopped the dispatch is the one to raise
                log.warning("cannot end run %s of %s KILLED: %s", sent.run_id, sent.job.label, late)

    def _submit(self, index: int, job: Job) -> tuple[ray.ObjectRef, _Sent]:
        run_id = Tracking.of(self.ctx).open(self.ctx.experiment_id, job.label, {STAGE_TAG: job.stage.name, **job.tags},
                                            parent_run_id=self.parent_run_id)
        env = handed_over(self.ctx.tracking_uri, self.ctx.experiment_id, run_id)
        ref = _remote_stage().options(
            name=job.label, num_cpus=self.placement.cpus, num_gpus=self.placement.gpus,
            max_retries=self.placement.retries, retry_exceptions=False,
        ).remote(job.stage, dict(job.params), env, package_fingerprint(), self.ctx.reuse)
        self.progress.started()
        return ref, _Sent(index, job, run_id)

    def _collect(self, ref: ray.ObjectRef, sent: _Sent) -> Outcome:
        try:
            run_id = ray.get(ref) or sent.run_id
            return Outcome(sent.job, run_id, reused=run_id != sent.run_id)
        except RayTaskError as failure:  # the stage raised: its own error, never retried
            error = describe(failure.cause)
        except RayError as lost:  # e.g. the worker or its node died more often than the retries allow
            reason = str(lost).strip().splitlines()[0] if str(lost).strip() else ""
            error = f"{type(lost).__name__} after {self.placement.retries} retries: {reason}"
        Tracking.of(self.ctx).fail_if_running(sent.run_id, error)  # unless the stage ended it (it tells more)
        return Outcome(sent.job, sent.run_id, error)

