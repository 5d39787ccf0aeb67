"""The detached processes a state folder started (pid files in run/, output in logs/), and the commands,
waits and HTTP probes every service's start and health check is built from."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from simclr_s2.server.config import StackError, StateDir, write_atomically


def run(cmd: list, check: bool = True) -> subprocess.CompletedProcess:
    """A short tool run (pg_ctl, initdb) whose failure becomes the one-line error of its stderr."""
    result = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, cwd="/")
    if check and result.returncode != 0:
        raise StackError(
            f"`{' '.join(map(str, cmd))}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def group(state: StateDir, name: str) -> tuple[int, bool] | None:
    """(its process group, whether it still runs itself) for a process this folder started while any
    process of its group lives: its own workers can outlive it (a killed mlflow server's uvicorn workers
    keep its port). None when nothing of it runs. The group's id is the pid spawn recorded, which the
    kernel keeps unused while the group has members; the recorded start time guards against reuse."""
    recorded = _recorded(state, name)
    if recorded is None:
        return None
    number, started = recorded
    found = _proc_state(number)
    if found is not None and found[1] != started:  # the pid is another process's now
        return None
    if not _group_alive(number):
        return None
    return number, found is not None and found[0] != "Z"


def running(state: StateDir, name: str) -> bool:
    """Whether the process this folder started as `name` still runs (not only workers it left)."""
    found = group(state, name)
    return found is not None and found[1]


def spawn(state: StateDir, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start a detached process (its own session, so terminate() can end its workers with it)."""
    with open(state.logs / f"{name}.log", "ab") as log:
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=state.root,
            start_new_session=True,
        )
    write_atomically(state.run / f"{name}.pid", f"{proc.pid} {_proc_state(proc.pid)[1]}\n")
    return proc


def terminate(state: StateDir, name: str, timeout: float = 20) -> bool:
    """Stop a spawned process and its whole group, or what is left of the group when the process itself
    died; False when nothing of it was running."""
    found = group(state, name)
    if found is None:
        (state.run / f"{name}.pid").unlink(missing_ok=True)
        return False
    _killpg(found[0], signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _group_alive(found[0]) and time.monotonic() < deadline:
        time.sleep(0.2)
    _killpg(found[0], signal.SIGKILL)  # leftover workers of the group, or a process that ignored SIGTERM
    (state.run / f"{name}.pid").unlink(missing_ok=True)
    return True


def failure(state: StateDir, name: str, message: str) -> StackError:
    """The error for a process that did not come up, after showing the end of its log (the real cause)."""
    path = state.logs / f"{name}.log"
    lines = path.read_text(errors="replace").splitlines()[-15:] if path.exists() else []
    tail = "\n".join(f"    {line}" for line in lines)
    print(f"last lines of {path}:\n{tail}", file=sys.stderr)
    return StackError(message)


def wait(what: str, timeout: float, ready: Callable[[], bool], proc: subprocess.Popen | None = None) -> None:
    """Poll `ready` until it holds; fail early when `proc` exits, since it will never become ready."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with status {proc.returncode} before it was healthy")
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not healthy after {timeout} s")
        time.sleep(0.3)


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _recorded(state: StateDir, name: str) -> tuple[int, str] | None:
    """(pid, start time) from the pid file; None when there is none, or when it cannot be read (a crash
    before spawn wrote it): that process is then taken as not running, with a warning."""
    path = state.run / f"{name}.pid"
    try:
        number, started = path.read_text().split()
        return int(number), started
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        print(f"warning: {path} is unreadable: {name} taken as not running", file=sys.stderr)
        return None


def _group_alive(group: int) -> bool:
    """Whether a live (not zombie) process of this machine is in process group `group`."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it exited meanwhile
            continue
        if fields[2] == str(group) and fields[0] != "Z":
            return True
    return False


def _proc_state(number: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) from /proc/<pid>/stat; None when there is no such process."""
    try:
        fields = Path(f"/proc/{number}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _killpg(number: int, sig: int) -> None:
    try:
        os.killpg(number, sig)
    except ProcessLookupError:
        pass
