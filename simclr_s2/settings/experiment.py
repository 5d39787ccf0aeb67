"""Where `mlflow run` puts its run when nobody named an experiment: MLflow asks its default-experiment
providers (the `mlflow.default_experiment_provider` plugin group) before falling back to its Default
experiment. This provider answers inside a simclr-s2 project folder, so `mlflow run . -e finetune` and
everything the command runs land in the `simclr-s2` experiment. MLFLOW_EXPERIMENT_NAME / _ID and
`mlflow run --experiment-name` still win: MLflow consults providers only when none of them is set."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

PROJECT_NAME = "name: simclr-s2"


def in_project(folder: Path) -> bool:
    """Whether `folder` is a simclr-s2 project (its MLproject names it)."""
    spec = folder / "MLproject"
    return spec.is_file() and PROJECT_NAME in spec.read_text().splitlines()


class ProjectExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return in_project(Path.cwd())

    def get_experiment_id(self) -> str:
        # imported here: MLflow imports this plugin while it starts up, and mlflow_store imports MLflow
        from simclr_s2.settings.mlflow_store import (
            DEFAULT_EXPERIMENT,
            create_experiment,
            default_tracking_uri,
            store_client,
        )

        return create_experiment(store_client(default_tracking_uri()), DEFAULT_EXPERIMENT)
