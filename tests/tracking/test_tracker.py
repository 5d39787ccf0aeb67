"""The run lifecycle against a real SQLite tracking store: keys, honest reuse, one live run per key,
resume after a kill at every dangerous point, and endings that tell the truth."""

from __future__ import annotations

import errno
import multiprocessing
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import replace

import pytest
import torch
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import PERMISSION_DENIED
from tiny_training import context_env, train, train_in_child
from tiny_training import step as tiny_step

from simclr_s2 import disk, faults
from simclr_s2.errors import UserError
from simclr_s2.faults import FAULT_ENV, POINTS
from simclr_s2.tracking import tracker as lifecycle
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.liveness import (
    CLAIMS_MODEL,
    HEARTBEAT_TAG,
    HOST_TAG,
    INTERVAL_TAG,
    PID_START_TAG,
    PID_TAG,
    holder_tags,
    is_live,
)
from simclr_s2.tracking.publisher import ARTIFACT_DIR
from simclr_s2.tracking.tracker import (
    COMPLETE_TAG,
    ERROR_TAG,
    KEY_TAG,
    RESUMED_FROM_TAG,
    RESUMED_IN_TAG,
    THREADS_TAG,
    DuplicateRunError,
    Step,
    Tracker,
)

STEP = Step("s", {"a": "1"}, code="c")


def _steps(ctx, run_id: str, key: str = "train_loss") -> list[int]:
    return sorted(m.step for m in Tracking.of(ctx).client.get_metric_history(run_id, key))


def test_the_key_holds_parameters_resolved_values_and_code():
    keys = {Step("s", {"a": "1"}, code="c").key, Step("s", {"a": "2"}, code="c").key,
            Step("s", {"a": "1"}, {"split": "runs:/x"}, code="c").key, Step("s", {"a": "1"}, code="d").key,
            Step("t", {"a": "1"}, code="c").key}
    assert len(keys) == 5
    assert Step("s", {"a": "1"}, code="c").key == STEP.key


def test_a_finished_run_is_reused_only_with_its_completion_mark(ctx):
    calls: list[str] = []
    tracker = Tracker(ctx)
    first = tracker.ensure(STEP, lambda run: calls.append(run.run_id), run_name="s")
    assert (first.info.status, first.data.tags[COMPLETE_TAG]) == ("FINISHED", "true")
    assert first.data.tags[THREADS_TAG] == str(torch.get_num_threads())
    assert tracker.ensure(STEP, lambda run: calls.append(run.run_id), run_name="s").info.run_id == first.info.run_id
    # as if it ended before all it promised existed
    Tracking.of(ctx).client.set_tag(first.info.run_id, COMPLETE_TAG, "false")
    third = tracker.ensure(STEP, lambda run: calls.append(run.run_id), run_name="s")
    assert third.info.run_id != first.info.run_id and len(calls) == 2


def test_other_code_or_inputs_are_never_reused_and_reuse_false_runs_again(ctx):
    calls: list[str] = []
    tracker = Tracker(ctx)
    for step in (STEP, replace(STEP, code="fixed-bug"), replace(STEP, resolved={"split": "runs:/other"})):
        tracker.ensure(step, lambda run: calls.append(run.run_id), run_name="s")
    assert len(calls) == 3
    Tracker(ctx.with_reuse(False)).ensure(STEP, lambda run: calls.append(run.run_id), run_name="s")
    assert len(calls) == 4


def test_an_error_ends_the_run_failed_with_its_reason_and_no_mark(ctx):
    with pytest.raises(UserError), Tracker(ctx).open(STEP, run_name="s") as run:
        raise UserError("patch X: missing band file")
    ended = Tracking.of(ctx).client.get_run(run.run_id)
    assert ended.info.status == "FAILED" and ended.data.tags[ERROR_TAG] == "patch X: missing band file"
    assert COMPLETE_TAG not in ended.data.tags
    assert Tracker(ctx).find_complete(STEP) is None


