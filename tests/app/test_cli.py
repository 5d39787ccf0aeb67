"""The entry-point boundary: a user error, a full disk, credentials a tracking server refuses or a URI naming
no MLflow server is one line and status 2, a tracking server that cannot be reached is status 3 (however the
error is spelled: requests' connection errors are OSErrors too), and a bug keeps its traceback. A finished
command leaves without the interpreter's teardown, but with its exit handlers run, its output flushed and its
threads done."""

from __future__ import annotations

import errno
import gc
import os
import subprocess
import sys

import pytest
import requests
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED

from simclr_s2.app import boundary, cli
from simclr_s2.errors import UserError
from simclr_s2.stages.classifier import FINETUNE


@pytest.fixture
def failing(monkeypatch: pytest.MonkeyPatch):
    """`cli.main` whose command raises the given error; os._exit raises SystemExit instead of leaving."""
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)  # no launcher run to mark
    monkeypatch.setattr(boundary, "quiet_defaults", lambda: None)

    def leave(code: int) -> None:
        raise SystemExit(code)

    monkeypatch.setattr(os, "_exit", leave)

    def run(error: BaseException) -> None:
        def command(*args: object) -> None:
            raise error

        monkeypatch.setattr(boundary, "run_command", command)
        cli.main(FINETUNE, [])

    return run


@pytest.mark.parametrize(("error", "status"), [
    (requests.exceptions.ConnectionError("Connection refused"), cli.UNREACHABLE),
    (UserError("fraction: expected one of 1, 3, 10, 25, 50, 100"), cli.USER_ERROR),
    (OSError(errno.ENOSPC, "No space left on device", "/state/x.pt"), cli.USER_ERROR),
    # a basic-auth server refusing the credentials, or the user's permission: MLflow's wording of each
    (MlflowException("API request to endpoint /api/2.0/mlflow/experiments/get-by-name failed with error code "
                     "401 != 200. Response body: 'You are not authenticated.'", error_code=UNAUTHENTICATED),
     cli.USER_ERROR),
    (MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 403 != 200. "
                     "Response body: 'Permission denied'", error_code=PERMISSION_DENIED), cli.USER_ERROR),
    # MLFLOW_TRACKING_URI naming a server that is not MLflow's
    (MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code 404 != 200. "
                     "Response body: '404 page not found\n'", error_code=ENDPOINT_NOT_FOUND), cli.USER_ERROR),
])
def test_the_exit_status_tells_a_down_server_from_a_user_error(failing, capsys, error, status):
    with pytest.raises(SystemExit) as exited:
        failing(error)
    assert exited.value.code == status
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_a_bug_keeps_its_traceback(failing):
    with pytest.raises(FileNotFoundError):
        failing(FileNotFoundError(errno.ENOENT, "No such file", "/missing"))


def test_the_stage_runs_collected_with_the_start_up_frozen(failing, monkeypatch):
    """The start-up's imports are out of the collector's reach (gc.freeze), and the collector is on again
    for the command itself, which may make cyclic garbage for hours."""
    seen, frozen_before = {}, gc.get_freeze_count()
    monkeypatch.setattr(boundary, "run_command", lambda *args: seen.update(
        enabled=gc.isenabled(), frozen=gc.get_freeze_count()))
    with pytest.raises(SystemExit) as exited:
        cli.main(FINETUNE, [])
    assert exited.value.code == 0
    assert seen["enabled"] and seen["frozen"] > frozen_before


def _leaving(script: str) -> subprocess.CompletedProcess[str]:
    """`script` run in a fresh interpreter after `from simclr_s2.app.cli import leave`."""
    return subprocess.run([sys.executable, "-c", "from simclr_s2.app.cli import leave\n" + script],
                          check=False, capture_output=True, text=True)


def test_leaving_runs_the_exit_handlers_and_flushes_but_skips_the_teardown():
    left = _leaving(
        "import atexit, sys\n"
        "class TornDown:\n"
        "    def __del__(self):\n"
        "        print('torn down')\n"
        "kept = TornDown()  # freed only by the interpreter's teardown\n"
        "atexit.register(print, 'handler ran')\n"
        "sys.stdout.write('buffered, ')\n"
        "leave(2)\n")
    assert (left.returncode, left.stdout, left.stderr) == (2, "buffered, handler ran\n", "")


def test_leaving_waits_for_a_thread_still_at_work():
    left = _leaving(
        "import threading\n"
        "looked = threading.Event()\n"
        "seen = threading.enumerate\n"
        "def look():  # leave looks at the threads while this one still waits\n"
        "    found = seen()\n"
        "    looked.set()\n"
        "    return found\n"
        "threading.enumerate = look\n"
        "threading.Thread(target=lambda: (looked.wait(), print('thread finished'))).start()\n"
        "leave(0)\n")
    assert (left.returncode, left.stdout) == (0, "thread finished\n")
