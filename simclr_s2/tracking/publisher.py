"""Publishing a training's epochs to its run without holding training up, and without ever losing a step.

Order is what makes a kill safe: an epoch's checkpoint is durable on disk, then uploaded as a run
artifact, and only then are the epoch's metrics logged. So a run's logged steps are always covered by a
checkpoint any machine can fetch, and a resumed run logs the steps its checkpoint holds that the run
lacks (`log_missing`): every step exactly once, wherever the kill fell.

The upload and the logging run in a background thread: the next epoch trains meanwhile. When training
outruns the uploads, only the newest checkpoint is uploaded (it holds everything the older ones did) and
the metrics waiting for it go with it. `close` waits for everything to be sent: a run is never marked
finished with uploads outstanding.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from simclr_s2 import faults
from simclr_s2.runtime import StepMetrics

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


class Publisher:
    """Uploads checkpoints and logs epoch metrics of one run in a background thread, newest first."""

    def __init__(self, client: MlflowClient, run_id: str, staging: Path) -> None:
        self.client, self.run_id, self.staging = client, run_id, staging
        self._lock = threading.Condition()
        self._checkpoint: tuple[Path, int] | None = None  # staged copy and its epoch, waiting for upload
        self._metrics: list[Metric] = []
        self._busy = False
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name=f"publish-{run_id[:8]}", daemon=True)
        self._thread.start()

    def submit(self, checkpoint: Path | None, entries: Sequence[StepMetrics], epoch: int) -> None:
        """Queue an epoch: its checkpoint (already durable at `checkpoint`) and its metrics."""
        self._raise_error()
        staged = self._stage(checkpoint, epoch) if checkpoint is not None else None
        with self._lock:
            if staged is not None:
                if self._checkpoint is not None:  # superseded before it was sent: drop its copy
                    shutil.rmtree(self._checkpoint[0].parent, ignore_errors=True)
                self._checkpoint = (staged, epoch)
            self._metrics.extend(to_metrics(entries))
            self._lock.notify()

    def _stage(self, checkpoint: Path, epoch: int) -> Path:
        """A hard link to this epoch's checkpoint file: the next epoch replaces the file, not the link."""
        folder = self.staging / f"epoch-{epoch}"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        staged = folder / checkpoint.name
        try:
            os.link(checkpoint, staged)
        except OSError:  # a file system without hard links
            shutil.copy2(checkpoint, staged)
        return staged

    def _work(self) -> None:
        while True:
            with self._lock:
                while self._checkpoint is None and not self._metrics and not self._closed:
                    self._lock.wait()
                if self._checkpoint is None and not self._metrics:
                    return
                checkpoint, metrics = self._checkpoint, self._metrics
                self._checkpoint, self._metrics, self._busy = None, [], True
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

    def _send(self, checkpoint: tuple[Path, int] | None, metrics: list[Metric]) -> None:
        if checkpoint is not None:
            path, epoch = checkpoint
            faults.point("upload", epoch)
            self.client.log_artifact(self.run_id, str(path), ARTIFACT_DIR)
            shutil.rmtree(path.parent, ignore_errors=True)
            faults.point("after_upload", epoch)
        log_metrics(self.client, self.run_id, metrics)
        if checkpoint is not None:
            faults.point("after_log", checkpoint[1])

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

