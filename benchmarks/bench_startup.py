"""Start-up of a command: `python -m simclr_s2 finetune --help` and a refused parameter, against a bare
interpreter that imports torch and mlflow (what the entry points paid before they parsed first) and against
`python -c pass`, interleaved (A B C, C B A, ...), each the median of its runs, with the load average.

Then start to first training: `finetune` (every layer, one epoch, on a small demo chain made beforehand)
from its start until its first epoch's checkpoint is being written (the fault point checkpoint_write@0
kills it there), against a bare script doing the same work (torch, the encoder's weights from a file, the
split's rows from the same packed store, one epoch and a validation pass, the checkpoint written, killed),
interleaved, wall and CPU seconds (user + system of the process and its children: the load disturbs them
less). The goal (issue 23): at most 1.2x the bare script's seconds. `--before <tree>` times a second
`finetune` from another tree (e.g. `git worktree add /tmp/before <commit>`) in the same rounds, each tree
with its own demo chain in the same store, so a change's before and after share the load. Each tree's
commands run in that tree with it first on PYTHONPATH (`python -m` puts the working folder first, and the
installed package may point anywhere). Then `evaluate --set test` as a whole command against a bare
script that loads the weights and predicts, and that script opening the SQLite store as well (what any
command that tracks in MLflow pays: MLflow, its SQL store and schema check).

Then the whole `finetune` command (issue 23.2's goal: at least 0.9x the bare loop's images/s, a checkpoint every
epoch, epochs of at least 20 s): every layer, 2 epochs, test scoring and registration, on a chain of its own
(3600 demo patches: about 950 training patches, 20 s epochs on 2 quiet cores) whose encoder is imported
untrained rather than pretrained (pretraining that many patches would take minutes), against a bare script
doing the same work start to end; training images over each one's whole wall time.

Every figure is warm: the demo chain, made first, has read the interpreter, the packages and the store
into the page cache, and the rounds keep them there. A cold start (after a reboot or a cache drop) adds
the disk's reads to every command alike and is not measured.

    python benchmarks/bench_startup.py [--repeats 5] [--first-batch-repeats 3] [--demo-patches 200]
    python benchmarks/bench_startup.py --repeats 0 --first-batch-repeats 3 --before /tmp/before
    python benchmarks/bench_startup.py --repeats 0 --first-batch-repeats 0 --evaluate-repeats 0 --whole-repeats 1
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from figures import Figure, Rate, children_cpu_seconds, load_average, report

ROOT = Path(__file__).resolve().parents[1]  # this tree

COMMANDS = {
    "help": [sys.executable, "-m", "simclr_s2", "finetune", "--help"],
    "refusal": [sys.executable, "-m", "simclr_s2", "finetune", "--lr", "-1"],
    "import torch + mlflow": [sys.executable, "-c", "import torch, mlflow"],
    "bare interpreter": [sys.executable, "-c", "pass"],
}


# What the bare scripts share: the split's rows from the packed store in batches, a classifier from a
# weights file; argv = store folder, split folder, weights file, output file.
BARE_COMMON = """
import os, signal, sys
import numpy as np, pandas as pd, torch
from simclr_s2.bigearthnet.bands import InputTransform
from simclr_s2.bigearthnet.packed import PackedStore
from simclr_s2.learning.models import IrrigationClassifier, build_simclr
store, splits, weights, output = PackedStore.open(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
transform = InputTransform(store.bands)
def batches(name, shuffle, size):
    split = pd.read_csv(f"{splits}/{name}.csv")
    rows, y = store.rows(split["name"].tolist()), torch.tensor(split["label"].to_numpy(), dtype=torch.float32)
    order = np.random.default_rng(1).permutation(len(rows)) if shuffle else np.arange(len(rows))
    for at in range(0, len(order), size):
        pick = order[at:at + size]
        x = torch.from_numpy(store.read_inputs(rows[pick], transform))
        yield x.contiguous(memory_format=torch.channels_last), y[pick]
"""

# The work of finetune without the platform (no MLflow, no tracking, no checks), from the encoder's weights
# (argv: ... epochs, then "kill" after the first checkpoint, where finetune's fault point stops it, or "test":
# every epoch with its checkpoint, then the test set's probabilities); each epoch's seconds go to output.epochs.
BARE_FINETUNE = BARE_COMMON + """
import time
epochs, then = int(sys.argv[5]), sys.argv[6]
torch.manual_seed(1)
model = build_simclr("resnet18", len(store.bands))
model.load_state_dict(torch.load(weights))
net = IrrigationClassifier.from_simclr(model).to(memory_format=torch.channels_last)
optimizer = torch.optim.Adam(net.parameters(), lr=5e-5, fused=True)  # as fit's (learning.runtime.adam)
for epoch in range(epochs):
    start = time.perf_counter()
    net.train()
    for x, y in batches("train_100pct", True, 32):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    net.eval()
    with torch.inference_mode():
        for x, _ in batches("val_100pct", False, 32):
            net(x)
    torch.save({"model": net.state_dict(), "optimizer": optimizer.state_dict()}, output)
    if then == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    with open(output + ".epochs", "a") as log:
        print(f"{time.perf_counter() - start:.1f}", file=log)
with torch.inference_mode():
    torch.cat([torch.sigmoid(net(x)) for x, _ in batches("test", False, 32)])
"""

# What `evaluate --set test` does, bare: the registered classifier's weights from a file, probabilities for
# the test set and for the validation set its threshold is chosen on, written out.
BARE_EVALUATE = BARE_COMMON + """
net = IrrigationClassifier.from_simclr(build_simclr("resnet18", len(store.bands)))
net.load_state_dict(torch.load(weights))
net = net.to(memory_format=torch.channels_last).eval()
with torch.inference_mode():
    scores = {name: torch.cat([torch.sigmoid(net(x)) for x, _ in batches(name, False, 64)])
              for name in ("test", "val_100pct")}
torch.save(scores, output)
"""

# The same, and the tracking store opened as a command opens it (argv: ... store URI).
BARE_EVALUATE_STORE = BARE_EVALUATE + """
from simclr_s2.settings.mlflow_store import store_client
store_client(sys.argv[5]).search_experiments()
"""


def timed(command: list[str], env: dict[str, str] | None = None, killed: bool = False) -> tuple[float, float]:
    """Wall and CPU seconds of `command`, in the tree its environment puts first (else this one); with
    `killed`, it must end by SIGKILL (its fault point was reached)."""
    start, cpu = time.perf_counter(), children_cpu_seconds()
    done = subprocess.run(command, check=False, capture_output=True, env=env, text=True,
                          cwd=(env or {}).get("PYTHONPATH", ROOT))
    if done.returncode != (-signal.SIGKILL if killed else 0):  # a baseline that fails would time its failure
        raise SystemExit(f"bench_startup: {command[1:4]} ended with {done.returncode}, not as it should:\n"
                         f"{done.stderr[-2000:]}")
    return time.perf_counter() - start, children_cpu_seconds() - cpu


def seconds(command: list[str], env: dict[str, str] | None = None) -> float:
    return timed(command, env)[0]


def _finetune(seed: int, register: bool = False, epochs: int = 1, pretrained: str = "auto",
              trainable: str = "all") -> list[str]:
    """finetune of every layer (or `trainable`), a new run for each seed (the demo chain is reused)."""
    return [sys.executable, "-m", "simclr_s2", "finetune", "--trainable", trainable, "--epochs", str(epochs),
            "--feature-cache", "false", "--register", str(register).lower(), "--seed", str(seed),
            "--pretrained", pretrained]


@dataclass
class Demo:
    """A demo chain made beforehand (untimed) in a temporary store, for each tree, and what the bare scripts
    read: the packed store, the split folder, the encoder's and the registered classifier's weights."""

    trees: dict[str, dict[str, str]]  # "finetune" (this tree), "finetune before": their environments
    env: dict[str, str]
    splits: Path  # the basic split's folder
    encoder: Path
    classifier: Path
    tmp: Path
    pretrained: str  # finetune's `pretrained`: auto (the demo's pretrained encoder) or IMPORTED


# A served classifier's MLflow model is its DN-taking wrapper: the weights are read as evaluate reads them.
WEIGHTS = ("import os, sys, torch; from simclr_s2.settings.mlflow_store import store_client; "
           "from simclr_s2.tracking.registry import load_logged; torch.save(load_logged(store_client("
           "os.environ['MLFLOW_TRACKING_URI']), sys.argv[1], torch.nn.Module, 'model')[0].state_dict(), "
           "sys.argv[2])")


IMPORTED = "models:/simclr-s2-encoder@bench"
# A SimCLR model's weights, as they come from a ResNet-18 that was never trained: imported as IMPORTED, the
# encoder of a chain made without pretraining (argv: the file).
UNTRAINED = ("import sys, torch; from simclr_s2.learning.models import build_simclr; torch.manual_seed(0); "
             "torch.save(build_simclr('resnet18', 10).state_dict(), sys.argv[1])")


@contextmanager
def demo(demo_patches: int, before: Path | None, imported: bool = False) -> Iterator[Demo]:
    """The demo chain; `imported`: its encoder imported untrained (IMPORTED) instead of pretrained (minutes
    on a large demo), and the chain's own registered fine-tune trains the head alone (seconds)."""
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp_dir:
        tmp = Path(tmp_dir)
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db", "SIMCLR_S2_HOME": str(tmp / "home"),
               "SIMCLR_S2_DATA": str(tmp / "data"), "SIMCLR_S2_DEMO_PATCHES": str(demo_patches),
               "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS": "1"}
        trees = {name: {**env, "PYTHONPATH": str(tree)}
                 for name, tree in (("finetune", ROOT), ("finetune before", before)) if tree}
        pretrained, chain = ("auto", _finetune(0, register=True)) if not imported else \
            (IMPORTED, _finetune(0, register=True, pretrained=IMPORTED, trainable="head"))
        if imported:
            untrained = tmp / "untrained.pt"
            _made([sys.executable, "-c", UNTRAINED, str(untrained)], trees["finetune"])
            _made([sys.executable, "-m", "simclr_s2", "import_encoder", "--state-dict", str(untrained), "--name",
                   IMPORTED.rsplit("@", 1)[1]], trees["finetune"])
        for tree_env in trees.values():  # the demo chain and a registered fine-tune (which packs the store)
            _made(chain, tree_env)
        splits, env = tmp / "data" / "demo" / "splits" / "basic", trees["finetune"]
        encoder = "models:/simclr-s2-encoder@ben" if pretrained == "auto" else IMPORTED
        for uri, file in ((encoder, "encoder.pt"), (CLASSIFIER, "classifier.pt")):
            subprocess.run([sys.executable, "-c", WEIGHTS, uri, str(tmp / file)], env=env, check=True,
                           capture_output=True, cwd=ROOT)
        yield Demo(trees, env, splits, tmp / "encoder.pt", tmp / "classifier.pt", tmp, pretrained)


