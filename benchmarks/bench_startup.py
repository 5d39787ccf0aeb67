"""Start-up of a command: `python -m simclr_s2 finetune --help` and a refused parameter, against a bare
interpreter that imports torch and mlflow (what the entry points paid before they parsed first) and against
`python -c pass`, interleaved (A B C A B C ...), each the median of its runs, with the load average.

    python benchmarks/bench_startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

from figures import Figure, Rate, load_average, report

COMMANDS = {
    "help": [sys.executable, "-m", "simclr_s2", "finetune", "--help"],
    "refusal": [sys.executable, "-m", "simclr_s2", "finetune", "--lr", "-1"],
    "import torch + mlflow": [sys.executable, "-c", "import torch, mlflow"],
    "bare interpreter": [sys.executable, "-c", "pass"],
}


def seconds(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=False, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="runs of each command, interleaved")
    args = p.parse_args()
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.repeats):
        for name, command in COMMANDS.items():
            times[name].append(seconds(command))
    load = load_average()
    rate = {name: Rate(1 / statistics.median(ts), None, load) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f} s over {len(ts)} runs")
    baseline = "import torch + mlflow"
    report([Figure("`finetune --help` (commands/s)", rate["help"], baseline, rate[baseline]),
            Figure("`finetune --lr -1` refused (commands/s)", rate["refusal"], baseline, rate[baseline])])


if __name__ == "__main__":
    main()
