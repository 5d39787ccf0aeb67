"""`make demo` as a newcomer runs it, on a fresh store: wall time, CPU-seconds (user + system of make and
every process under it) and the test F1 it ends at, --runs times, each on its own fresh store, so the F1
can be seen to be the same every time.

The goal (issue 23.4): at most 60 s on 2 quiet cores after install, test F1 at least 0.8, identical on
every run. On a shared machine wall time says little, so the CPU-seconds are the measure: 60 s on 2 quiet
cores is at most about 100 CPU-seconds (less the time the cores wait on each other). CPU-seconds inflate
under load too (threads that spin while they wait for a descheduled partner), so quote the load beside them.
Each run also prints where its wall time went, from the timestamps of the demo's own log lines (PIECES).
The first run's store then maps the demo scene with the README's own commands, and both printed lines are
checked against the ones the README quotes (they drift when the demo's classifier changes; the tests run
the demo smaller, so only this full-size run can tell).

    python benchmarks/bench_demo.py [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import tempfile
import time
from datetime import datetime
from pathlib import Path

from figures import Figure, Rate, children_cpu_seconds, load_average, report

ROOT = Path(__file__).parents[1]
SUMMARY = re.compile(r"^finetune-.*: best epoch .*test F1 (?P<f1>[0-9.]+).*$", re.MULTILINE)
MAP_LINE = re.compile(r"^demo-scene: .*?; maps in", re.MULTILINE)  # the path after it is the machine's
README = ROOT / "README.md"
# (piece, the log line that ends it: its last occurrence), in the order they run; a piece's wall time runs
# from the end of the piece before it (the first from the start of `make demo`)
PIECES = (
    ("make, mlflow run starting the command", r"=== Running command"),
    ("entry point start (imports, auto look-ups)", r"demo-data-.*: running as run"),
    ("demo archive written", r"index-.*: running as run"),
    ("index", r"splits-basic-.*: running as run"),
    ("splits, both schemes", r"pretrain-.*: running as run"),
    ("pretraining, packing included", r"simclr_s2\.learning\.simclr: pretrain epoch"),
    ("encoder registered", r"registered simclr-s2-encoder"),
    ("fine-tune start, BatchNorm recalibrated", r"BatchNorm statistics recomputed"),
    ("features cached", r"cached .* features"),
    ("the head's epochs", r"simclr_s2\.learning\.train: epoch"),
    ("test scored, classifier registered", r"registered simclr-s2-irrigation"),
    ("the runs ended, make exits", None),
)
STAMP = re.compile(r"^(\d{4}[-/]\d\d[-/]\d\d \d\d:\d\d:\d\d(?:,\d{3})?)")


def _when(line: str) -> datetime | None:
    """The local time a log line was written (MLflow's lines: whole seconds; the package's: milliseconds)."""
    found = STAMP.match(line)
    return None if found is None else datetime.strptime(
        found.group(1).replace("/", "-").replace(",", "."),
        "%Y-%m-%d %H:%M:%S" + (".%f" if "," in found.group(1) else ""))


def pieces(output: str, started: datetime, ended: datetime) -> list[tuple[str, float]]:
    """Wall seconds of each piece in PIECES that the output shows (a reused step shows none)."""
    lines = output.splitlines()
    found, last = [], started
    for piece, pattern in PIECES:
        at = ended if pattern is None else next(
            (w for line in reversed(lines) if re.search(pattern, line) and (w := _when(line))), None)
        if at is not None:
            found.append((piece, (at - last).total_seconds()))
            last = at
    return found


def store_env(store: Path) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store}/mlflow.db",
            "SIMCLR_S2_HOME": str(store / "home"), "SIMCLR_S2_DATA": str(store / "data")}


def readme_map_line(store: Path) -> str:
    """The README's map block (its ```sh block that runs predict), run as written after `make demo` on
    `store`: its `demo-scene:` line up to the folder."""
    block = next(b for b in re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL) if "-e predict" in b)
    done = subprocess.run(block, shell=True, executable="/bin/bash", cwd=ROOT, env=store_env(store),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    found = MAP_LINE.search(done.stdout)
    if done.returncode or found is None:
        raise SystemExit(f"the README's map commands failed (status {done.returncode}):\n{done.stdout[-3000:]}")
    return found.group(0)


def quoted(pattern: re.Pattern) -> str:
    """The README's quoted line `pattern` finds."""
    found = pattern.search(README.read_text())
    return found.group(0) if found else "(none)"


def says(quote: str, line: str) -> bool:
    """Whether `line` is what the README's `quote` shows, where "..." in the quote stands for any text."""
    return re.fullmatch(".*?".join(map(re.escape, quote.split("..."))), line) is not None


def demo(store: Path) -> tuple[float, float, float, str, list[tuple[str, float]]]:
    """(wall s, CPU s, load at the end, the summary line, the pieces) of one `make demo` on the fresh store
    `store`."""
    env = store_env(store)
    cpu, start, started = children_cpu_seconds(), time.perf_counter(), datetime.now()
    done = subprocess.run(["make", "demo"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, check=False)
    wall, cpu = time.perf_counter() - start, children_cpu_seconds() - cpu
    summary = SUMMARY.search(done.stdout)
    if done.returncode or summary is None:
        raise SystemExit(f"make demo failed (status {done.returncode}):\n{done.stdout[-3000:]}")
    return wall, cpu, load_average(), summary.group(0), pieces(done.stdout, started, datetime.now())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=2, help="fresh stores, one make demo each")
    args = p.parse_args()
    results, mapped = [], ""
    for run in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="bench_demo_") as tmp:
            before = load_average()
            wall, cpu, load, summary, parts = demo(Path(tmp))
            mapped = mapped or readme_map_line(Path(tmp))
        results.append((wall, cpu, summary))
        print(f"run {run + 1}: {wall:.0f} s, {cpu:.0f} CPU-s, load {before:.1f} -> {load:.1f}\n  {summary}")
        print("".join(f"    {seconds:6.1f} s  {piece}\n" for piece, seconds in parts), end="", flush=True)
    same = len({summary for _, _, summary in results}) == 1
    print(f"the same summary on every run: {'yes' if same else 'NO'}")
    for what, got, want in (("summary", results[0][2], quoted(SUMMARY)), ("map", mapped, quoted(MAP_LINE))):
        verdict = "the same" if says(want, got) else f"DIFFERS: README {want!r}, got {got!r}"
        print(f"the README's {what} line: {verdict}")
    wall, cpu = min(w for w, _, _ in results), min(c for _, c, _ in results)
    f1 = SUMMARY.search(results[0][2]).group("f1")
    report([Figure("make demo on a fresh store, fastest run (demos per hour)", Rate(3600 / wall, 3600 / cpu, load),
                   "goal: 60 s on 2 quiet cores, about 100 CPU-s (60 demos/h, 36 per CPU-hour)", None,
                   f"{cpu:.0f} CPU-s, test F1 {f1}, {'the same' if same else 'NOT the same'} on {args.runs} runs")])


if __name__ == "__main__":
    main()