def _made(command: list[str], env: dict[str, str]) -> None:
    """Run a step of the chain (untimed) in the tree `env` names; stop the bench if it fails."""
    made = subprocess.run(command, env=env, capture_output=True, text=True, check=False, cwd=env["PYTHONPATH"])
    if made.returncode:
        raise SystemExit(f"bench_startup: the demo chain failed at {command[1:4]}:\n{made.stderr[-2000:]}")


def bare_args(chain: Demo, split_set: str) -> list[str]:
    """The packed store holding `split_set` (training packs its sets, evaluate the test and validation sets
    in a store of their own) and the split folder: the bare scripts' first arguments."""
    first = (chain.splits / f"{split_set}.csv").read_text().splitlines()[1].split(",")[0]
    store = next(p for p in (chain.tmp / "home" / "packed").iterdir()
                 if (p / "names.txt").is_file() and first in (p / "names.txt").read_text().split())
    return [str(store), str(chain.splits)]


CLASSIFIER = "models:/simclr-s2-irrigation/1"  # this tree's registered fine-tune (made first)


Command = tuple[Callable[[int], list[str]], dict[str, str], bool]  # (round -> argv, environment, killed)


def _in_turn(commands: dict[str, object], round_: int) -> list[str]:
    """The order of round `round_` (1, 2, ...): A B C, then C B A, so no command always runs last, after the
    others have warmed the page cache or while the load changes (as bench_loader)."""
    return list(commands)[:: 1 if round_ % 2 else -1]


