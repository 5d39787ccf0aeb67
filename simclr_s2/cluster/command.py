"""What runs inside a Ray worker for the project backend plugin: an entry point's MLproject command. Kept
free of the training stack, so the worker that only starts the command starts fast."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from simclr_s2.cluster.environment import for_this_node


@dataclass(frozen=True)
class Exited:
    """The last item an entry point's output stream yields: its exit status."""

    code: int


def entry_point(command: str, env: Mapping[str, str], folder: str | None) -> Iterator[str | Exited]:
    """The MLproject `command` of an entry point in the project `folder` (None: this worker's copy, Ray's
    working_dir), first on the import path so the code is the submitter's: its output line by line, then
    its exit status. `python` is this worker's interpreter. Cancelled, the command stops with its children."""
    folder = folder or os.getcwd()
    child_env = {**os.environ, **for_this_node(env), "PYTHONUNBUFFERED": "1",
                 "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
                 "PYTHONPATH": os.pathsep.join(filter(None, [folder, os.environ.get("PYTHONPATH")]))}
    process = subprocess.Popen(command, shell=True, cwd=folder, env=child_env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        for line in process.stdout:  # noqa: UP028 - `yield from` makes Ray call send() on the file
            yield line
        yield Exited(process.wait())
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait()
