"""The stages in-process, as an entry point runs them, against one temporary tracking store: the demo chain
is made once per session (an 80-patch archive, encoders pretrained 1 epoch) and the tests look at it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.entities import Run
from project_runner import Project, project_from

from simclr_s2.settings.context import Context
from simclr_s2.stages.classifier import FINETUNE


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> Project:
    return project_from(migrated_store, tmp_path_factory.mktemp("project"))


@pytest.fixture(scope="session")
def project_apart(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> Project:
    """A second project, for the grids whose splits, encoders and cells must not become the runs the chain's
    tests find as the newest of their kind (or the cells their compare reads): test_grid_folds'."""
    return project_from(migrated_store, tmp_path_factory.mktemp("apart"))


@pytest.fixture
def ctx(project: Project, monkeypatch: pytest.MonkeyPatch) -> Context:
    """The project's context. Its SIMCLR_S2_* folders are in the environment too (the stages read them);
    MLflow's variables are in the context only, as for every command (the one door to MLflow)."""
    for key, value in project.env.items():
        if key.startswith("SIMCLR_S2_"):
            monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(key, raising=False)
    return project.context()


@pytest.fixture(scope="session")
def demo(project: Project) -> Run:
    """`finetune` with its defaults but 3 epochs: makes the whole demo chain."""
    return project.client.get_run(project.run_stage(FINETUNE, epochs=3))


@pytest.fixture(scope="session")
def split_uri(project: Project, demo: Run):
    def uri(scheme: str = "basic") -> str:
        return f"runs:/{project.latest('create_splits', scheme=scheme).info.run_id}/splits"

    return uri
