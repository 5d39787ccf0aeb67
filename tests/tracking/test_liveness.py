"""A holder's process that /proc will not describe (another user's, under hidepid=2) is judged by its
heartbeat, as a run of another host: a command's sweep of this host's dead runs must never end someone else's
live run, and a dead run whose pid another user's process took must not hold its key for ever."""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import psutil
import pytest

from simclr_s2.tracking import liveness


def _unseen(pid: int) -> str:
    raise psutil.NoSuchProcess(pid)


@pytest.mark.parametrize(("kill", "alive"), [(PermissionError, None), (ProcessLookupError, False)])
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


@pytest.mark.parametrize(("age_s", "live"), [(5.0, True), (86400.0, False)])
def test_a_hidden_holder_is_judged_by_its_heartbeat(monkeypatch, age_s, live):
    monkeypatch.setattr(liveness, "_process_alive", lambda pid, started: None)
    now = time.time()
    tags = {**liveness.holder_tags(30.0), liveness.HEARTBEAT_TAG: f"{now - age_s:.3f}"}
    run = SimpleNamespace(info=SimpleNamespace(status="RUNNING", start_time=0), data=SimpleNamespace(tags=tags))
    assert liveness.is_live(run, 30.0, now=now) is live