def _mark_refused(client, monkeypatch) -> None:
    """The store refuses the completion mark, as a full SQLite store does."""
    set_tag = client.set_tag

    def refusing(run_id: str, key: str, value: str, *args, **kwargs):
        if key == COMPLETE_TAG:
            raise MlflowException("(sqlite3.OperationalError) database or disk is full")
        return set_tag(run_id, key, value, *args, **kwargs)

    monkeypatch.setattr(client, "set_tag", refusing)


def test_a_failure_writing_the_completion_mark_ends_the_run_failed_and_releases_its_claim(ctx, monkeypatch):
    client = Tracking.of(ctx).client
    _mark_refused(client, monkeypatch)
    with pytest.raises(disk.DiskFullError) as raised, Tracker(ctx).open(STEP, run_name="s") as run:
        pass
    ended = client.get_run(run.run_id)
    assert ended.info.status == "FAILED" and ended.data.tags[ERROR_TAG] == str(raised.value)
    assert "is full" in str(raised.value)
    with pytest.raises(MlflowException, match="not found|RESOURCE_DOES_NOT_EXIST"):
        client.get_model_version(CLAIMS_MODEL, str(run.claim))


def test_a_full_disk_outside_a_commands_body_is_the_same_one_line_on_the_run(ctx, tmp_path):
    """The translation of stages.base.run_command covers only the stage's body: the tracker's own failure
    path gives a full disk the same one line, on the run and raised."""
    with pytest.raises(disk.DiskFullError) as raised, Tracker(ctx).open(STEP, run_name="s") as run:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "model.pth"))
    line = str(raised.value)
    assert line.startswith(f"cannot write {tmp_path / 'model.pth'}: file system") and "is full" in line
    assert Tracking.of(ctx).client.get_run(run.run_id).data.tags[ERROR_TAG] == line


def _stale_run(ctx, **tags: str) -> str:
    """A RUNNING run of STEP whose process is gone (killed), with `tags`."""
    return Tracking.of(ctx).client.create_run(ctx.experiment_id, tags={
        KEY_TAG: STEP.key, **holder_tags(ctx.heartbeat_s), PID_START_TAG: "1.00", **tags}).info.run_id


def test_a_refused_clean_up_of_a_superseded_run_leaves_the_finished_run_complete(ctx, monkeypatch, caplog):
    """Under basic auth a stale run of another user cannot be deleted: the run that resumed it is complete
    all the same, the refusal only a warning."""
    stale = _stale_run(ctx, **{RESUMED_FROM_TAG: "older"})
    client = Tracking.of(ctx).client

    def denied(run_id: str) -> None:
        raise MlflowException(f"Permission denied for run {run_id}", error_code=PERMISSION_DENIED)

    monkeypatch.setattr(client, "delete_run", denied)
    with Tracker(ctx).open(STEP, run_name="s") as run:
        pass
    done = client.get_run(run.run_id)
    assert (done.info.status, done.data.tags[COMPLETE_TAG]) == ("FINISHED", "true")
    assert client.get_run(stale).info.status == "FAILED" and "Permission denied" in caplog.text


def test_a_full_disk_fetching_a_stale_runs_checkpoint_is_one_line_and_ends_that_run_too(ctx, monkeypatch, tmp_path):
    stale = _stale_run(ctx)
    client = Tracking.of(ctx).client
    (tmp_path / "train.pt").write_bytes(b"a checkpoint")
    client.log_artifact(stale, str(tmp_path / "train.pt"), ARTIFACT_DIR)

    def full(run_id: str, path: str, dst_path: str) -> str:
        raise OSError(errno.ENOSPC, "No space left on device", f"{dst_path}/{path}/train.pt")

    monkeypatch.setattr(client, "download_artifacts", full)
    with pytest.raises(disk.DiskFullError, match="train.pt: file system .* is full"), \
            Tracker(ctx).open(STEP, run_name="s"):
        pass
    ended = {r.info.run_id: r for r in Tracker(ctx).unfinished(STEP)}
    assert [r.info.status for r in ended.values()] == ["FAILED", "FAILED"]
    (resumer,) = set(ended) - {stale}
    assert ended[stale].data.tags[ERROR_TAG] == f"interrupted; run {resumer} failed while taking over its checkpoint"