def interleaved(commands: dict[str, Command], repeats: int) -> dict[str, Rate]:
    """Each command's median wall and CPU seconds over `repeats` rounds (A B C, C B A, ...), as rates, printed
    beside the last (`bare`) one's."""
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for round_ in range(1, repeats + 1):
        for name in _in_turn(commands, round_):
            command, env, killed = commands[name]
            times[name].append(timed(command(round_), env, killed))
        print(f"round {round_}: " + ", ".join(f"{k} {v[-1][0]:.2f} s ({v[-1][1]:.2f} CPU-s)" for k, v in times.items())
              + f", load {os.getloadavg()[0]:.1f}")
    load = load_average()
    median = {k: (statistics.median(w for w, _ in ts), statistics.median(c for _, c in ts)) for k, ts in times.items()}
    bare = median[list(commands)[-1]]
    for name, (wall, cpu) in median.items():
        print(f"  {name}: median {wall:.2f} s, {cpu:.2f} CPU-s over {repeats} runs; {wall / bare[0]:.2f}x the "
              f"bare script's wall, {cpu / bare[1]:.2f}x its CPU")
    return {k: Rate(1 / wall, 1 / cpu, load) for k, (wall, cpu) in median.items()}


def first_epoch(chain: Demo, repeats: int) -> list[Figure]:
    """Start to the first epoch's checkpoint: finetune (and the earlier tree's) against the bare script."""
    script = chain.tmp / "bare_first_epoch.py"
    script.write_text(BARE_FINETUNE)
    bare = [sys.executable, str(script), *bare_args(chain, "train_100pct"), str(chain.encoder),
            str(chain.tmp / "bare.ckpt"), "1", "kill"]
    print("start to first epoch's checkpoint:")
    at_fault = {name: {**env, "SIMCLR_S2_FAULT": "checkpoint_write@0"} for name, env in chain.trees.items()}
    rate = interleaved({**{name: (lambda round_, tree=tree: _finetune(100 * tree + round_), at_fault[name], True)
                           for tree, name in enumerate(chain.trees)},
                        "bare": (lambda _: bare, chain.env, True)}, repeats)  # it kills itself there too
    return [Figure(f"`{name}` start to first epoch's checkpoint (commands/s)", rate[name],
                   "the same work in a bare script", rate["bare"]) for name in chain.trees]


