"""One table for all the benchmark scripts: each adds its headline figures, each beside the baseline it
measured in the same run and the load average when both were taken, to the JSON-lines file named by
BENCH_TABLE (`make bench` sets it); this module prints them together at the end. A script run on its own
prints its own figures in the same layout.

    python benchmarks/figures.py FILE
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

TABLE_ENV = "BENCH_TABLE"


@dataclass(frozen=True)
class Rate:
    """A throughput: per wall-clock second, per second of this process's CPU time (None when not taken),
    and the 1-minute load average when the measurement ended."""

    per_s: float
    per_cpu_s: float | None
    load: float

    def __str__(self) -> str:
        return f"{self.per_s:,.0f}" if self.per_s >= 100 else f"{self.per_s:.3g}"


@dataclass(frozen=True)
class Figure:
    """A measured rate beside its baseline's (`base` None: the baseline could not run, `note` says why)."""

    figure: str
    value: Rate
    baseline: str
    base: Rate | None = None
    note: str = ""

    @classmethod
    def from_json(cls, line: str) -> Figure:
        raw = json.loads(line)
        base = Rate(**raw["base"]) if raw["base"] else None
        return cls(raw["figure"], Rate(**raw["value"]), raw["baseline"], base, raw["note"])


def load_average() -> float:
    return os.getloadavg()[0]


def children_cpu_seconds() -> float:
    """CPU time of this process's finished child processes (a command timed from outside)."""
    t = os.times()
    return t.children_user + t.children_system


def cpu_seconds() -> float:
    """CPU time of this process's threads and of its finished child processes (packing workers...)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Clock:
    """Wall and CPU time of the work between `start` and `stop`, summed over several spans."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0

    def start(self) -> None:
        self._wall, self._cpu = time.perf_counter(), cpu_seconds()

    def stop(self) -> None:
        self.wall += time.perf_counter() - self._wall
        self.cpu += cpu_seconds() - self._cpu

    def rate(self, n: float) -> Rate:
        """`n` units over the timed spans (per CPU-second None when too short to measure)."""
        return Rate(n / self.wall, n / self.cpu if self.cpu > 0 else None, load_average())


def _cpu(rate: Rate | None) -> str:
    return "-" if rate is None or rate.per_cpu_s is None else f"{rate.per_cpu_s:,.0f}"


def render(figures: Sequence[Figure]) -> str:
    """The figures as a markdown table; ratio = value / baseline value (above 1: faster than the baseline)."""
    lines = ["| figure | value | per CPU-s | load | baseline | baseline value | per CPU-s | load | ratio |",
             "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for f in figures:
        measured = f"| {f.figure} | {f.value} | {_cpu(f.value)} | {f.value.load:.2f} |"
        if f.base is None:
            lines.append(f"{measured} {f.baseline}: {f.note or 'not measured'} | - | - | - | - |")
        else:
            lines.append(f"{measured} {f.baseline} | {f.base} | {_cpu(f.base)} | {f.base.load:.2f} | "
                         f"{f.value.per_s / f.base.per_s:.2f}x |")
    return "\n".join(lines)


def report(figures: Sequence[Figure]) -> None:
    """Print the figures, and add them to the shared table when BENCH_TABLE names one."""
    print(render(figures), flush=True)
    path = os.environ.get(TABLE_ENV)
    if path:
        with open(path, "a") as fh:
            fh.writelines(json.dumps(asdict(f)) + "\n" for f in figures)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path, help="the JSON-lines file the scripts wrote (BENCH_TABLE)")
    args = parser.parse_args()
    figures = [Figure.from_json(line) for line in args.file.read_text().splitlines() if line.strip()]
    print(f"\n== all figures ({len(figures)}); load = 1-minute load average when each was taken\n")
    print(render(figures))


if __name__ == "__main__":
    main()
