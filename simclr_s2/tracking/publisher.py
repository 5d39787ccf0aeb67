"""Publishing a training's epochs to its run without holding training up, and without ever losing a step.

Order is what makes a kill safe: an epoch's checkpoint is written to disk (fsynced, renamed into place),
then uploaded as a run artifact, and only then are the epoch's metrics logged. So a run's logged steps
are always covered by a checkpoint any machine can fetch, and a resumed run logs the steps its
checkpoint holds that the run lacks (`log_missing`): every step exactly once, wherever the kill fell.

Writing, uploading and logging run in a background thread; the training loop only hands over a
snapshot of its state, and the next epoch trains meanwhile. By default every epoch's checkpoint is
written, in order: when training outruns the thread, handing over the next snapshot waits for the
previous one to be taken (at most one being written and one waiting), so what is durable after each
epoch never depends on timing. With an interval (SIMCLR_S2_CHECKPOINT_INTERVAL_S), a checkpoint is
written at most once per interval from the run's start: a snapshot that is not due yet is held, a
newer one replaces it, and the held epochs' metrics wait for the checkpoint that covers them (short
epochs then cost one snapshot copy, not a write and an upload; a kill loses at most an interval of
training, and of logged steps). `close` writes what is held and waits for everything to be sent: a run
is never marked finished with writes or uploads outstanding.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from simclr_s2 import disk, faults
from simclr_s2.learning.runtime import Checkpoint, StepMetrics, save_atomically
from simclr_s2.tracking.artifacts import artifact_folder

log = logging.getLogger(__name__)

ARTIFACT_DIR = "checkpoints"
BATCH = 1000  # metrics per log_batch call (MLflow's limit)


def to_metrics(entries: Sequence[StepMetrics], timestamp_ms: int | None = None) -> list[Metric]:
    now = int(time.time() * 1000) if timestamp_ms is None else timestamp_ms
    return [Metric(key, float(value), now, int(step)) for step, metrics in entries for key, value in metrics.items()]


def log_metrics(client: MlflowClient, run_id: str, metrics: Sequence[Metric]) -> None:
    for start in range(0, len(metrics), BATCH):
        client.log_batch(run_id, metrics=list(metrics[start:start + BATCH]))


def log_missing(client: MlflowClient, run_id: str, history: Sequence[StepMetrics]) -> int:
    """Log the (key, step) pairs of `history` the run does not hold yet; returns how many were logged."""
    keys = {key for _, metrics in history for key in metrics}
    present = {key: {m.step for m in client.get_metric_history(run_id, key)} for key in keys}
    missing = [(step, {k: v for k, v in metrics.items() if step not in present[k]}) for step, metrics in history]
    metrics = to_metrics([(step, m) for step, m in missing if m])
    log_metrics(client, run_id, metrics)
    return len(metrics)


@dataclass
class _Pending:
    state: Checkpoint
    path: Path
    epoch: int
    ready: bool = False  # its epoch's metrics have arrived: both go in one batch


class Publisher:
    """Uploads checkpoints and logs epoch metrics of one run in a background thread, newest first."""

    def __init__(self, client: MlflowClient, run_id: str, interval_s: float = 0.0) -> None:
        self.client, self.run_id, self.interval_s = client, run_id, interval_s
        self._last_write = time.monotonic()  # when the newest checkpoint was taken to be written (or the start)
        self._lock = threading.Condition()
        self._checkpoint: _Pending | None = None  # the newest snapshot, waiting to be written and uploaded
        self._metrics: list[Metric] = []
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"publish-{run_id[:8]}", daemon=True)
        self._thread.start()

    def save(self, checkpoint: Checkpoint, path: Path, epoch: int) -> None:
        """Queue an epoch's checkpoint snapshot, to be written at `path` and uploaded: after waiting for the
        thread to take the one before, if it has not yet; with an interval, in place of that one."""
        with self._lock:
            while self._checkpoint is not None and self._error is None and not self.interval_s:
                self._lock.wait()
            self._raise_error()
            self._checkpoint = _Pending(checkpoint, path, epoch)
            self._lock.notify_all()

    def submit(self, entries: Sequence[StepMetrics]) -> None:
        """Queue an epoch's metrics, to be logged once its checkpoint (handed over just before) is written
        and uploaded."""
        self._raise_error()
        with self._lock:
            self._metrics.extend(to_metrics(entries))
            if self._checkpoint is not None:
                self._checkpoint.ready = True
            self._lock.notify_all()

    def _wait_s(self) -> float | None:
        """Seconds until there is something to send (0: now; None: until notified)."""
        if self._closed:
            return 0.0
        if self._checkpoint is None:
            return 0.0 if self._metrics else None
        if not self._checkpoint.ready:
            return None
        return max(0.0, self._last_write + self.interval_s - time.monotonic())

    def _work(self) -> None:
        while True:
            with self._lock:
                while (wait_s := self._wait_s()) != 0.0:
                    self._lock.wait(wait_s)
                if self._checkpoint is None and not self._metrics:
                    return
                checkpoint, metrics = self._checkpoint, self._metrics
                self._checkpoint, self._metrics, self._busy = None, [], True
                if checkpoint is not None:
                    self._last_write = time.monotonic()
                self._lock.notify_all()  # a snapshot waiting to be handed over may come now
            try:
                self._send(checkpoint, metrics)
            except BaseException as error:  # noqa: BLE001 - handed to the training thread
                with self._lock:
                    self._error, self._busy = error, False
                    self._lock.notify_all()
                return
            with self._lock:
                self._busy = False
                self._lock.notify_all()

    def _send(self, checkpoint: _Pending | None, metrics: list[Metric]) -> None:
        if checkpoint is not None:
            path = checkpoint.path
            with disk.writing(path, path.with_name(path.name + ".tmp")):  # save_atomically's temporary file
                save_atomically(checkpoint.state, path, checkpoint.epoch)
            faults.point("upload", checkpoint.epoch)
            # the next write comes from this thread, after the upload: the file stays as it is meanwhile
            self._upload(path)
            faults.point("after_upload", checkpoint.epoch)
        log_metrics(self.client, self.run_id, metrics)
        if checkpoint is not None:
            faults.point("after_log", checkpoint.epoch)

    def _upload(self, path: Path) -> None:
        """Copy the checkpoint into the run's artifacts; a full or read-only artifact store is one line."""
        with disk.writing(lambda: artifact_folder(self.client, self.run_id)):
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR)

    def _raise_error(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def close(self, wait: bool = True) -> None:
        """Stop after sending what is queued (`wait`), or at once; re-raises a failed send."""
        with self._lock:
            self._closed = True
            if not wait:
                self._checkpoint, self._metrics = None, []
            self._lock.notify_all()
        self._thread.join()
        self._raise_error()