def whole(chain: Demo, repeats: int, epochs: int) -> list[Figure]:
    """The whole `finetune` command (every layer, `epochs` epochs, a checkpoint each, test scoring and
    registration; its encoder from the registry) against the bare script doing the same work start to end
    (imports, the encoder's weights from a file, the rows from the same store, the epochs with their validation
    and checkpoints, the test set's probabilities): training images over each one's whole wall time."""
    script, output = chain.tmp / "bare_finetune.py", chain.tmp / "bare_whole.ckpt"
    script.write_text(BARE_FINETUNE)
    bare = [sys.executable, str(script), *bare_args(chain, "train_100pct"), str(chain.encoder), str(output),
            str(epochs), "test"]
    images = epochs * (len((chain.splits / "train_100pct.csv").read_text().splitlines()) - 1)
    print(f"whole finetune command, {epochs} epochs, {images // epochs} training patches:")
    rate = interleaved({**{name: (lambda round_, tree=tree: _finetune(200 + 100 * tree + round_, register=True,
                                                                     epochs=epochs, pretrained=chain.pretrained),
                                  env, False) for tree, (name, env) in enumerate(chain.trees.items())},
                        "bare": (lambda _: bare, chain.env, False)}, repeats)
    print(f"  the bare script's epochs: {', '.join(Path(f'{output}.epochs').read_text().split())} s (each with its "
          f"validation and checkpoint); training images/s: " + ", ".join(
              f"{name} {images * r.per_s:.1f}" for name, r in rate.items()))
    return [Figure(f"`{name}` whole command, {epochs} epochs, a checkpoint each (training images/s)",
                   _times(rate[name], images), "the same work in a bare script", _times(rate["bare"], images))
            for name in chain.trees]


