"""A holder's process that /proc will not describe (another user's, under hidepid=2) is taken as alive: a
command's sweep of this host's dead runs must never end someone else's live run."""

from __future__ import annotations

import os

import psutil
import pytest

from simclr_s2.tracking import liveness


def _unseen(pid: int) -> str:
    raise psutil.NoSuchProcess(pid)


@pytest.mark.parametrize(("kill", "alive"), [(PermissionError, True), (ProcessLookupError, False)])
def test_a_process_proc_hides_is_judged_by_kill_0(monkeypatch, kill, alive):
    def signal_0(pid: int, sig: int) -> None:
        assert sig == 0
        raise kill

    monkeypatch.setattr(liveness, "_pid_start", _unseen)
    monkeypatch.setattr(os, "kill", signal_0)
    assert liveness._process_alive(4242, "123.0") is alive


def test_this_process_is_alive_and_a_restarted_pid_is_not():
    started = liveness._pid_start(os.getpid())
    assert liveness._process_alive(os.getpid(), started)
    assert not liveness._process_alive(os.getpid(), "0.0")
