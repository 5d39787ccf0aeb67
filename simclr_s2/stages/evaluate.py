"""evaluate: score a registered classifier on a split set. It writes nothing but its own run: `auto` finds
the demo splits without making them, downloads go to a temporary folder, and the patches are read from
the GeoTIFFs instead of being packed."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from simclr_s2.app import specs
from simclr_s2.app.context import Context
from simclr_s2.models import IrrigationClassifier
from simclr_s2.stages import auto
from simclr_s2.stages.base import Stage
from simclr_s2.stages.inputs import load_split_data, loader
from simclr_s2.tracking.artifacts import Fetcher
from simclr_s2.tracking.evaluation import log_evaluation
from simclr_s2.tracking.registry import encoder_bands, load_logged
from simclr_s2.tracking.tracker import StageRun


class Evaluate(Stage[specs.Evaluate]):
    spec = specs.Evaluate
    read_only = True

    def resolve(self, spec: specs.Evaluate, ctx: Context, make: bool = False) -> dict[str, str]:
        return {"split": auto.split_ref(ctx, "auto", spec.scheme, make=False)} if spec.split == "auto" else {}

    def run_name(self, spec: specs.Evaluate, resolved: Mapping[str, str]) -> str:
        return f"evaluate-{spec.scheme}-{spec.set}"

    def tags(self, spec: specs.Evaluate, resolved: Mapping[str, str]) -> dict[str, object]:
        return {"scheme": spec.scheme}

    def execute(self, spec: specs.Evaluate, resolved: Mapping[str, str], run: StageRun, ctx: Context) -> None:
        model, version, tags = load_logged(ctx.client, spec.model_uri, IrrigationClassifier, "model_uri")
        bands = encoder_bands(tags, model.encoder.in_channels)
        with Fetcher.temporary(ctx.tracking_uri) as fetch:
            split = load_split_data(fetch, resolved.get("split", spec.split), spec.scheme, spec.fraction)
            chosen = getattr(split, spec.set)
            run.log_params({"resolved_model": version or spec.model_uri, f"{spec.set}_digest": chosen.digest})
            run.set_tags({k: tags[k] for k in ("pretrained", "arch", "fraction", "seed") if k in tags})
            batches = loader(ctx, split.archive_root, chosen.names, chosen.labels.astype("float32"), ",".join(bands),
                             spec.batch_size, shuffle=False, seed=0, digest=split.index_digest, pack=False)
            device = "cuda" if torch.cuda.is_available() else "cpu"
            metrics = log_evaluation(run, model, batches, chosen.names, spec.set, device)
        print(" ".join(f"{k}={v:.4f}" for k, v in metrics.items()))


EVALUATE = Evaluate()