def test_an_unwritable_state_folder_is_one_line_and_a_failed_run(ctx, tmp_path):
    (tmp_path / "not-a-folder").write_text("a file where the state folder should be")
    broken = replace(ctx, home=tmp_path / "not-a-folder")
    with pytest.raises(UserError, match="SIMCLR_S2_HOME: cannot write the state folder"), \
            Tracker(broken).open(STEP, run_name="s"):
        pass
    (run,) = Tracker(ctx).unfinished(STEP)
    assert run.info.status == "FAILED" and "SIMCLR_S2_HOME" in run.data.tags[ERROR_TAG]


def test_an_identical_live_run_is_refused_with_its_id(ctx):
    tracker = Tracker(ctx)
    with tracker.open(STEP, run_name="first") as first, pytest.raises(DuplicateRunError, match=first.run_id), \
            tracker.open(STEP, run_name="second"):
        pass
    refused = [r for r in tracker.unfinished(STEP)]
    assert [r.info.status for r in refused] == ["FAILED"]
    assert Tracking.of(ctx).client.get_run(first.run_id).info.status == "FINISHED"


def test_inside_a_chain_an_identical_live_run_is_awaited_then_reused(ctx, monkeypatch):
    release, calls, results = threading.Event(), [], []

    def slow(run):
        calls.append(run.run_id)
        release.wait(60)

    waiting = Tracker._wait_while_live

    def wait_and_release(self, run):  # the second caller reached the wait: let the first one finish
        release.set()
        waiting(self, run)

    monkeypatch.setattr(Tracker, "_wait_while_live", wait_and_release)
    first = threading.Thread(target=lambda: results.append(Tracker(ctx).ensure(STEP, slow, run_name="s")))
    first.start()
    while not calls:
        time.sleep(0.05)
    second = Tracker(ctx).ensure(STEP, lambda run: calls.append(run.run_id), run_name="s")
    first.join(60)
    assert len(calls) == 1 and second.info.run_id == results[0].info.run_id == calls[0]


def test_inside_a_chain_an_identical_run_finishing_between_the_two_reads_is_reused(ctx):
    """`ensure` asks "complete?", then "live?": an identical run finishing in between is neither, and its
    claim no longer counts. Holding the key, the new run asks again and reuses it instead of training."""
    trained, started, go, first_done = [], threading.Event(), threading.Event(), threading.Event()

    def first_run(run):
        trained.append(run.run_id)
        started.set()
        assert go.wait(60)

    class FinishingBetween(Tracker):
        def find_complete(self, step):  # the first run finishes after this read, before `live_run`'s
            found = super().find_complete(step)
            if found is None and not go.is_set():
                go.set()
                assert first_done.wait(60)
            return found

    first = threading.Thread(target=lambda: (Tracker(ctx).ensure(STEP, first_run, run_name="s"), first_done.set()))
    first.start()
    assert started.wait(60)
    second = FinishingBetween(ctx).ensure(STEP, lambda run: trained.append(run.run_id), run_name="s")
    first.join(60)
    assert trained == [second.info.run_id]
    assert [r.info.run_id for r in Tracking.of(ctx).client.search_runs([ctx.experiment_id])] == trained


def test_the_heartbeat_beats_through_the_claim_and_the_restore(ctx, monkeypatch):
    """Seen from another host a run is live while its heartbeat is fresh: silent through a long restore (a
    checkpoint downloaded from its artifacts), it would look stale and its key be taken."""
    beating, seen = set(), []
    heartbeat, claim, take = lifecycle.heartbeat, lifecycle.claim, Tracker._take_checkpoint

    @contextmanager
    def recorded(client, run_id, interval_s):
        beating.add(run_id)
        with heartbeat(client, run_id, interval_s):
            yield
        beating.discard(run_id)

    def claiming(client, experiment_id, key, run_id):
        seen.append(("claim", run_id in beating))
        return claim(client, experiment_id, key, run_id)

    def taking(self, run_id, stale, target):
        seen.append(("restore", run_id in beating))
        return take(self, run_id, stale, target)

    monkeypatch.setattr(lifecycle, "heartbeat", recorded)
    monkeypatch.setattr(lifecycle, "claim", claiming)
    monkeypatch.setattr(Tracker, "_take_checkpoint", taking)
    with Tracker(ctx).open(STEP, run_name="s") as run:
        assert run.run_id in beating
    assert seen == [("claim", True), ("restore", True)] and not beating


