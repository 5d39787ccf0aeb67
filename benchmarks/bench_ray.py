"""The grid on Ray against the local backend: wall time of `main` over --cells baseline cells (the demo
archive of --patches patches, --epochs epochs each) run one after another in this process (backend=local,
torch on every core, then on one thread as a Ray cell has) and as Ray tasks on a cluster of --workers CPUs
started here (backend=ray, one CPU and one torch thread per cell); and what Ray costs per cell, each figure
beside the 1-minute load average when it was taken (the benchmark's own processes count in it).

Ray's cost, from the cells' own runs: the driver creates a cell's run when it dispatches the task, and the
task claims it (the `simclr_s2.claimed_at` tag) once its worker runs the stage: the seconds in between are
scheduling, worker start-up (a new worker imports the training stack: the first wave) and dispatch, shown
as a share of the cell's own time (claim to end). The cluster's start-up is shown apart: a cluster that
stays up pays it once.

    python benchmarks/bench_ray.py [--cells 8] [--workers 2] [--patches 400] [--epochs 3]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import ray
import torch
from figures import Figure, Rate, load_average, report

from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages import auto
from simclr_s2.stages.base import run_command
from simclr_s2.stages.grid import GRID
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.liveness import CLAIM_TAG
from simclr_s2.tracking.process import quiet_defaults
from simclr_s2.tracking.tracker import PARENT_TAG


def grid(ctx: Context, seeds: range, epochs: int, **backend: object) -> tuple[str, float]:
    """`main` over baseline cells of 2 fractions x `seeds`; its run id and wall seconds."""
    spec = build(GRID.spec, {"encoders": "none", "schemes": "basic", "fractions": "50,100",
                             "seeds": ",".join(map(str, seeds)), "epochs": epochs, **backend})
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):  # the grid's table of cells
        run_id = run_command(GRID, spec, ctx)
    return run_id, time.perf_counter() - started


def cell_times(ctx: Context, grid_run: str) -> list[tuple[float, float]]:
    """(seconds from run creation to the stage's claim, seconds from claim to end) of every cell, in
    the order they started."""
    runs = Tracking.of(ctx).client.search_runs([ctx.experiment_id], f"tags.`{PARENT_TAG}` = '{grid_run}'",
                                               order_by=["attributes.start_time ASC"])
    return [(float(r.data.tags[CLAIM_TAG]) - r.info.start_time / 1000,
             r.info.end_time / 1000 - float(r.data.tags[CLAIM_TAG])) for r in runs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=8, help="cells per grid (2 fractions x cells/2 seeds)")
    parser.add_argument("--workers", type=int, default=2, help="CPUs of the Ray cluster = cells at once")
    parser.add_argument("--patches", type=int, default=400, help="patches of the demo archive")
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    os.environ.update({"SIMCLR_S2_HOME": str(root / "home"), "SIMCLR_S2_DATA": str(root / "data"),
                       "SIMCLR_S2_DEMO_PATCHES": str(args.patches), "RAY_DEDUP_LOGS": "0"})
    quiet_defaults()
    ctx = Context.from_env({**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db"})
    auto.demo_splits(ctx, "basic")  # the archive, its index and splits, and their packed store, made once
    half = args.cells // 2

    local_run, local_s = grid(ctx, range(half), args.epochs)
    local_load = load_average()
    local_cells = [own for _, own in cell_times(ctx, local_run)]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    _, single_s = grid(ctx, range(2 * half, 3 * half), args.epochs)
    single_load = load_average()
    torch.set_num_threads(threads)

    started = time.perf_counter()
    ray.init(num_cpus=args.workers, include_dashboard=False, logging_level="WARNING", log_to_driver=False)
    startup_s, startup_load = time.perf_counter() - started, load_average()
    ray_run, ray_s = grid(ctx, range(half, 2 * half), args.epochs, backend="ray", parallel=args.workers)
    ray_load = load_average()
    ray.shutdown()
    times = cell_times(ctx, ray_run)
    first, later = times[:args.workers], times[args.workers:]
    own = statistics.mean(t for _, t in times)

    print(f"{args.cells} baseline cells, demo archive of {args.patches} patches, {args.epochs} epochs, "
          f"{os.cpu_count()} cores")
    rows = [(f"grid, backend=local ({threads} torch threads)", local_s, local_load),
            ("grid, backend=local (1 torch thread)", single_s, single_load),
            (f"grid, backend=ray ({args.workers} at once)", ray_s, ray_load),
            ("Ray cluster start-up (ray.init, once)", startup_s, startup_load),
            ("cell's own time, local (mean)", statistics.mean(local_cells), local_load),
            ("cell's own time, on Ray (mean)", own, ray_load)]
    for name, wave in (("first cells: worker start + dispatch", first), ("later cells: dispatch", later)):
        if wave:
            rows.append((f"Ray per cell, {name}", statistics.mean(c for c, _ in wave), ray_load))
    print(f"{'':46s} {'seconds':>8s} {'load':>6s} {'share of a cell':>16s}")
    for name, seconds, at in rows:
        share = f"{seconds / own:16.0%}" if name.startswith("Ray per cell") else ""
        print(f"{name:46s} {seconds:8.2f} {at:6.2f} {share}")
    print(f"speed-up of backend=ray: {local_s / ray_s:.2f}x against {threads} threads, "
          f"{single_s / ray_s:.2f}x against 1 thread")
    report([Figure(f"grid of {args.cells} cells, backend=ray, {args.workers} at once (cells/s)",
                   Rate(args.cells / ray_s, None, ray_load), f"backend=local, {threads} torch threads",
                   Rate(args.cells / local_s, None, local_load))])


if __name__ == "__main__":
    main()
