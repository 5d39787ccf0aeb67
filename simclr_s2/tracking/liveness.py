"""Is the process behind a RUNNING run still alive? A run's status cannot say: a killed process leaves it
RUNNING forever. So every open run carries who holds it (host, pid and the pid's start time) and a
heartbeat tag refreshed by a background thread. A run is live when its process is seen alive on this host,
or, from another host, when its heartbeat is recent; otherwise it is stale and may be resumed.

Two identical runs started together both tag a claim time, then look for each other: the earlier claim
(ties broken by run id) goes on and the later one yields, so exactly one trains.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psutil
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

HOST_TAG = "simclr_s2.host"
PID_TAG = "simclr_s2.pid"
PID_START_TAG = "simclr_s2.pid_start"
CLAIM_TAG = "simclr_s2.claimed_at"
HEARTBEAT_TAG = "simclr_s2.heartbeat"
STALE_AFTER = 3  # heartbeats missed before a run on another host counts as stale


def _pid_start(pid: int) -> str:
    return f"{psutil.Process(pid).create_time():.2f}"


def holder_tags() -> dict[str, str]:
    """Tags naming this process as the holder of a run, with a claim time and a first heartbeat."""
    now = f"{time.time():.3f}"
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PID_START_TAG: _pid_start(os.getpid()),
            CLAIM_TAG: now, HEARTBEAT_TAG: now}


def _process_alive(pid: int, started: str) -> bool:
    try:
        return _pid_start(pid) == started
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def is_live(run: Run, heartbeat_s: float, now: float | None = None) -> bool:
    """True while the process holding a RUNNING run may still be working on it."""
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname() and PID_TAG in tags:
        return _process_alive(int(tags[PID_TAG]), tags.get(PID_START_TAG, ""))
    last = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
    return (time.time() if now is None else now) - last < STALE_AFTER * heartbeat_s


def claim_order(run: Run) -> tuple[float, str]:
    """Who goes first among identical live runs: the earliest claim, then the smallest run id."""
    return float(run.data.tags.get(CLAIM_TAG, "inf")), run.info.run_id


@contextmanager
def heartbeat(client: MlflowClient, run_id: str, interval_s: float) -> Iterator[None]:
    """Refresh the run's heartbeat tag every `interval_s` seconds while the body runs. A failed refresh
    (the tracking server restarting) is only logged: training must not stop for it."""
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval_s):
            try:
                client.set_tag(run_id, HEARTBEAT_TAG, f"{time.time():.3f}")
            except Exception as error:  # noqa: BLE001 - any failure here is only a missed beat
                log.debug("heartbeat of run %s missed: %s", run_id, error)

    thread = threading.Thread(target=beat, name=f"heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