def test_a_run_is_stale_once_its_process_is_gone_or_its_heartbeat_stops(ctx):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True,
                          text=True)
    tags = {**holder_tags(30), PID_TAG: dead.stdout.strip(), PID_START_TAG: "1.00"}
    assert not is_live(Tracking.of(ctx).client.create_run(ctx.experiment_id, tags=tags), heartbeat_s=30)
    assert is_live(Tracking.of(ctx).client.create_run(ctx.experiment_id, tags=holder_tags(30)), heartbeat_s=30)
    elsewhere = {**holder_tags(30), HOST_TAG: "another-host"}
    assert is_live(Tracking.of(ctx).client.create_run(ctx.experiment_id, tags=elsewhere), heartbeat_s=30)
    silent = {**elsewhere, HEARTBEAT_TAG: f"{time.time() - 100:.3f}"}
    assert not is_live(Tracking.of(ctx).client.create_run(ctx.experiment_id, tags=silent), heartbeat_s=30)


def test_a_heartbeat_is_judged_by_its_holders_interval_not_the_readers(ctx):
    """A holder on another host beating every 60 s is live to a reader beating every 2 s, 7 s after its
    last beat; a run from before the interval was recorded is judged by the reader's."""
    slow = {**holder_tags(60), HOST_TAG: "another-host", HEARTBEAT_TAG: f"{time.time() - 7:.3f}"}
    assert is_live(Tracking.of(ctx).client.create_run(ctx.experiment_id, tags=slow), heartbeat_s=2)
    unrecorded = {k: v for k, v in slow.items() if k != INTERVAL_TAG}
    assert not is_live(Tracking.of(ctx).client.create_run(ctx.experiment_id, tags=unrecorded), heartbeat_s=2)


def test_a_commands_run_ends_this_hosts_dead_runs_of_any_key_and_keeps_their_checkpoints(ctx):
    """A killed run is ended by the next run of its key; rerun with a key of its own (another max epochs, an
    edited code) it would stay RUNNING for ever. A command's run ends it: this host's runs whose process
    is gone, whatever their key. A live one, and one on another host (only late with its heartbeat, maybe),
    stay RUNNING; so does all of it for a step inside a chain."""
    client = Tracking.of(ctx).client

    def running(**tags: str) -> str:
        return client.create_run(ctx.experiment_id, tags={KEY_TAG: "another-key", **holder_tags(1), **tags}
                                 ).info.run_id

    dead, live = running(**{PID_START_TAG: "1.00"}), running()
    elsewhere = running(**{HOST_TAG: "another-host", HEARTBEAT_TAG: f"{time.time() - 100:.3f}"})
    folder = ctx.home / "checkpoints" / dead
    folder.mkdir(parents=True)
    (folder / "train.pt").write_bytes(b"a checkpoint")
    (folder / "train.pt.tmp").write_bytes(b"half a checkpoint")
    with Tracker(ctx).open(STEP, run_name="s", parent_run_id=live):
        pass
    assert client.get_run(dead).info.status == "RUNNING"
    with Tracker(ctx).open(STEP, run_name="s") as run:
        pass
    assert [client.get_run(r).info.status for r in (dead, live, elsewhere)] == ["FAILED", "RUNNING", "RUNNING"]
    assert client.get_run(dead).data.tags[ERROR_TAG] == (
        f"interrupted: its process (pid {os.getpid()} on {socket.gethostname()}) is gone; seen by run {run.run_id}")
    assert [p.name for p in folder.iterdir()] == ["train.pt"]  # to resume, should its key come back


