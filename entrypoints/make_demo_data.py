"""make_demo_data: write a synthetic BigEarthNet-S2 v1.0 archive (real layout, learnable irrigation signal)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import mlflow

from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.cli import parser, positive_int, run_entry_point
from simclr_s2.errors import UserError
from simclr_s2.tracking.runs import stage_run

MARKER = ".simclr_s2_demo.json"


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--out", default="data/demo/BigEarthNet-v1.0")
    p.add_argument("--n-patches", type=positive_int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    with stage_run("make_demo_data", vars(args), run_name=f"demo-data-{args.n_patches}-s{args.seed}",
                   tags={"seed": args.seed}):
        recipe = {"n_patches": args.n_patches, "seed": args.seed}
        started = time.perf_counter()
        if (out / MARKER).is_file() and json.loads((out / MARKER).read_text()) == recipe:
            reused = True  # the same archive is already there: deterministic by seed, nothing to redo
        elif out.exists() and any(out.iterdir()):
            raise UserError(f"out: {out} holds something other than a demo archive of {recipe}; "
                            "choose an empty folder")
        else:
            reused = False
            partial = out.with_name(f"{out.name}.partial-{os.getpid()}")
            shutil.rmtree(partial, ignore_errors=True)
            write_demo_archive(partial, n_patches=args.n_patches, seed=args.seed)
            (partial / MARKER).write_text(json.dumps(recipe))
            out.parent.mkdir(parents=True, exist_ok=True)
            if out.exists():
                out.rmdir()
            os.replace(partial, out)  # only a finished archive ever carries the final name
        mlflow.log_metrics({"patches": args.n_patches, "seconds": time.perf_counter() - started})
        mlflow.set_tags({"simclr_s2.archive": str(out), "simclr_s2.reused_files": str(reused).lower()})
        print(f"demo archive: {out} ({args.n_patches} patches)")


if __name__ == "__main__":
    run_entry_point(main)
