"""Where the suite's CPU goes: with SIMCLR_S2_TEST_CPU_LOG naming a .jsonl file, each test appends its CPU
seconds (tests/conftest.py) and each server stack its detached processes' (tests/server/conftest.py). Wall
time means nothing on a shared machine; CPU seconds do. `python tests/cpu_probe.py LOG` sums them by folder."""

from __future__ import annotations

import json
import os
import resource
import sys
from collections import Counter

CPU_LOG_ENV = "SIMCLR_S2_TEST_CPU_LOG"


def cpu_seconds() -> float:
    """User + system CPU of this process and of every child it has waited for (`mlflow run`, entry points)."""
    return sum(u.ru_utime + u.ru_stime for u in map(resource.getrusage, (resource.RUSAGE_SELF,
                                                                          resource.RUSAGE_CHILDREN)))


def record_cpu(what: str, seconds: float) -> None:
    """One line {"test", "cpu_s"} in the file named by CPU_LOG_ENV, when it is set: wall time means nothing on a
    shared machine, CPU seconds do. Session fixtures count in the setup (and teardown) of the test that
    builds (ends) them; detached services report their own (tests/server/conftest.py)."""
    if path := os.environ.get(CPU_LOG_ENV):
        with open(path, "a") as log:
            log.write(json.dumps({"test": what, "cpu_s": round(seconds, 3)}) + "\n")


def summary(path: str, top: int = 10) -> str:
    """CPU seconds by folder, then the `top` biggest tests."""
    with open(path) as log:
        rows = [json.loads(line) for line in log]
    folders = Counter()
    for row in rows:
        folders[row["test"].split("::")[0].removeprefix("tests/").rsplit("/", 1)[0]] += row["cpu_s"]
    lines = [f"{seconds:8.1f}  {folder}" for folder, seconds in folders.most_common()]
    lines += [f"{sum(folders.values()):8.1f}  total", "", f"the {top} biggest:"]
    lines += [f"{row['cpu_s']:8.1f}  {row['test']}" for row in sorted(rows, key=lambda r: -r["cpu_s"])[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summary(sys.argv[1]))
