"""create_splits: balanced, nested train/val/test splits of one labelling scheme, checked and digested."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import mlflow
import pandas as pd

from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.bigearthnet.nomenclature import is_positive, resolve_scheme
from simclr_s2.cli import bool_flag, int_list, parser, run_entry_point
from simclr_s2.errors import UserError
from simclr_s2.splits import SETS, create_splits, file_name, load_split
from simclr_s2.tracking.artifacts import REMOTE_SCHEMES, local_path, log_table_input
from simclr_s2.tracking.runs import stage_run

SOURCE = "source.json"


def float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"ratios: expected three comma-separated fractions like 0.70,0.15,0.15, got {text}") from None


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--index", default="data/demo/index/index.parquet", help="index file or runs:/ URI")
    p.add_argument("--scheme", default="basic", help="basic, expanded, or class names separated by ';'")
    p.add_argument("--fractions", type=int_list, default="1,3,10,25,50,100")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--exclude-snow-cloud", type=bool_flag, default=True)
    p.add_argument("--official-split", default="all", help="all, or train / validation / test joined by '+'")
    p.add_argument("--ratios", type=float_list, default="0.70,0.15,0.15")
    p.add_argument("--out", default="data/demo/splits")
    args = p.parse_args(argv)
    scheme, classes = resolve_scheme(args.scheme)
    if scheme == "custom":
        scheme = "custom-" + hashlib.sha256(";".join(sorted(classes)).encode()).hexdigest()[:8]
    with stage_run("create_splits", vars(args), run_name=f"splits-{scheme}-s{args.seed}",
                   tags={"scheme": scheme, "seed": args.seed}):
        index_path = local_path(args.index, "index")
        index = load_index(index_path)
        positives = None if scheme in ("basic", "expanded") else \
            pd.Series([is_positive(labels, classes) for labels in index["labels"]], index=index.index)
        out = Path(args.out).resolve()
        manifest = create_splits(
            index, scheme, out, fractions=args.fractions, seed=args.seed,
            exclude_snow_cloud=args.exclude_snow_cloud,
            official_split=None if args.official_split == "all" else args.official_split,
            ratios=args.ratios, index_digest=index_digest(index_path), positives=positives, classes=classes)
        scheme_dir = out / scheme
        (scheme_dir / SOURCE).write_text(json.dumps(
            {"index": args.index if args.index.startswith(REMOTE_SCHEMES) else str(index_path),
             "archive_root": str(index_archive_root(index_path))}, indent=2) + "\n")
        mlflow.log_artifacts(str(scheme_dir), f"splits/{scheme}")
        mlflow.log_metrics({f"{name.removesuffix('.csv')}_{what}": getattr(entry, what)
                            for name, entry in manifest.files.items() for what in ("count", "positives")})
        for fraction in manifest.fractions:
            for set_name in SETS:
                if set_name == "test" and fraction != manifest.fractions[0]:
                    continue
                split = load_split(out, scheme, fraction, set_name)
                log_table_input(pd.DataFrame({"name": split.names, "label": split.labels}),
                                name=f"{scheme}/{file_name(set_name, fraction).removesuffix('.csv')}",
                                source=str(split.path), digest=split.digest, context=set_name)
        mlflow.set_tag("simclr_s2.splits", str(scheme_dir))
        sizes = manifest.sizes
        print(f"splits: {scheme_dir} (" + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ")")


if __name__ == "__main__":
    run_entry_point(main)
