"""The stages in-process, as an entry point runs them, against one temporary tracking store: the demo chain
is made once per session (a 120-patch archive, encoders pretrained 1 epoch) and the tests look at it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from simclr_s2.app.context import Context
from simclr_s2.app.spec import build
from simclr_s2.stages.base import Stage, run_command


@dataclass
class Project:
    """One tracking store, state folder and demo data folder, and the environment that names them."""

    root: Path
    env: dict[str, str]

    @property
    def client(self) -> MlflowClient:
        uri = self.env["MLFLOW_TRACKING_URI"]
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def runs(self, stage: str | None = None, **tags: str) -> list[Run]:
        """Every active run of every experiment, newest first, filtered by stage and tags."""
        filters = [f"tags.stage = '{stage}'"] if stage else []
        filters += [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(experiments, " and ".join(filters), order_by=["attributes.start_time DESC"])

    def latest(self, stage: str, **tags: str) -> Run:
        runs = self.runs(stage, **tags)
        assert runs, f"no {stage} run with {tags}"
        return runs[0]


def project_env(root: Path, **extra: str) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{root}/mlflow.db", "SIMCLR_S2_HOME": str(root / "home"),
            "SIMCLR_S2_DATA": str(root / "data"), "SIMCLR_S2_DEMO_PATCHES": "120",
            "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS": "1", "SIMCLR_S2_HEARTBEAT_S": "2",
            "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false", **extra}


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    return Project(root, project_env(root))


@pytest.fixture
def ctx(project: Project, monkeypatch: pytest.MonkeyPatch) -> Context:
    """The project's context; the environment says the same (MLflow's model logging reads it)."""
    for key, value in project.env.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(key, raising=False)
    return Context.from_env()


def run_stage(project: Project, stage: Stage, **params: object) -> str | None:
    """`stage` as its entry point runs it (in this process), in the project's environment."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in project.env.items():
            mp.setenv(key, value)
        for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME"):
            mp.delenv(key, raising=False)
        return run_command(stage, build(stage.spec, params), Context.from_env())


@pytest.fixture(scope="session")
def demo(project: Project) -> Iterator[Run]:
    """`finetune` with its defaults but 3 epochs: makes the whole demo chain."""
    from simclr_s2.stages.classifier import FINETUNE

    run_id = run_stage(project, FINETUNE, epochs=3)
    yield project.client.get_run(run_id)


@pytest.fixture(scope="session")
def split_uri(project: Project, demo: Run):
    def uri(scheme: str = "basic") -> str:
        return f"runs:/{project.latest('create_splits', scheme=scheme).info.run_id}/splits"

    return uri
