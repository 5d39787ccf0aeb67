"""How torch's CPU threads wait: training steps with the spin count `import simclr_s2` sets (GOMP_SPINCOUNT=1000,
unless a wait policy or spin count is set) against libgomp's own default (300,000 spins before a waiting
thread sleeps) and against OMP_WAIT_POLICY=PASSIVE (no spinning), on quiet cores and on cores shared with busy
processes (a shared machine). A spinning thread burns the core the thread it waits for needs: where the cores
are shared, the same steps cost several times the CPU; where they are quiet, a short spin catches the short
waits that sleeping would turn into wake-ups.

Each measurement is a fresh process (libgomp reads the variables when torch loads): a ResNet-18 classifier of
the study's 10 bands, one intra-op thread per core, Adam steps on batches of --batch-size random 64 px patches
(the demo's pretraining views), timed after 3 warm-up steps. The settings alternate (in turn, then in reverse),
medians of --repeats, images/s over wall and over the process's CPU seconds, with the load average; `--busy`
busy processes (one pure-Python loop each) run beside the shared-core measurements.

    python benchmarks/bench_threads.py [--steps 10] [--repeats 3] [--busy 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from figures import Figure, Rate, report

WAIT_VARIABLES = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
DEFAULT = "libgomp's default"
SETTINGS = {"simclr_s2's GOMP_SPINCOUNT=1000": {"GOMP_SPINCOUNT": "1000"}, DEFAULT: {},
            "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"}}
STEPS = """
import json, os, sys, time
import torch  # before simclr_s2: the policy in this process's environment is the one measured
from simclr_s2.learning.models import IrrigationClassifier
steps, batch = int(sys.argv[1]), int(sys.argv[2])
torch.manual_seed(0)
model = IrrigationClassifier.from_scratch("resnet18", 10).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(model.parameters(), 1e-3)
x = torch.randn(batch, 10, 64, 64).contiguous(memory_format=torch.channels_last)
y = (torch.arange(batch) % 2).float()
def step():
    optimizer.zero_grad()
    torch.nn.functional.binary_cross_entropy_with_logits(model(x).reshape(-1), y).backward()
    optimizer.step()
for _ in range(3):
    step()
wall, cpu = time.perf_counter(), time.process_time()
for _ in range(steps):
    step()
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu,
                  "load": os.getloadavg()[0], "threads": torch.get_num_threads()}))
"""


def measure(setting: dict[str, str], steps: int, batch: int) -> dict:
    """One fresh process's timed steps, with the wait variables of `setting` only."""
    env = {k: v for k, v in os.environ.items() if k not in WAIT_VARIABLES} | setting
    done = subprocess.run([sys.executable, "-c", STEPS, str(steps), str(batch)], env=env, check=True,
                          capture_output=True, text=True)
    return json.loads(done.stdout.splitlines()[-1])


@contextmanager
def busy(n: int) -> Iterator[None]:
    """`n` processes each spinning a core in pure Python while the block runs."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def compare(label: str, steps: int, batch: int, repeats: int) -> list[Figure]:
    """Every setting, alternating; each other setting's medians against libgomp's default."""
    runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
    for i in range(repeats):
        for name in (list(SETTINGS) if i % 2 == 0 else list(SETTINGS)[::-1]):
            result = measure(SETTINGS[name], steps, batch)
            runs[name].append(result)
            print(f"{label}, {name}: {result['wall']:.2f} s, {result['cpu']:.2f} CPU-s, "
                  f"{result['threads']} threads, load {result['load']:.1f}", flush=True)

    def rate(name: str) -> Rate:
        images = steps * batch
        return Rate(images / statistics.median(r["wall"] for r in runs[name]),
                    images / statistics.median(r["cpu"] for r in runs[name]),
                    statistics.median(r["load"] for r in runs[name]))

    rates = {name: rate(name) for name in SETTINGS}
    default = rates.pop(DEFAULT)
    for name, measured in rates.items():
        print(f"{label}: {name} / {DEFAULT}, images/s {measured.per_s / default.per_s:.2f}x, "
              f"per CPU-s {measured.per_cpu_s / default.per_cpu_s:.2f}x (medians of {repeats})", flush=True)
    return [Figure(f"training steps, {name}, {label} (images/s)", measured, f"the same steps, {DEFAULT}, {label}",
                   default) for name, measured in rates.items()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=10, help="timed training steps a measurement")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3, help="measurements of each setting, per condition")
    p.add_argument("--busy", type=int, default=1, help="busy processes beside the shared-core measurements")
    args = p.parse_args()
    figures = compare("quiet cores", args.steps, args.batch_size, args.repeats)
    if args.busy:
        with busy(args.busy):
            figures += compare(f"{args.busy} busy process(es) beside", args.steps, args.batch_size, args.repeats)
    report(figures)


if __name__ == "__main__":
    main()
