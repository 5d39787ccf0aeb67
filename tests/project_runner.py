"""Run this project's entry points through `mlflow run . --env-manager local` in a chosen environment
(tracking store, work home, demo size), and look at the runs they made: shared by the integration tests
on a temporary SQLite store and the tests against the real server stack."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlflow.entities import Run
from mlflow.tracking import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
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
        done = subprocess.run(self.command(entry_point, **params), check=False, env=self.env, cwd=ROOT,
                              capture_output=True,
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




def project_env(root: Path, tracking_uri: str, **extra: str) -> dict[str, str]:
    """The environment of a test project: its own tracking store, work home and small demo archive."""
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri, "SIMCLR_S2_HOME": str(root / "home"),
           "SIMCLR_S2_DATA": str(root / "data"), "SIMCLR_S2_DEMO_PATCHES": "240",
           "SIMCLR_S2_DEMO_PRETRAIN_EPOCHS": "1", "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}
    for name in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        env.pop(name, None)
    return env
