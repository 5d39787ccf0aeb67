"""A temporary tracking store with a model registry, and classifier versions tagged as finetune and baseline
register them, for the tests of compare and promote.

Creating an MLflow SQLite database runs its migrations (seconds), so one empty database is made per
session and each store starts from a copy of it.
"""

from __future__ import annotations

import importlib.util
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from simclr_s2.tracking.registry import CLASSIFIER_MODEL

REPO = Path(__file__).resolve().parents[1]
_template: list[Path] = []


def entry_point(name: str) -> Callable[[Sequence[str]], None]:
    """`main` of entrypoints/<name>.py (the scripts are not a package)."""
    spec = importlib.util.spec_from_file_location(f"entrypoint_{name}", REPO / "entrypoints" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def _empty_database(factory: pytest.TempPathFactory) -> Path:
    if not _template:
        path = factory.mktemp("mlflow-template") / "mlflow.db"
        MlflowClient(f"sqlite:///{path}").search_experiments()  # creates the tables
        _template.append(path)
    return _template[0]


@dataclass
class Store:
    experiment_id: str

    def register(self, *, pretrained: str = "ben", fraction: int = 10, seed: int = 0, scheme: str = "basic",
                 metrics: Mapping[str, float]) -> str:
        """A finished run with `metrics` and a registered version of it, tagged as entrypoints/train.py does
        (pretrained "scratch" = a baseline). Returns the version."""
        client = MlflowClient()
        stage = "baseline" if pretrained == "scratch" else "finetune"
        tags = {"stage": stage, "scheme": scheme, "fraction": str(fraction), "pretrained": pretrained,
                "arch": "resnet18", "seed": str(seed), "trainable": "all" if stage == "baseline" else "head2",
                "bands": "study"}
        run = client.create_run(self.experiment_id, tags=tags)
        now = int(time.time() * 1000)
        client.log_batch(run.info.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
        client.set_terminated(run.info.run_id)
        summary = {k.removeprefix("best_"): f"{v:.4f}" for k, v in metrics.items() if k.startswith(("best_", "test_"))}
        mv = client.create_model_version(CLASSIFIER_MODEL, source=f"{run.info.artifact_uri}/model",
                                         run_id=run.info.run_id,
                                         tags={**tags, "run_id": run.info.run_id, **summary})
        return str(mv.version)

    def aliases(self) -> dict[str, str]:
        return {k: str(v) for k, v in MlflowClient().get_registered_model(CLASSIFIER_MODEL).aliases.items()}


def open_store(root: Path, factory: pytest.TempPathFactory, mp: pytest.MonkeyPatch) -> Store:
    """A fresh tracking and registry store under `root`, made current through the environment (as
    MLFLOW_TRACKING_URI is under `mlflow run`), with an experiment whose artifacts stay under `root`."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(_empty_database(factory), root / "mlflow.db")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mp.setenv("MLFLOW_TRACKING_URI", uri)
    mp.setenv("MLFLOW_REGISTRY_URI", uri)
    mp.setenv("SIMCLR_S2_HOME", str(root / "home"))
    client = MlflowClient()
    experiment_id = client.create_experiment("tests", artifact_location=(root / "artifacts").as_uri())
    mp.setenv("MLFLOW_EXPERIMENT_ID", experiment_id)
    client.create_registered_model(CLASSIFIER_MODEL)
    return Store(experiment_id)

