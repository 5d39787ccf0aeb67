"""How far a dispatch is, while it runs: a bar on a terminal (none in non-interactive logs, as tqdm does
without a TTY) and one log line per task that ends, with the counts."""

from __future__ import annotations

import logging

from tqdm import tqdm

log = logging.getLogger(__name__)


class Progress:
    """Counts of `what` (cells, workers) done, running and failed."""

    def __init__(self, total: int, what: str) -> None:
        self.total, self.what = total, what
        self.done = self.running = self.failed = 0
        self.bar = tqdm(total=total, desc=what, unit=what.rstrip("s"), disable=None)
        log.info("%d %s to run on the Ray cluster", total, what)

    def started(self) -> None:
        self.running += 1
        self._show()

    def ended(self, label: str, error: str) -> None:
        self.running -= 1
        self.done += not error
        self.failed += bool(error)
        self.bar.update()
        self._show()
        outcome = f"failed: {error}" if error else "done"
        log.log(logging.ERROR if error else logging.INFO, "%s %s; %s", label, outcome, self.counts())

    def counts(self) -> str:
        return f"{self.what}: {self.done} done, {self.running} running, {self.failed} failed of {self.total}"

    def _show(self) -> None:
        self.bar.set_postfix(running=self.running, failed=self.failed)

    def close(self) -> None:
        self.bar.close()
