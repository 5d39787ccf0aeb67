"""compare: the study's comparison for one scheme, from the model registry: a table of test accuracy, F1 and
AUC per pretrained encoder (and the from-scratch baseline) and data fraction, mean and std across seeds,
and the write-up's figures. Written to --out and logged as artifacts of the compare run."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mlflow

from simclr_s2.cli import int_list, parser, run_entry_point
from simclr_s2.compare import METRICS, summarise, write_report
from simclr_s2.errors import UserError
from simclr_s2.tracking.registry import CLASSIFIER_MODEL
from simclr_s2.tracking.runs import stage_run
from simclr_s2.tracking.versions import search_versions, versions_frame


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--scheme", default="basic")
    p.add_argument("--fractions", type=int_list, default="1,3,10,25,50,100")
    p.add_argument("--out", type=Path, default=Path("outputs/compare"))
    args = p.parse_args(argv)
    if not args.fractions or not all(0 < f <= 100 for f in args.fractions):
        p.error(f"--fractions: expected whole percentages in 1..100, got {args.fractions}")
    params = {"scheme": args.scheme, "fractions": ",".join(map(str, args.fractions)), "out": str(args.out)}
    with stage_run("compare", params, run_name=f"compare-{args.scheme}", tags={"scheme": args.scheme}):
        records = search_versions(args.scheme)
        if not records:
            raise UserError(f"scheme: no registered {CLASSIFIER_MODEL} version has scheme {args.scheme!r}; "
                            f"run finetune and baseline (or main) first")
        runs = versions_frame(records, METRICS)
        table = summarise(runs, args.fractions)
        for path in write_report(table, runs, args.out, f"scheme {args.scheme}"):
            mlflow.log_artifact(str(path))
        filled = int((table["n_runs"] > 0).sum())
        mlflow.set_tags({"n_versions": len(records), "cells_filled": f"{filled}/{len(table)}"})
        print(f"compare {args.scheme}: {len(records)} versions, {filled} of {len(table)} cells with runs; "
              f"table and figures in {args.out}")


if __name__ == "__main__":
    run_entry_point(main)
