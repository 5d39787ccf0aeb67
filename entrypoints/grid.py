"""main: the study's grid as one resumable command. Pretrained encoders x fractions x schemes x seeds
fine-tunes, plus a baseline per (scheme, fraction, seed), each a child run of this one; finished cells are
reused, interrupted ones resumed, failed ones reported while the rest go on."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

import mlflow

from simclr_s2.cli import bool_flag, int_list, parser, positive_int, run_entry_point
from simclr_s2.errors import UserError
from simclr_s2.models import ARCHS, TRAINABLE
from simclr_s2.tracking.grid import encoder_uris, plan, run_cells, status
from simclr_s2.tracking.runs import stage_run


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--encoders", default="auto",
                   help="comma-separated aliases (ben) or URIs (models:/simclr-s2-encoder/3); auto = demo encoders")
    p.add_argument("--schemes", default="basic,expanded")
    p.add_argument("--fractions", type=int_list, default="1,3,10,25,50,100")
    p.add_argument("--seeds", type=int_list, default="0")
    p.add_argument("--baseline", type=bool_flag, default=True)
    p.add_argument("--baseline-arch", choices=ARCHS, default="resnet18")
    p.add_argument("--trainable", choices=TRAINABLE, default="head2")
    p.add_argument("--epochs", type=positive_int, default=50)
    p.add_argument("--split", default="auto")
    p.add_argument("--dry-run", type=bool_flag, default=False)
    args = p.parse_args(argv)
    schemes = [s.strip() for s in args.schemes.split(",") if s.strip()]
    with stage_run("main", vars(args), run_name=f"grid-{'-'.join(schemes)}", tags={"stage": "grid"},
                   resumable=not args.dry_run) as run:
        encoders = encoder_uris(args.encoders, args.dry_run)
        cells = plan(encoders, schemes, args.fractions, args.seeds, baseline=args.baseline,
                     baseline_arch=args.baseline_arch, trainable=args.trainable, epochs=args.epochs, split=args.split)
        if args.dry_run:
            for cell in cells:
                print(f"{status(cell):7s} {cell.label}  {cell.params.get('pretrained', '')}")
            mlflow.log_metric("cells", len(cells))
            return
        table = run_cells(cells, run.run_id)
        counts = table["status"].value_counts()
        mlflow.log_metrics({"cells": len(table), **{f"cells_{k}": int(v) for k, v in counts.items()}})
        with tempfile.TemporaryDirectory() as tmp:
            table.to_csv(Path(tmp) / "cells.csv", index=False)
            mlflow.log_artifacts(tmp, "grid")
        print(table[["cell", "status", "run_id"]].to_string(index=False))
        failed = table[table["status"] == "failed"]
        if len(failed):
            raise UserError(f"{len(failed)} of {len(table)} grid cells failed (see grid/cells.csv): "
                            + "; ".join(failed["cell"].head(3)))


if __name__ == "__main__":
    run_entry_point(main)
