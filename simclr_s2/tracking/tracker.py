"""The lifecycle of every run: its key, reuse of finished runs, one live run per key, resume from a
checkpoint, and an ending that tells the truth.

- A step's key hashes its entry point, its parameters as given, what `auto` resolved to, and the code
  fingerprint: a finished run is reused only when all four match.
- A run counts as done only when it is FINISHED *and* carries the completion mark, written last, after
  everything the run promised (metrics, artifacts, registered model) exists.
- At most one live run per key: a run claims its key through the store's own numbering of registry
  versions and reads the claims back (check after write, liveness.py); whichever run holds the key,
  however close together they started, the others stop with one line naming it, or, inside a chain,
  wait for it and reuse its result. Fault point `claim@0` (faults.py): the run is made and tagged, its
  claim not yet written.
- One resume rule for every launcher: the run that opens (fresh, or the one `mlflow run` or a cluster
  retry hands over) takes the first checkpoint found of its own or of a stale run with the same key,
  from the local state folder before the runs' artifacts (epochs are not compared: see docs/runs.md),
  and its history is brought to exactly the checkpoint's steps (publisher.log_missing). The stale runs it
  supersedes are ended FAILED at once (never left RUNNING, should this one die too: the next attempt
  takes its checkpoint in turn), and those holding any history are deleted once it finishes. Fault
  point `resumed@0`: the history is carried over, training not yet started. A command's own run also ends
  FAILED this host's runs of any key whose process is gone (a changed key never resumes them).
- Runs are addressed by id through the door (door.Tracking, built from the context's URIs), never through
  MLflow's process-wide active run, so steps can run inside each other (the `auto` chain) and nothing
  leaks between commands or tests.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import socket
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import torch
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag, Param, Run, RunStatus, RunTag
from mlflow.exceptions import MlflowException
from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

from simclr_s2 import disk, faults
from simclr_s2.errors import UserError
from simclr_s2.learning import distributed
from simclr_s2.learning.checkpoints import is_checkpoint
from simclr_s2.learning.runtime import PARTIAL_SUFFIX, Checkpoint, StepMetrics
from simclr_s2.settings.context import Context
from simclr_s2.settings.mlflow_store import sqlite_folder
from simclr_s2.tracking.connectivity import TrackingUnreachable, retry_budget_s, server_lost
from simclr_s2.tracking.door import PARENT_TAG, Tracking
from simclr_s2.tracking.endings import ERROR_TAG, describe
from simclr_s2.tracking.fingerprint import CODE_TAG, package_fingerprint
from simclr_s2.tracking.liveness import HOST_TAG, PID_TAG, claim, claims, heartbeat, holder_tags, is_live, release
from simclr_s2.tracking.names import COMPLETE_TAG, STAGE_TAG
from simclr_s2.tracking.publisher import ARTIFACT_DIR, Publisher, log_metrics, log_missing, to_metrics

log = logging.getLogger(__name__)

KEY_TAG = "simclr_s2.key"
RESUMED_FROM_TAG = "simclr_s2.resumed_from"
RESUMED_IN_TAG = "simclr_s2.resumed_in"
PROCESSES_TAG = "simclr_s2.processes"
THREADS_TAG = "simclr_s2.threads"
"""Torch's intra-op threads in the run's process: CPU kernels sum in an order that depends on it, so runs
of the same key on machines with other core counts can differ in the last bits (docs/runs.md)."""
UNFINISHED = ("RUNNING", "FAILED", "KILLED")


@dataclass(frozen=True)
class Step:
    """What decides a run's result: entry point, parameters as given, what `auto` resolved to, code."""

    entry_point: str
    given: Mapping[str, str]
    resolved: Mapping[str, str] = field(default_factory=dict)
    code: str = field(default_factory=package_fingerprint)

    @property
    def key(self) -> str:
        blob = json.dumps({"entry_point": self.entry_point, "given": dict(self.given),
                           "resolved": dict(self.resolved), "code": self.code}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:20]

    def params(self) -> dict[str, str]:
        """What the run logs: the parameters as given, and each resolved value under its own key."""
        return {**self.given, **{f"resolved_{k}": v for k, v in self.resolved.items()}}


