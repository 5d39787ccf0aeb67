"""Start-up of a command: `python -m simclr_s2 finetune --help` and a refused parameter, against a bare
interpreter that imports torch and mlflow (what the entry points paid before they parsed first) and against
`python -c pass`, interleaved (A B C A B C ...), each the median of its runs, with the load average.

Then start to first training: `finetune` (every layer, one epoch, on a small demo chain made beforehand)
from its start until its first epoch's checkpoint is being written (the fault point checkpoint_write@0
kills it there), against a bare script doing the same work (torch, the encoder's weights from a file, the
split's rows from the same packed store, one epoch and a validation pass, the checkpoint written, killed),
interleaved. The goal (issue 23): at most 1.2x the bare script's seconds.

    python benchmarks/bench_startup.py [--repeats 5] [--first-batch-repeats 3] [--demo-patches 200]
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from figures import Figure, Rate, load_average, report

COMMANDS = {
    "help": [sys.executable, "-m", "simclr_s2", "finetune", "--help"],
    "refusal": [sys.executable, "-m", "simclr_s2", "finetune", "--lr", "-1"],
    "import torch + mlflow": [sys.executable, "-c", "import torch, mlflow"],
    "bare interpreter": [sys.executable, "-c", "pass"],
}


# The bare script: the work of finetune's start and first epoch, without the platform (no MLflow, no
# tracking, no checks): argv = store folder, split folder, encoder weights, checkpoint file.
BARE_FIRST_EPOCH = """
import os, signal, sys
import numpy as np, pandas as pd, torch
from simclr_s2.bigearthnet.bands import InputTransform
from simclr_s2.bigearthnet.packed import PackedStore
from simclr_s2.learning.models import IrrigationClassifier, build_simclr
store, splits, weights, checkpoint = PackedStore.open(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
torch.manual_seed(1)
model = build_simclr("resnet18", len(store.bands))
model.load_state_dict(torch.load(weights))
net = IrrigationClassifier.from_simclr(model).to(memory_format=torch.channels_last)
transform = InputTransform(store.bands)
def batches(name, shuffle):
    split = pd.read_csv(f"{splits}/{name}.csv")
    rows, y = store.rows(split["name"].tolist()), torch.tensor(split["label"].to_numpy(), dtype=torch.float32)
    order = np.random.default_rng(1).permutation(len(rows)) if shuffle else np.arange(len(rows))
    for at in range(0, len(order), 32):
        pick = order[at:at + 32]
        x = torch.from_numpy(store.read_inputs(rows[pick], transform))
        yield x.contiguous(memory_format=torch.channels_last), y[pick]
optimizer = torch.optim.Adam(net.parameters(), lr=5e-5)
net.train()
for x, y in batches("train_100pct", True):
    loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
net.eval()
with torch.inference_mode():
    for x, _ in batches("val_100pct", False):
        net(x)
torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, checkpoint)
os.kill(os.getpid(), signal.SIGKILL)
"""


def seconds(command: list[str], env: dict[str, str] | None = None, killed: bool = False) -> float:
    """Wall seconds of `command`; with `killed`, it must end by SIGKILL (its fault point was reached)."""
    start = time.perf_counter()
    done = subprocess.run(command, check=False, capture_output=True, env=env, text=True)
    if killed and done.returncode != -signal.SIGKILL:
        raise SystemExit(f"bench_startup: {command[3]} ended with {done.returncode}, not at its fault point:\n"
                         f"{done.stderr[-2000:]}")
    return time.perf_counter() - start


def _finetune(seed: int) -> list[str]:
    """finetune of every layer for one epoch, a new run for each seed (the demo chain is reused)."""
    return [sys.executable, "-m", "simclr_s2", "finetune", "--trainable", "all", "--epochs", "1",
            "--feature-cache", "false", "--register", "false", "--seed", str(seed)]


def first_epoch(repeats: int, demo_patches: int) -> list[Figure]:
    """Start to the first epoch's checkpoint: finetune against the bare script, interleaved."""
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp_dir:
        tmp = Path(tmp_dir)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "SIMCLR_S2_HOME": str(tmp / "home"),
               "SIMCLR_S2_DATA": str(tmp / "data"), "SIMCLR_S2_DEMO_PATCHES": str(demo_patches),
               "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS": "1"}
        made = subprocess.run(_finetune(0), env=env, capture_output=True, text=True, check=False)
        if made.returncode:  # the demo chain and a first fine-tune (which packs the store), untimed
            raise SystemExit(f"bench_startup: the demo chain failed:\n{made.stderr[-2000:]}")
        splits = tmp / "data" / "demo" / "splits" / "basic"
        weights = tmp / "encoder.pt"
        export = ("import sys, mlflow, torch; torch.save(mlflow.pytorch.load_model("
                  "'models:/simclr-s2-encoder@ben').state_dict(), sys.argv[1])")
        subprocess.run([sys.executable, "-c", export, str(weights)], env=env, check=True, capture_output=True)
        first = (splits / "train_100pct.csv").read_text().splitlines()[1].split(",")[0]
        store = next(p for p in (tmp / "home" / "packed").iterdir()
                     if (p / "names.txt").is_file() and first in (p / "names.txt").read_text())
        bare_script = tmp / "bare.py"
        bare_script.write_text(BARE_FIRST_EPOCH)
        bare = [sys.executable, str(bare_script), str(store), str(splits), str(weights), str(tmp / "bare.ckpt")]
        at_fault = {**env, "SIMCLR_S2_FAULT": "checkpoint_write@0"}
        times: dict[str, list[float]] = {"finetune": [], "bare": []}
        for seed in range(1, repeats + 1):
            times["finetune"].append(seconds(_finetune(seed), at_fault, killed=True))
            times["bare"].append(seconds(bare, env))
    load = load_average()
    for name, ts in times.items():
        print(f"start to first epoch's checkpoint, {name}: median {statistics.median(ts):.2f} s over {len(ts)} runs")
    finetune, bare_rate = (Rate(1 / statistics.median(times[k]), None, load) for k in ("finetune", "bare"))
    return [Figure("`finetune` start to first epoch's checkpoint (commands/s)", finetune,
                   "the same work in a bare script", bare_rate)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="runs of each command, interleaved")
    p.add_argument("--first-batch-repeats", type=int, default=3, help="finetune / bare script pairs; 0: skip")
    p.add_argument("--demo-patches", type=int, default=200, help="size of the demo chain they train on")
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
    figures = [Figure("`finetune --help` (commands/s)", rate["help"], baseline, rate[baseline]),
               Figure("`finetune --lr -1` refused (commands/s)", rate["refusal"], baseline, rate[baseline])]
    report(figures + (first_epoch(args.first_batch_repeats, args.demo_patches) if args.first_batch_repeats else []))


if __name__ == "__main__":
    main()
