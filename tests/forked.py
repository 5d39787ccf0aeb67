"""A process forked from the test's own, for fault tests that need a real process to die: it inherits the
imports already done (a fresh interpreter importing the stages costs 3.5 CPU-s or more)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable


def forked_exit_code(target: Callable[[], None], timeout: float = 300) -> int | None:
    """The exit status of `target` run in a forked process (negative: the signal that killed it); one that
    outlives `timeout` is killed here, so a hung fault cannot hang the suite."""
    process = multiprocessing.get_context("fork").Process(target=target)
    process.start()
    try:
        process.join(timeout=timeout)
    finally:
        if process.is_alive():
            process.kill()
    return process.exitcode
