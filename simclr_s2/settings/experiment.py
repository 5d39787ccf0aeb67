"""Where `mlflow run` puts its run when nobody named an experiment: MLflow asks its default-experiment
providers (the `mlflow.default_experiment_provider` plugin group) before falling back to its Default
experiment. This provider answers inside a simclr-s2 project folder, so `mlflow run . -e finetune` and
everything the command runs land in the `simclr-s2` experiment. MLFLOW_EXPERIMENT_NAME / _ID and
`mlflow run --experiment-name` still win: MLflow consults providers only when none of them is set."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking.default_experiment.abstract_context import DefaultExperimentProvider

DEFAULT_EXPERIMENT = "simclr-s2"
PROJECT_NAME = "name: simclr-s2"


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file (MLflow would use ./mlruns
    of whatever folder the command runs in, so a store elsewhere would scatter its artifacts); a server
    or other store decides itself (None)."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return (Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent / "mlruns").as_uri()


def create_experiment(client, name: str) -> str:
    """Get or create experiment `name` (a client of the store it belongs to); its id."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
    except MlflowException:  # created by another process a moment ago
        return client.get_experiment_by_name(name).experiment_id


def in_project(folder: Path) -> bool:
    """Whether `folder` is a simclr-s2 project (its MLproject names it)."""
    spec = folder / "MLproject"
    return spec.is_file() and PROJECT_NAME in spec.read_text().splitlines()


class ProjectExperimentProvider(DefaultExperimentProvider):
    def in_context(self) -> bool:
        return in_project(Path.cwd())

    def get_experiment_id(self) -> str:
        from mlflow.tracking import MlflowClient  # here: MLflow loads this plugin while it is being imported

        return create_experiment(MlflowClient(), DEFAULT_EXPERIMENT)