def _times(rate: Rate, n: int) -> Rate:
    return Rate(rate.per_s * n, rate.per_cpu_s * n if rate.per_cpu_s else None, rate.load)


def evaluate(chain: Demo, repeats: int) -> list[Figure]:
    """`evaluate --set test` of the registered fine-tune, whole command, against the bare script, and the bare
    script opening the tracking store too (the floor of any command that tracks in it)."""
    bare = {}
    for name, text in (("bare + store opened", BARE_EVALUATE_STORE), ("bare", BARE_EVALUATE)):
        script = chain.tmp / f"{name.replace(' ', '_')}.py"
        script.write_text(text)
        bare[name] = [sys.executable, str(script), *bare_args(chain, "test"), str(chain.classifier),
                      str(chain.tmp / "scores.pt"), chain.env["MLFLOW_TRACKING_URI"]]
    command = [sys.executable, "-m", "simclr_s2", "evaluate", "--model-uri", CLASSIFIER, "--set", "test"]
    print("evaluate, whole command:")
    rate = interleaved({**{name.replace("finetune", "evaluate"): (lambda _: command, env, False)
                           for name, env in chain.trees.items()},
                        **{name: (lambda _, argv=argv: argv, chain.env, False) for name, argv in bare.items()}},
                       repeats)
    return [Figure(f"`{name}` whole command (commands/s)", rate[name], "load the weights and predict, bare",
                   rate["bare"]) for name in rate if name != "bare"]


def start_up(repeats: int) -> list[Figure]:
    """`--help` and a refusal against a bare interpreter importing torch and mlflow, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for round_ in range(1, repeats + 1):
        for name in _in_turn(COMMANDS, round_):
            times[name].append(seconds(COMMANDS[name]))
    load = load_average()
    rate = {name: Rate(1 / statistics.median(ts), None, load) for name, ts in times.items()}
    for name, ts in times.items():
        print(f"{name}: median {statistics.median(ts):.2f} s over {len(ts)} runs")
    baseline = "import torch + mlflow"
    return [Figure("`finetune --help` (commands/s)", rate["help"], baseline, rate[baseline]),
            Figure("`finetune --lr -1` refused (commands/s)", rate["refusal"], baseline, rate[baseline])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="runs of each command, interleaved")
    p.add_argument("--first-batch-repeats", type=int, default=3, help="finetune / bare script pairs; 0: skip")
    p.add_argument("--demo-patches", type=int, default=200, help="size of the demo chain they train on")
    p.add_argument("--evaluate-repeats", type=int, default=3, help="evaluate / bare script pairs; 0: skip")
    p.add_argument("--whole-repeats", type=int, default=1, help="whole finetune / bare script pairs; 0: skip")
    p.add_argument("--whole-patches", type=int, default=3600,
                   help="demo size of the whole-command chain (3600: about 950 training patches, 20 s epochs on "
                        "2 quiet cores)")
    p.add_argument("--whole-epochs", type=int, default=2, help="epochs of the whole command")
    p.add_argument("--before", type=Path, help="another tree whose commands are timed in the same rounds")
    args = p.parse_args()
    figures = start_up(args.repeats) if args.repeats else []
    if args.first_batch_repeats or args.evaluate_repeats:
        with demo(args.demo_patches, args.before) as chain:
            figures += first_epoch(chain, args.first_batch_repeats) if args.first_batch_repeats else []
            figures += evaluate(chain, args.evaluate_repeats) if args.evaluate_repeats else []
    if args.whole_repeats:
        with demo(args.whole_patches, args.before, imported=True) as chain:
            figures += whole(chain, args.whole_repeats, args.whole_epochs)
    report(figures)


if __name__ == "__main__":
    main()