def test_a_run_continued_after_another_command_ended_it_is_running_again(ctx):
    """A cluster retry continues its run; another command may have seen the dead worker's process gone
    and ended that run meanwhile: continued, it is RUNNING (live, holding its key) without that reason."""
    client = Tracking.of(ctx).client
    run_id = client.create_run(ctx.experiment_id).info.run_id
    Tracking.of(ctx).end(run_id, "FAILED", "interrupted: its process is gone")
    with Tracker(ctx).open(STEP, run_name="s", run_id=run_id):
        during = client.get_run(run_id)
    assert during.info.status == "RUNNING" and ERROR_TAG not in during.data.tags
    assert client.get_run(run_id).info.status == "FINISHED"


FORKSERVER = multiprocessing.get_context("forkserver")
# What every child would import again: torch._dynamo (the first optimizer imports it, 1.2 CPU-s) and MLflow's
# SQL store (0.7): this file's CPU 38.5 -> 20.4 s
FORKSERVER.set_forkserver_preload(["torch", "torch._dynamo", "mlflow", "mlflow.store.tracking.sqlalchemy_store",
                                   "tiny_training"])


def _killed(ctx, epochs: int, fault: str, env: dict[str, str] | None = None) -> int:
    """The exit code of `train_in_child` with SIMCLR_S2_FAULT=`fault` (and `env`), in a child forked from a
    server that has already imported torch, torch._dynamo and MLflow's store (and started no thread)."""
    env = {**context_env(ctx), **(env or {}), FAULT_ENV: fault}
    child = FORKSERVER.Process(target=train_in_child, args=(epochs, env))
    child.start()
    child.join(timeout=300)
    return child.exitcode


@pytest.mark.parametrize("point", POINTS)
def test_a_kill_at_any_dangerous_point_resumes_with_every_step_exactly_once(ctx, point):
    assert _killed(ctx, 4, f"{point}@1") == -9
    (stale,) = Tracker(ctx).unfinished(tiny_step(4))
    run = Tracking.of(ctx).client.get_run(train(ctx, 4))  # resumed here: the kill needed a process of its own
    assert run.info.status == "FINISHED" and run.data.tags[RESUMED_FROM_TAG] == stale.info.run_id
    assert _steps(ctx, run.info.run_id) == _steps(ctx, run.info.run_id, "val_auc") == [0, 1, 2, 3]
    gone = Tracking.of(ctx).client.get_run(stale.info.run_id)
    assert gone.info.lifecycle_stage == "deleted" and gone.data.tags[RESUMED_IN_TAG] == run.info.run_id


def test_a_kill_right_after_resuming_leaves_no_running_run_and_every_step_once(ctx):
    """The resumed run dies before training on: the next attempt goes on from its checkpoint, ends it and the
    first FAILED at once (no zombie RUNNING), and the finished run alone holds the history."""
    assert _killed(ctx, 4, "after_log@1") == -9
    (first,) = Tracker(ctx).unfinished(tiny_step(4))
    assert _killed(ctx, 4, "resumed@0") == -9
    (resumed, ended) = Tracker(ctx).unfinished(tiny_step(4))
    assert (ended.info.run_id, ended.info.status) == (first.info.run_id, "FAILED")
    assert resumed.data.tags[RESUMED_FROM_TAG] == first.info.run_id and _steps(ctx, resumed.info.run_id) == [0, 1]
    run = Tracking.of(ctx).client.get_run(train(ctx, 4))
    assert run.info.status == "FINISHED" and run.data.tags[RESUMED_FROM_TAG] == resumed.info.run_id
    assert _steps(ctx, run.info.run_id) == _steps(ctx, run.info.run_id, "val_auc") == [0, 1, 2, 3]
    every = Tracking.of(ctx).client.search_runs([ctx.experiment_id], run_view_type=ViewType.ALL)
    assert sorted((r.info.status, r.info.lifecycle_stage) for r in every) == [
        ("FAILED", "deleted"), ("FAILED", "deleted"), ("FINISHED", "active")]
    assert Tracking.of(ctx).client.get_run(resumed.info.run_id).data.tags[ERROR_TAG] == (
        f"interrupted; resumed in run {run.info.run_id}")


