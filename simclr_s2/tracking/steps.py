"""The defaults behind `auto` parameters, so that `mlflow run . -e finetune` works on a fresh checkout:
the demo archive, its index, splits and a pretrained encoder are made when missing and reused when a
finished run with the same parameters exists (MLflow's multistep pattern). Each is its own run; the
steps refer to each other through artifact URIs (runs:/...), which stay valid on a shared server.

Where the demo lives and how big it is can be set from the environment (tests use a small one):
SIMCLR_S2_DATA (folder, default ./data), SIMCLR_S2_DEMO_PATCHES (default 1000) and
SIMCLR_S2_DEMO_PRETRAIN_EPOCHS (default: the pretrain entry point's).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from simclr_s2.tracking.registry import VERSION_TAG
from simclr_s2.tracking.runs import ensure_run, project_root

DEMO_SCHEMES = ("basic", "expanded")
DEMO_MARKER = ".simclr_s2_demo.json"


def _demo_root() -> Path:
    return Path(os.environ.get("SIMCLR_S2_DATA", project_root() / "data")).resolve() / "demo"


def demo_index_uri() -> str:
    root = _demo_root()
    data = ensure_run("make_demo_data", {"out": root / "BigEarthNet-v1.0",
                                         "n_patches": os.environ.get("SIMCLR_S2_DEMO_PATCHES", "1000")},
                      usable=lambda run: (Path(run.data.tags["simclr_s2.archive"]) / DEMO_MARKER).is_file())
    index = ensure_run("build_index", {"archive": data.data.tags["simclr_s2.archive"], "out": root / "index"})
    return f"runs:/{index.info.run_id}/index/index.parquet"


def demo_split_uri(scheme: str) -> str:
    run = ensure_run("create_splits", {"index": demo_index_uri(), "scheme": scheme, "out": _demo_root() / "splits"})
    return f"runs:/{run.info.run_id}/splits"


def demo_test_sets() -> str:
    """The demo splits of both schemes, whose test patches pretraining must never see."""
    return ",".join(demo_split_uri(scheme) for scheme in DEMO_SCHEMES)


def demo_encoder_params(name: str = "ben", recipe: Mapping[str, object] | None = None) -> dict[str, object]:
    """Parameters of the pretrain run of a demo encoder: its data pinned to the demo index and splits."""
    epochs = os.environ.get("SIMCLR_S2_DEMO_PRETRAIN_EPOCHS")
    return {"name": name, "index": demo_index_uri(), "exclude_split": demo_test_sets(),
            **({"epochs": epochs} if epochs else {}), **(recipe or {})}


def demo_encoder_uri(name: str = "ben", recipe: Mapping[str, object] | None = None) -> str:
    """The pinned registry URI (models:/simclr-s2-encoder/<version>) of a demo encoder."""
    run = ensure_run("pretrain", demo_encoder_params(name, recipe))
    return f"models:/{run.data.tags[VERSION_TAG]}"
