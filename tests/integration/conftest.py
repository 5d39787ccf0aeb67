"""Real entry points through `mlflow run . --env-manager local` against a temporary SQLite tracking
store, on a small demo archive (the `auto` chain, made small through its environment settings)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[2]
MLFLOW = Path(sys.executable).parent / "mlflow"


@dataclass
class Project:
    """Runs entry points of this project in one temporary tracking store."""

    env: dict[str, str]
    client: MlflowClient

    root = ROOT

    @staticmethod
    def command(entry_point: str, **params: object) -> list[str]:
        command = [str(MLFLOW), "run", str(ROOT), "-e", entry_point, "--env-manager", "local"]
        for key, value in params.items():
            command += ["-P", f"{key}={value}"]
        return command

    def run(self, entry_point: str, check: bool = True, timeout: int = 900, **params: object
            ) -> subprocess.CompletedProcess:
        done = subprocess.run(self.command(entry_point, **params), env=self.env, cwd=ROOT, capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"mlflow run -e {entry_point} failed:\n{done.stderr[-4000:]}")
        return done

    def runs(self, stage: str | None = None, **tags: str) -> list[Run]:
        """Every run of the store (all experiments), newest first, filtered by tags."""
        filters = [f"tags.stage = '{stage}'"] if stage else []
        filters += [f"tags.{k} = '{v}'" for k, v in tags.items()]
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        return self.client.search_runs(experiments, " and ".join(filters), order_by=["attributes.start_time DESC"])

    def latest(self, stage: str, **tags: str) -> Run:
        runs = self.runs(stage, **tags)
        assert runs, f"no {stage} run with {tags}"
        return runs[0]


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    uri = f"sqlite:///{root}/mlflow.db"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "SIMCLR_S2_HOME": str(root / "home"),
           "SIMCLR_S2_DATA": str(root / "data"), "SIMCLR_S2_DEMO_PATCHES": "240",
           "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("MLFLOW_RUN_ID", None)
    env.pop("MLFLOW_EXPERIMENT_ID", None)
    return Project(env, MlflowClient(tracking_uri=uri, registry_uri=uri))


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
