"""Where `mlflow run` puts its run when nobody named an experiment: MLflow asks its default-experiment
providers (the `mlflow.default_experiment_provider` plugin group) before falling back to its Default
experiment. This provider answers for a simclr-s2 project, so `mlflow run . -e finetune` and everything the
command runs land in the `simclr-s2` experiment. MLFLOW_EXPERIMENT_NAME / _ID and
`mlflow run --experiment-name` still win: MLflow consults providers only when none of them is set.

Which project: MLflow hands a provider nothing, and `mlflow run <path>` resolves its experiment in the
folder it was started from, before it moves into the project; so the provider reads the path from the
command MLflow's CLI is running (click's current context), and looks at the working folder otherwise."""

from __future__ import annotations

from pathlib import Path

import click
from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

PROJECT_NAME = "name: simclr-s2"


def in_project(folder: Path) -> bool:
    """Whether `folder` is a simclr-s2 project (its MLproject names it)."""
    spec = folder / "MLproject"
    return spec.is_file() and PROJECT_NAME in spec.read_text().splitlines()


def project_folder() -> Path:
    """The folder of the project being started: the local folder `mlflow run <uri>` names, else the working
    folder (`mlflow run .`, mlflow.projects.run from Python, a script)."""
    command = click.get_current_context(silent=True)
    launching = command is not None and command.command.name == "run" and \
        getattr(command.command.callback, "__module__", "") == "mlflow.cli"  # not another tool's `run`
    uri = command.params.get("uri") if launching else None
    return Path(uri).expanduser() if isinstance(uri, str) and Path(uri).expanduser().is_dir() else Path.cwd()


class ProjectExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return in_project(project_folder())

    def get_experiment_id(self) -> str:
        # imported here: MLflow imports this plugin while it starts up, and mlflow_store imports MLflow
        from simclr_s2.settings.mlflow_store import (
            DEFAULT_EXPERIMENT,
            create_experiment,
            default_tracking_uri,
            store_client,
        )

        return create_experiment(store_client(default_tracking_uri()), DEFAULT_EXPERIMENT)
