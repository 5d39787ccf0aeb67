"""evaluate: score a registered classifier on a split set: metrics, confusion matrix, ROC and PR plots,
and a predictions table."""

from __future__ import annotations

from collections.abc import Sequence

import mlflow
import torch

from simclr_s2.cli import parser, positive_int, run_entry_point
from simclr_s2.models import IrrigationClassifier
from simclr_s2.splits import SETS
from simclr_s2.tracking.evaluation import log_evaluation
from simclr_s2.tracking.inputs import load_split_data, loader, split_ref
from simclr_s2.tracking.registry import load_logged
from simclr_s2.tracking.runs import stage_run


def main(argv: Sequence[str] | None) -> None:
    p = parser(__doc__)
    p.add_argument("--model-uri", required=True, help="models:/simclr-s2-irrigation@champion, runs:/<id>/model")
    p.add_argument("--split", default="auto")
    p.add_argument("--scheme", default="basic")
    p.add_argument("--set", choices=SETS, default="test")
    p.add_argument("--fraction", type=positive_int, default=100)
    p.add_argument("--batch-size", type=positive_int, default=64)
    args = p.parse_args(argv)
    with stage_run("evaluate", vars(args), run_name=f"evaluate-{args.scheme}-{args.set}",
                   tags={"scheme": args.scheme}):
        model, version, tags = load_logged(args.model_uri, IrrigationClassifier, "model_uri")
        bands = tags.get("bands") or {10: "study", 12: "all"}[model.encoder.in_channels]
        split = load_split_data(split_ref(args.split, args.scheme), args.scheme, args.fraction)
        chosen = getattr(split, args.set)
        mlflow.log_params({"resolved_model": version or args.model_uri, "resolved_split": split.ref,
                           f"{args.set}_digest": chosen.digest})
        mlflow.set_tags({k: tags[k] for k in ("pretrained", "arch", "fraction", "seed") if k in tags})
        batches = loader(split.archive_root, chosen.names, chosen.labels.astype("float32"), bands,
                         args.batch_size, shuffle=False, seed=0, digest=split.index_digest)
        device = "cuda" if torch.cuda.is_available() else "cpu"
        metrics = log_evaluation(model, batches, chosen.names, args.set, device)
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


if __name__ == "__main__":
    run_entry_point(main)
