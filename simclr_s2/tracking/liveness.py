"""Is the process behind a RUNNING run still alive? A run's status cannot say: a killed process leaves it
RUNNING forever. So every open run carries who holds it (host, pid and the pid's start time) and a
heartbeat tag refreshed by a background thread, with its interval. A run is live when its process is seen
alive on this host, or, from another host, when its heartbeat is under STALE_AFTER of its own intervals
old; otherwise it is stale and may be resumed.

A run claims its key before it trains, so that two identical runs never both train, however close
together they start. The claim is a version of the registered model `simclr-s2-claims`, tagged with the
experiment and key and naming the run. The store numbers versions itself, in one transaction that also
updates the registered model's row, so creations are serialised on SQLite and PostgreSQL alike, and a
number is never given twice, not even after a deletion. Check after write: a run writes its claim, then
reads every claim of its key, and the live claim with the smallest number holds the key. Two contenders
cannot both win: whichever wrote second got the larger number, and its read, after its write, sees the
first one's claim. No clock takes part, so neither skew between hosts nor a delay between deciding and
writing can make a later claim look earlier. A claim is deleted when its run ends or loses; a killed
run's claim stays until the next contender sees that run is stale and deletes it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import psutil
from mlflow.entities import Run, ViewType
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import RESOURCE_DOES_NOT_EXIST, ErrorCode
from mlflow.tracking import MlflowClient

log = logging.getLogger(__name__)

HOST_TAG = "simclr_s2.host"
PID_TAG = "simclr_s2.pid"
PID_START_TAG = "simclr_s2.pid_start"
HEARTBEAT_TAG = "simclr_s2.heartbeat"
INTERVAL_TAG = "simclr_s2.heartbeat_s"  # the holder's interval: readers with another SIMCLR_S2_HEARTBEAT_S judge by it
STALE_AFTER = 3  # heartbeats missed before a run on another host counts as stale
CLAIMS_MODEL = "simclr-s2-claims"
CLAIM_TAG = "simclr_s2.claim"  # "<experiment id>/<key>": runs are reused and resumed within their experiment


def _pid_start(pid: int) -> str:
    return f"{psutil.Process(pid).create_time():.2f}"


def holder_tags(heartbeat_s: float) -> dict[str, str]:
    """Tags naming this process as the holder of a run, with a first heartbeat and the interval of the next."""
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid()), PID_START_TAG: _pid_start(os.getpid()),
            HEARTBEAT_TAG: f"{time.time():.3f}", INTERVAL_TAG: f"{heartbeat_s:g}"}


def _process_alive(pid: int, started: str) -> bool | None:
    """Whether the holder's process still runs; None where this process cannot tell: one /proc will not show
    (another user's, under hidepid) exists (kill(pid, 0) answers EPERM), but its start time, which tells the
    holder from a later process under its pid, is out of reach."""
    try:
        return _pid_start(pid) == started
    except ValueError:
        return False
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        try:
            os.kill(pid, 0)
        except PermissionError:
            return None
        except ProcessLookupError:
            return False
        return False  # ours, and psutil saw none a moment ago: a new process under the pid, not the holder


def is_live(run: Run, heartbeat_s: float, now: float | None = None) -> bool:
    """True while the process holding a RUNNING run may still be working on it. Its heartbeat is judged
    by the holder's own interval (`heartbeat_s`, this process's, only for runs that do not record theirs):
    a reader beating faster must not take a slower holder's silence for its death."""
    if run.info.status != "RUNNING":
        return False
    tags = run.data.tags
    if tags.get(HOST_TAG) == socket.gethostname() and PID_TAG in tags:
        alive = _process_alive(int(tags[PID_TAG]), tags.get(PID_START_TAG, ""))
        if alive is not None:
            return alive  # else judged by its heartbeat, as a run of another host
    last = float(tags.get(HEARTBEAT_TAG, run.info.start_time / 1000))
    interval = float(tags.get(INTERVAL_TAG, heartbeat_s))
    return (time.time() if now is None else now) - last < STALE_AFTER * interval


@dataclass(frozen=True)
class Claim:
    """A claim on a key: its version of CLAIMS_MODEL and the run it names."""

    version: int
    run: Run


def claim(client: MlflowClient, experiment_id: str, key: str, run_id: str) -> int:
    """Write the claim of run `run_id` on `key` in its experiment (the registered model made on first
    use); returns its number. Whether it holds the key is for `claims` to say, read after this write."""
    try:
        return _claim_version(client, f"{experiment_id}/{key}", run_id)
    except MlflowException as error:
        if not _missing(error):
            raise
    try:
        client.create_registered_model(CLAIMS_MODEL, description=(
            "simclr-s2 bookkeeping, not a model: a version per run that holds its key (one live run per "
            "key); deleted when its run ends"))
    except MlflowException as error:  # another process made it meanwhile
        log.debug("%s exists: %s", CLAIMS_MODEL, error)
    return _claim_version(client, f"{experiment_id}/{key}", run_id)


def _claim_version(client: MlflowClient, claimed: str, run_id: str) -> int:
    version = client.create_model_version(CLAIMS_MODEL, f"runs:/{run_id}/claim", run_id=run_id,
                                          tags={CLAIM_TAG: claimed})
    return int(version.version)


def claims(client: MlflowClient, experiment_id: str, key: str, heartbeat_s: float) -> tuple[list[Claim], list[int]]:
    """The claims on `key` in the experiment whose runs are live, the holder (smallest number) first, and
    the numbers of those whose runs are gone (ended, deleted or stale)."""
    versions = client.search_model_versions(f"name = '{CLAIMS_MODEL}' and tags.`{CLAIM_TAG}` = '{experiment_id}/{key}'")
    if not versions:
        return [], []
    ids = ", ".join(f"'{v.run_id}'" for v in versions)
    runs = {r.info.run_id: r for r in client.search_runs([experiment_id], f"attributes.run_id IN ({ids})",
                                                         run_view_type=ViewType.ALL, max_results=len(versions))}
    live = [Claim(int(v.version), runs[v.run_id]) for v in versions if _holds(runs.get(v.run_id), heartbeat_s)]
    gone = [int(v.version) for v in versions if not _holds(runs.get(v.run_id), heartbeat_s)]
    return sorted(live, key=lambda c: c.version), gone


def _holds(run: Run | None, heartbeat_s: float) -> bool:
    """A claim holds while its run exists, is not deleted, and is live."""
    return run is not None and run.info.lifecycle_stage == "active" and is_live(run, heartbeat_s)


def release(client: MlflowClient, version: int | None) -> None:
    """Delete a claim (None: there is none). A failure (gone already, no permission to delete it under basic
    auth, the server down) is only logged: only claims of live runs count, so the claim of a run that ended
    or lost holds nothing, and a later run removes it."""
    if version is None:
        return
    try:
        client.delete_model_version(CLAIMS_MODEL, str(version))
    except MlflowException as error:
        log.log(logging.DEBUG if _missing(error) else logging.WARNING, "claim %s not released: %s", version, error)


def _missing(error: MlflowException) -> bool:
    return error.error_code == ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)


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
