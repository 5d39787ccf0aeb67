"""build_index: scan a BigEarthNet-S2 v1.0 archive into one Parquet row per patch, broken patches apart."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import mlflow

from simclr_s2.bigearthnet.index import build_index, index_digest, load_index
from simclr_s2.cli import bool_flag, parser, run_entry_point
from simclr_s2.tracking.artifacts import log_table_input
from simclr_s2.tracking.runs import stage_run


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--archive", default="data/demo/BigEarthNet-v1.0")
    p.add_argument("--out", default="data/demo/index")
    p.add_argument("--workers", type=int, default=0, help="processes; 0 = one per core")
    p.add_argument("--check-rasters", type=bool_flag, default=False,
                   help="decode every band too (slow: ~60 patches/s); the default checks TIFF headers")
    args = p.parse_args(argv)
    with stage_run("build_index", vars(args), run_name=f"index-{Path(args.archive).name}"):
        result = build_index(Path(args.archive), Path(args.out) / "index.parquet", workers=args.workers or None,
                             check_rasters=args.check_rasters)
        mlflow.log_metrics({"patches_indexed": result.n_indexed, "patches_rejected": result.n_rejected,
                            "seconds": result.seconds,
                            "patches_per_second": (result.n_indexed + result.n_rejected) / max(result.seconds, 1e-9)})
        mlflow.log_artifact(str(result.index_path), "index")
        mlflow.log_artifact(str(result.rejected_path), "index")
        index = load_index(result.index_path)
        log_table_input(index.drop(columns=["labels"]), name="bigearthnet-index",
                        source=str(result.index_path), digest=index_digest(result.index_path), context="index")
        mlflow.set_tag("simclr_s2.archive", str(Path(args.archive).resolve()))
        print(f"index: {result.index_path} ({result.n_indexed} patches, {result.n_rejected} rejected)")


if __name__ == "__main__":
    run_entry_point(main)
