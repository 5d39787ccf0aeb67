"""Real entry points through `mlflow run . --env-manager local` against a temporary SQLite tracking
store, on a small demo archive (the `auto` chain, made small through its environment settings)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient
from project_runner import Project, project_env


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    uri = f"sqlite:///{root}/mlflow.db"
    return Project(project_env(root, uri), MlflowClient(tracking_uri=uri, registry_uri=uri))


@pytest.fixture(scope="session")
def demo(project: Project) -> Run:
    """`mlflow run . -e finetune` with its defaults but 3 epochs: makes the whole demo chain."""
    project.run("finetune", epochs=3)
    return project.latest("finetune")


@pytest.fixture(scope="session")
def split_uri(project: Project, demo: Run) -> Callable[[str], str]:
    def uri(scheme: str = "basic") -> str:
        return f"runs:/{project.latest('create_splits', scheme=scheme).info.run_id}/splits"

    return uri
