"""The entry-point boundary: a user error or a full disk is one line and status 2, a tracking server that
cannot be reached is status 3 (however the error is spelled: requests' connection errors are OSErrors
too), and a bug keeps its traceback."""

from __future__ import annotations

import errno
import os

import pytest
import requests

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