class DuplicateRunError(UserError):
    """An identical run is live: running a second would train the same thing twice into two runs."""


class _Yielded(Exception):
    """Inside a chain, another process claimed this step first: wait for it and reuse its result."""


class StageRun:
    """The open run of one step. Everything is logged through here, by run id; on ranks other than 0
    (torchrun) every call is a no-op, so stage code needs no rank checks for logging. `tracking` is the
    door for what else the stage asks of MLflow (models, the registry, other runs)."""

    def __init__(self, ctx: Context, run_id: str, step: Step, checkpoint_dir: Path, main: bool = True) -> None:
        self.ctx, self.run_id, self.step, self.checkpoint_dir, self.main = ctx, run_id, step, checkpoint_dir, main
        self.tracking = Tracking.of(ctx)
        self.publisher: Publisher | None = None
        self.resumed_from: str | None = None
        self.claim: int | None = None  # its claim on the key (liveness.claim), released when it ends

    @property
    def _client(self):
        return self.tracking.client

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Parameters not already on the run (`mlflow run` logs the given ones first, in its spelling)."""
        if not self.main:
            return
        present = self._client.get_run(self.run_id).data.params
        fresh = [Param(k, str(v)) for k, v in params.items() if k not in present]
        for start in range(0, len(fresh), 100):
            self._client.log_batch(self.run_id, params=fresh[start:start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """All of `metrics` in one call (one request on a server). Without a step they are the run's
        figures: one the run holds already with the same value is skipped (a cluster retry of a run killed
        after logging them evaluates the same weights again), as `log_missing` does for the epochs; a new
        value is logged, and as the newest it is the one MLflow shows (a retried `tune`'s trial counts)."""
        if not self.main:
            return
        if step is None:
            present = self._client.get_run(self.run_id).data.metrics
            metrics = {key: value for key, value in metrics.items() if not _same(present.get(key), value)}
        log_metrics(self._client, self.run_id, to_metrics([(step or 0, dict(metrics))]))

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        if self.main:
            for key, value in tags.items():
                self._client.set_tag(self.run_id, key, str(value))

    def log_artifact(self, path: Path, artifact_path: str | None = None) -> None:
        if self.main:
            self._client.log_artifact(self.run_id, str(path), artifact_path)

    def log_artifacts(self, folder: Path, artifact_path: str | None = None) -> None:
        if self.main:
            self._client.log_artifacts(self.run_id, str(folder), artifact_path)

    def log_dict(self, obj: Mapping[str, Any], artifact_file: str) -> None:
        if self.main:
            self._client.log_dict(self.run_id, dict(obj), artifact_file)

    def log_text(self, text: str, artifact_file: str) -> None:
        if self.main:
            self._client.log_text(self.run_id, text, artifact_file)

    def log_table(self, frame: pd.DataFrame, *, name: str, source: str, digest: str, context: str) -> None:
        """`frame` as an MLflow dataset input of this run, with the file's digest (so a run names exactly
        which patches it used)."""
        if not self.main:
            return
        with warnings.catch_warnings():  # two notes MLflow prints for every table, whatever its content
            warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted")
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer column")
            dataset = mlflow.data.from_pandas(frame, source=source, name=name, digest=digest[:36])
            entity = DatasetEntity(**dataset.to_dict())
        self._client.log_inputs(self.run_id, [DatasetInput(entity, [InputTag("mlflow.data.context", context)])])

    def progress(self) -> RunProgress:
        """The `runtime.Progress` a training loop reports to: checkpoints and metrics published in the
        background, and a resumed history brought to exactly the checkpoint's steps."""
        if self.main and self.publisher is None:
            self.publisher = Publisher(self._client, self.run_id, self.ctx.checkpoint_interval_s)
        return RunProgress(self)

    def close_publisher(self, wait: bool) -> None:
        if self.publisher is not None:
            publisher, self.publisher = self.publisher, None
            publisher.close(wait)


class RunProgress:
    """`runtime.Progress` of a StageRun."""

    def __init__(self, run: StageRun) -> None:
        self.run = run

    def resumed(self, history: Sequence[StepMetrics]) -> None:
        if not self.run.main:
            return
        logged = log_missing(self.run._client, self.run.run_id, history)
        source = self.run.resumed_from or self.run.run_id
        self.run.set_tags({RESUMED_FROM_TAG: source})
        log.info("resumed from the checkpoint of run %s (%d metric values carried over)", source, logged)
        faults.point("resumed", 0)

    def save(self, checkpoint: Checkpoint, path: Path, epoch: int) -> None:
        if self.run.publisher is not None:
            self.run.publisher.save(checkpoint, path, epoch)

    def epoch_done(self, entries: Sequence[StepMetrics], epoch: int) -> None:
        if self.run.publisher is not None:
            self.run.publisher.submit(entries)


class Tracker:
    """Opens, reuses, resumes and ends the runs of one command's context."""

    def __init__(self, ctx: Context) -> None:
        self.ctx, self.tracking = ctx, Tracking.of(ctx)

    @property
    def client(self):
        return self.tracking.client

    def _same_key(self, step: Step, statuses: tuple[str, ...] = UNFINISHED + ("FINISHED",)) -> list[Run]:
        runs = self.client.search_runs([self.ctx.experiment_id], f"tags.`{KEY_TAG}` = '{step.key}'",
                                       order_by=["attributes.start_time DESC"], max_results=100)
        return [r for r in runs if r.info.status in statuses]

    def find_complete(self, step: Step) -> Run | None:
        """The newest finished run of `step` that carries the completion mark."""
        done = [r for r in self._same_key(step, ("FINISHED",)) if r.data.tags.get(COMPLETE_TAG) == "true"]
        return done[0] if done else None

    def unfinished(self, step: Step) -> list[Run]:
        """Runs of `step` that did not finish (running, failed or killed), newest first."""
        return self._same_key(step, UNFINISHED)

    def live_run(self, step: Step) -> Run | None:
        """The run holding the key of `step`, while it is live."""
        live, _ = claims(self.client, self.ctx.experiment_id, step.key, self.ctx.heartbeat_s)
        return live[0].run if live else None

    def ensure(self, step: Step, produce: Callable[[StageRun], None], *, run_name: str,
               tags: Mapping[str, str] | None = None, parent_run_id: str | None = None,
               usable: Callable[[Run], bool] | None = None) -> Run:
        """The finished run of `step`: reused when one exists (and is `usable`, e.g. its local files
        still there), awaited when an identical run is live, else produced now by `produce` in a new run
        (resuming a stale one's checkpoint)."""
        def reusable() -> Run | None:
            return self._reusable(step, usable)

        while True:
            if (done := reusable()) is not None:
                log.debug("reusing finished %s run %s", step.entry_point, done.info.run_id)
                return done
            if (live := self.live_run(step)) is not None:
                self._wait_while_live(live)
                continue
            try:
                with self.open(step, run_name=run_name, tags=tags, parent_run_id=parent_run_id,
                               on_duplicate="wait", reusable=reusable) as run:
                    log.info("%s: running as run %s", run_name, run.run_id)
                    produce(run)
                return self.client.get_run(run.run_id)
            except _Yielded:
                continue

    def _reusable(self, step: Step, usable: Callable[[Run], bool] | None) -> Run | None:
        """The finished run of `step` that `ensure` may reuse: reuse is on, and it is `usable`."""
        done = self.find_complete(step) if self.ctx.reuse else None
        return done if done is not None and (usable is None or usable(done)) else None

    def _wait_while_live(self, run: Run) -> None:
        log.info("waiting for the identical %s run %s to finish", run.data.tags.get(STAGE_TAG), run.info.run_id)
        while is_live(run, self.ctx.heartbeat_s):
            time.sleep(min(2.0, self.ctx.heartbeat_s))
            run = self.client.get_run(run.info.run_id)

    @contextmanager
    def open(self, step: Step, *, run_name: str, tags: Mapping[str, Any] | None = None,
             run_id: str | None = None, parent_run_id: str | None = None, on_duplicate: str = "fail",
             reusable: Callable[[], Run | None] | None = None, system_metrics: bool = False) -> Iterator[StageRun]:
        """Run the body inside the run of `step`: `run_id` continues that run (the one `mlflow run` made,
        or a cluster retry's), else a new one is created. An identical live run that claimed first makes
        this one stop (`on_duplicate="fail"`), yield inside `ensure` ("wait"), or go on anyway ("allow":
        tuning workers sharing one study); with "wait", so does a finished run that `reusable` gives once
        this one holds the key. Under torchrun only rank 0 talks to MLflow; the other ranks get the same run id
        and checkpoint folder and no-op logging."""
        with ExitStack() as stack:
            started = distributed.main_only(lambda: self._start(
                step, run_name, dict(tags or {}), run_id, parent_run_id, stack, on_duplicate, reusable))
            if not distributed.is_main():
                yield StageRun(self.ctx, started[0], step, Path(started[1]), main=False)
                return
            run = StageRun(self.ctx, started[0], step, Path(started[1]))
            run.resumed_from, run.claim = started[2], started[3]
            if system_metrics:
                monitor = SystemMetricsMonitor(run.run_id, tracking_uri=self.ctx.tracking_uri)
                monitor.start()
                stack.callback(monitor.finish)
            try:
                with self._disk_failures():
                    yield run
                    run.close_publisher(wait=True)
                    stack.close()  # the heartbeat stopped and the system metrics logged before the mark
                    self._end_finished(run)
            except BaseException as error:
                self._end_failed(run, error)
                raise
        self._retire_superseded(run)

    def _start(self, step: Step, run_name: str, tags: dict[str, Any], run_id: str | None, parent_run_id: str | None,
               stack: ExitStack, on_duplicate: str, reusable: Callable[[], Run | None] | None,
               ) -> tuple[str, str, str | None, int | None]:
        """Create or continue the run, claim its key (refusing or yielding when another live run holds
        it), and restore the checkpoint to resume from. The run's heartbeat starts in `stack` as soon as
        it is tagged live: seen from another host, a run silent through a long claim or restore (a
        checkpoint downloaded from its artifacts) would look stale, and its key be taken. Returns (run
        id, checkpoint folder, run resumed from, claim)."""
        if parent_run_id:
            tags[PARENT_TAG] = parent_run_id
        if run_id is None:
            run_id = self.client.create_run(self.ctx.experiment_id, run_name=run_name).info.run_id
        else:
            self._reopen(run_id)
        all_tags = {STAGE_TAG: step.entry_point, KEY_TAG: step.key, CODE_TAG: step.code, "mlflow.runName": run_name,
                    THREADS_TAG: str(torch.get_num_threads()),
                    **({PROCESSES_TAG: str(distributed.world())} if distributed.world() > 1 else {}),
                    **{k: str(v) for k, v in tags.items()}, **holder_tags(self.ctx.heartbeat_s)}
        claimed = None
        try:
            with self._disk_failures():
                self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in all_tags.items()])  # live at once
                stack.enter_context(heartbeat(self.client, run_id, self.ctx.heartbeat_s))
                StageRun(self.ctx, run_id, step, Path()).log_params(step.params())
                if on_duplicate != "allow":
                    claimed = self._claim(step, run_id, on_duplicate, reusable)
                checkpoint_dir = self.ctx.state_dir("checkpoints", run_id)
                resumed_from = self._restore(step, run_id, checkpoint_dir)
                if parent_run_id is None:
                    self._end_dead_here(run_id)
        except BaseException as error:
            if not isinstance(error, _Yielded):
                self._mark_failed(run_id, error)
            release(self.client, claimed)
            raise
        return run_id, str(checkpoint_dir), resumed_from, claimed

    def _reopen(self, run_id: str) -> None:
        """A run handed over to continue that was ended meanwhile (a cluster retry: while Ray started the task
        again, another command saw its worker's process gone, `_end_dead_here`): RUNNING again, without the
        reason it was ended for, so it is live while it trains and no identical run takes its key."""
        run = self.client.get_run(run_id)
        if run.info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
            if ERROR_TAG in run.data.tags:
                self.client.delete_tag(run_id, ERROR_TAG)

    def _claim(self, step: Step, run_id: str, on_duplicate: str, reusable: Callable[[], Run | None] | None) -> int:
        """Claim the key of `step` for `run_id` (already tagged as live), then read every claim on it: the
        earliest live one holds the key. Holding it, a run with `reusable` asks it again: an identical run
        that finished between `ensure`'s two reads was neither complete nor live to it, and its claim no
        longer counts; its mark and FINISHED, written before it released that claim, are seen now. Claims
        of runs that are gone, and this run's own from an earlier attempt (a cluster retry continues the
        same run), are removed on the way."""
        faults.point("claim", 0)
        own = claim(self.client, self.ctx.experiment_id, step.key, run_id)
        live, gone = claims(self.client, self.ctx.experiment_id, step.key, self.ctx.heartbeat_s)
        rival = live[0].run if live and live[0].run.info.run_id != run_id else None
        if rival is None and reusable is not None:
            rival = reusable()
        if rival is not None:
            release(self.client, own)
            self._refuse(run_id, rival, on_duplicate)
        for version in gone + [c.version for c in live if c.run.info.run_id == run_id and c.version != own]:
            release(self.client, version)
        return own

    def _refuse(self, run_id: str, rival: Run, on_duplicate: str) -> None:
        if on_duplicate == "wait":
            self.client.delete_run(run_id)  # never trained: nothing to keep
            raise _Yielded(rival.info.run_id)
        tags = rival.data.tags
        raise DuplicateRunError(f"an identical {tags.get(STAGE_TAG)} run is running now: run {rival.info.run_id} "
                                f"(host {tags.get('simclr_s2.host', '?')}, pid {tags.get('simclr_s2.pid', '?')}); "
                                "wait for it to finish (then rerun to reuse it) or stop it")

    def _stale(self, step: Step, run_id: str) -> list[Run]:
        return [r for r in self._same_key(step, UNFINISHED)
                if r.info.run_id != run_id and not is_live(r, self.ctx.heartbeat_s)]

    def _restore(self, step: Step, run_id: str, target: Path) -> str | None:
        """Put the checkpoint this run resumes from into `target` (`_take_checkpoint`) and end the
        stale identical runs still RUNNING: FAILED, saying which run goes on in their place, so a run
        whose process is gone is never left RUNNING, whether or not it had something to resume from, and
        even when taking the checkpoint fails (a full disk): the next attempt takes it in turn.
        Returns the run the checkpoint came from, or None when starting afresh."""
        stale = self._stale(step, run_id)
        try:
            source = self._take_checkpoint(run_id, stale, target)
        except BaseException:
            self._end_stale(stale, f"interrupted; run {run_id} failed while taking over its checkpoint")
            raise
        self._end_stale(stale, f"interrupted; resumed in run {run_id}" if source else "interrupted (its process is "
                        f"gone, no checkpoint to resume from); started again as run {run_id}")
        return source

    def _end_stale(self, stale: Sequence[Run], reason: str) -> None:
        """End FAILED the stale runs still RUNNING: their processes are gone, whatever this run does next. The
        checkpoint a kill left half written goes with them (`_remove_partial_writes`)."""
        for run in stale:
            self._remove_partial_writes(run.info.run_id)
            if run.info.status == "RUNNING":
                self._mark_failed(run.info.run_id, UserError(reason))

    def _end_dead_here(self, run_id: str) -> None:
        """End FAILED the RUNNING runs of the experiment held by a process of this host that is gone, whatever
        their key: a run is otherwise ended only by the next run of its own key, never seen once the key
        changed (another SIMCLR_S2_MAX_EPOCHS, an edit of the code). Only this host's: a pid is checked here,
        while a run of another host may only be late with its heartbeat. Their checkpoints stay, to resume
        should their key come back. Called when a command's own run opens (one search), after `_restore`
        ended its own key's stale runs saying which run goes on in their place."""
        host = socket.gethostname()
        running = self.client.search_runs([self.ctx.experiment_id],
                                          f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{host}'")
        for run in running:
            if run.info.run_id != run_id and not is_live(run, self.ctx.heartbeat_s):
                run = self.client.get_run(run.info.run_id)  # as it is now: a cluster retry may have taken it over
                if is_live(run, self.ctx.heartbeat_s) or run.info.status != "RUNNING":
                    continue
                pid = run.data.tags.get(PID_TAG, "?")
                self._remove_partial_writes(run.info.run_id)
                self._mark_failed(run.info.run_id, UserError(
                    f"interrupted: its process (pid {pid} on {host}) is gone; seen by run {run_id}"))

    def _remove_partial_writes(self, run_id: str) -> None:
        """The checkpoint a run killed while writing it left half written (`runtime.save_atomically`'s
        `.tmp`, as large as a checkpoint): nothing resumes from it, and no clean-up of that run ran."""
        for path in (self.ctx.home / "checkpoints" / run_id).glob(f"*{PARTIAL_SUFFIX}"):
            path.unlink(missing_ok=True)

    def _take_checkpoint(self, run_id: str, stale: Sequence[Run], target: Path) -> str | None:
        """Its own local checkpoint, a stale identical run's local one (newest run first), then the same
        from run artifacts: the first found, a local one being the cheapest to take and, for the same run,
        never behind its artifact. Returns the run it came from."""
        if _has_checkpoint(target):
            return run_id
        for run in stale:
            source = self.ctx.home / "checkpoints" / run.info.run_id
            if _has_checkpoint(source):
                for path in source.iterdir():
                    os.replace(path, target / path.name)
                return run.info.run_id
        for source_id in [run_id, *(r.info.run_id for r in stale)]:
            if self._download_checkpoint(source_id, target):
                return source_id
        return None

    def _download_checkpoint(self, run_id: str, target: Path) -> bool:
        try:
            if not self.client.list_artifacts(run_id, ARTIFACT_DIR):
                return False
            with disk.writing(target), tempfile.TemporaryDirectory(dir=target.parent) as tmp:
                folder = Path(self.client.download_artifacts(run_id, ARTIFACT_DIR, tmp))
                for path in folder.iterdir():
                    os.replace(path, target / path.name)
        except MlflowException as error:
            log.warning("cannot fetch the checkpoint of run %s: %s", run_id, error)
            return False
        log.info("fetched the checkpoint of run %s from its artifacts", run_id)
        return True

    def _end_finished(self, run: StageRun) -> None:
        """Completion mark last, then FINISHED, then the claim released (not before: an identical run
        starting meanwhile must find this one live or complete). A failure here (the store full) ends the
        run FAILED like any other, in `open`."""
        self.client.set_tag(run.run_id, COMPLETE_TAG, "true")
        self.client.set_terminated(run.run_id, RunStatus.to_string(RunStatus.FINISHED))
        release(self.client, run.claim)

    def _retire_superseded(self, run: StageRun) -> None:
        """The stale runs a finished run superseded go to MLflow's trash, and the checkpoints go. A refusal
        (under basic auth, another user's run) or a server lost meanwhile is only logged: the run is
        complete, and those runs stay FAILED, saying which run went on in their place."""
        try:
            superseded = self._stale(run.step, run.run_id)
        except MlflowException as error:
            log.warning("cannot find the runs superseded by run %s: %s", run.run_id, error)
            superseded = []
        for stale in superseded:
            try:
                self._retire(stale, run.run_id)
            except MlflowException as error:
                log.warning("cannot move run %s, superseded by run %s, to the trash: %s",
                            stale.info.run_id, run.run_id, error)
        shutil.rmtree(self.ctx.home / "checkpoints" / run.run_id, ignore_errors=True)

    def _retire(self, stale: Run, run_id: str) -> None:
        """A stale run holding history that run `run_id` now holds: to the trash, with its checkpoints. One
        holding none keeps its run (FAILED, saying it was started again); its folder goes (empty, or what a
        kill left half written)."""
        if self._holds_history(stale):
            self.client.set_tag(stale.info.run_id, RESUMED_IN_TAG, run_id)
            self.client.delete_run(stale.info.run_id)
        shutil.rmtree(self.ctx.home / "checkpoints" / stale.info.run_id, ignore_errors=True)

    def _holds_history(self, run: Run) -> bool:
        """Whether a stale run logged steps a finished identical run now holds: it has a checkpoint (locally
        or in its artifacts; steps are logged only once one covers them), or it was itself resumed (its
        checkpoint went on to the run that resumed it, its copy of the history stayed)."""
        return RESUMED_FROM_TAG in run.data.tags or _has_checkpoint(self.ctx.home / "checkpoints" / run.info.run_id) \
            or bool(self.client.list_artifacts(run.info.run_id, ARTIFACT_DIR))

    def _end_failed(self, run: StageRun, error: BaseException) -> None:
        lost = server_lost(error)
        try:
            run.close_publisher(wait=lost is None and not isinstance(error, KeyboardInterrupt))
        except BaseException as late:  # noqa: BLE001 - the first error is the one to report
            lost = lost or server_lost(late)
        if lost is not None:  # telling the server would only wait for it again; the checkpoints stay
            raise TrackingUnreachable(
                f"tracking server {self.ctx.tracking_uri} {lost}, retried for about {retry_budget_s()} s; "
                f"checkpoints kept in {run.checkpoint_dir}: run the same command again to resume once the "
                "server is back") from error
        self._mark_failed(run.run_id, error)
        release(self.client, run.claim)

    def _mark_failed(self, run_id: str, error: BaseException) -> None:
        status = RunStatus.KILLED if isinstance(error, KeyboardInterrupt) else RunStatus.FAILED
        try:
            self.client.set_tag(run_id, ERROR_TAG, describe(error))
            self.client.set_terminated(run_id, RunStatus.to_string(status))
        except MlflowException as late:
            log.warning("cannot mark run %s %s: %s", run_id, RunStatus.to_string(status), late)

    @contextmanager
    def _disk_failures(self) -> Iterator[None]:
        """A full disk inside becomes its one line (disk.unnamed), so the failed run's tag says what the
        command prints, for errors raised outside a command's body too (the last checkpoint's upload,
        the restore, the completion mark)."""
        try:
            yield
        except Exception as error:
            full = None if isinstance(error, UserError) else disk.unnamed(error, written_folders(self.ctx))
            if full is None:
                raise
            raise full from error


def written_folders(ctx: Context | None) -> dict[str, Path]:
    """The folders the runs of a context write, by what they are to a person: where a full disk that names
    no file is looked for (a command adds its own output folder: stages.base.written_folders)."""
    folders = {} if ctx is None else {"SIMCLR_S2_DATA": ctx.data_root, "SIMCLR_S2_HOME": ctx.home}
    if ctx is not None and (store := sqlite_folder(ctx.tracking_uri)) is not None:  # "database or disk is full"
        folders["the SQLite tracking store's folder"] = store
    return {**folders, "the temporary folder": Path(tempfile.gettempdir())}  # on a tie, the first is named


def _same(logged: float | None, value: float) -> bool:
    """Whether a figure the run holds (None: none) is `value`; NaN is NaN."""
    return logged is not None and (logged == value or (math.isnan(logged) and math.isnan(value)))


def _has_checkpoint(folder: Path) -> bool:
    return folder.is_dir() and any(is_checkpoint(p) for p in folder.iterdir())