def test_a_checkpoint_half_written_by_a_killed_run_is_removed_when_that_run_is_ended(ctx):
    """Killed while writing its first checkpoint, a run leaves the `.tmp` (as large as a checkpoint) and
    nothing to resume: the next run removes it when it ends that run, and its folder once it finishes."""
    assert _killed(ctx, 2, "checkpoint_write@0") == -9
    (first,) = Tracker(ctx).unfinished(tiny_step(2))
    folder = ctx.home / "checkpoints"
    assert [p.name for p in (folder / first.info.run_id).iterdir()] == ["train.pt.tmp"]
    assert _killed(ctx, 2, "after_log@0") == -9  # it ends the first, then dies itself
    assert not any((folder / first.info.run_id).iterdir())
    run_id = train(ctx, 2)
    assert sorted(p.name for p in folder.iterdir()) == []
    kept = Tracking.of(ctx).client.get_run(first.info.run_id)  # it held no history: kept, saying so
    assert (kept.info.status, kept.info.lifecycle_stage) == ("FAILED", "active")
    assert Tracking.of(ctx).client.get_run(run_id).info.status == "FINISHED"


def test_a_resume_fetches_the_checkpoint_from_artifacts_when_the_state_folder_is_gone(ctx):
    assert _killed(ctx, 4, "after_log@1") == -9
    shutil.rmtree(ctx.home)
    run_id = train(ctx, 4)
    run = Tracking.of(ctx).client.get_run(run_id)
    assert RESUMED_FROM_TAG in run.data.tags
    assert _steps(ctx, run_id) == [0, 1, 2, 3]


def test_an_unbroken_run_and_a_resumed_one_log_the_same_numbers(ctx):
    unbroken = train(ctx, 3)
    Tracker(ctx).client.delete_run(unbroken)  # so the next identical run trains instead of anything else
    assert _killed(ctx, 3, "upload@1") == -9
    resumed = train(ctx, 3)
    for key in ("train_loss", "val_auc"):
        values = [[m.value for m in sorted(Tracking.of(ctx).client.get_metric_history(r, key), key=lambda m: m.step)]
                  for r in (unbroken, resumed)]
        assert values[0] == pytest.approx(values[1], rel=1e-6)


def _uploads(monkeypatch) -> list[int]:
    """The epochs whose checkpoints are uploaded from now on, in order (recorded at the `upload` point)."""
    epochs: list[int] = []
    point = faults.point

    def recording(name: str, epoch: int) -> None:
        if name == "upload":
            epochs.append(epoch)
        point(name, epoch)

    monkeypatch.setattr(faults, "point", recording)
    return epochs


def test_with_a_checkpoint_interval_epochs_share_one_write_and_every_step_is_logged_once(ctx, monkeypatch):
    uploads = _uploads(monkeypatch)
    run_id = train(replace(ctx, checkpoint_interval_s=3600), 4)
    assert uploads == [3]  # epochs 0-2 held, each replaced by the next; the last written when the run ends
    assert _steps(ctx, run_id) == _steps(ctx, run_id, "val_auc") == [0, 1, 2, 3]
    assert [a.path for a in Tracking.of(ctx).client.list_artifacts(run_id, "checkpoints")] == ["checkpoints/train.pt"]


def test_with_a_checkpoint_interval_a_kill_loses_only_unwritten_epochs_no_step_twice(ctx, monkeypatch):
    assert _killed(ctx, 4, "checkpoint_write@3", {"SIMCLR_S2_CHECKPOINT_INTERVAL_S": "3600"}) == -9
    (stale,) = Tracker(ctx).unfinished(tiny_step(4))
    assert _steps(ctx, stale.info.run_id) == []  # the held epochs' metrics died with their checkpoint
    uploads = _uploads(monkeypatch)
    run_id = train(ctx, 4)  # no checkpoint to resume from: trained again, every epoch written
    assert uploads == [0, 1, 2, 3]
    assert _steps(ctx, run_id) == _steps(ctx, run_id, "val_auc") == [0, 1, 2, 3]
