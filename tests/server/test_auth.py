"""Basic auth on its own stack (MLflow's basic-auth app): anonymous and wrong-password requests refused,
credentials taken from the environment, never logged in a run. A file of its own, so under xdist this
stack starts on one worker while the other runs the tests of the plain stack."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from project_runner import Project, project_env, unique_name

from simclr_s2.stages.data import MAKE_DEMO_DATA
from simclr_s2.tracking.door import Tracking

if TYPE_CHECKING:
    from tests.server.conftest import TrackingServer

pytestmark = pytest.mark.server


def test_anonymous_requests_are_refused(
    auth_tracking_env: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    with pytest.raises(MlflowException, match="not authenticated|401"):
        Tracking(auth_tracking_env.uri).client.create_experiment(unique_name("anonymous"))

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth_tracking_env.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-the-password")
    with pytest.raises(MlflowException, match="not authenticated|401"):
        Tracking(auth_tracking_env.uri).client.create_experiment(unique_name("wrong-password"))


def test_credentials_work_and_never_reach_the_run(auth_tracking_env: TrackingServer, tmp_path: Path) -> None:
    """Through a client of its own: MLflow's process-wide tracking URI and experiment are never touched."""
    client = Tracking(auth_tracking_env.uri).client
    created = client.create_run(client.create_experiment(unique_name("auth")))
    run_id = created.info.run_id
    client.log_param(run_id, "lr", 0.1)
    client.log_param(run_id, "epochs", 2)
    client.set_tag(run_id, "stage", "test")
    client.log_metric(run_id, "loss", 0.25)
    client.log_text(run_id, "artifact body\n", "notes/readme.txt")
    client.set_terminated(run_id)
    run = client.get_run(run_id)
    artifact = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="notes/readme.txt",
                                                   dst_path=str(tmp_path), tracking_uri=auth_tracking_env.uri)

    assert run.data.metrics == {"loss": 0.25}
    secrets = [auth_tracking_env.password, auth_tracking_env.aws_secret_access_key]
    logged = [*run.data.params.values(), *run.data.tags.values(), Path(artifact).read_text()]
    assert not [value for value in logged for secret in secrets if secret in value]



def test_credentials_come_from_the_environment_and_are_never_logged(auth_tracking_server, tmp_path,
                                                                   monkeypatch):
    root = tmp_path / "auth-project"
    project = Project(root, project_env(root, auth_tracking_server.uri))
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    with pytest.raises(MlflowException, match="not authenticated|401"):
        project.run_stage(MAKE_DEMO_DATA, out=str(root / "archive"), n_patches=8)
    project.env.update(MLFLOW_TRACKING_USERNAME=auth_tracking_server.username,
                       MLFLOW_TRACKING_PASSWORD=auth_tracking_server.password)
    project.run_stage(MAKE_DEMO_DATA, out=str(root / "archive"), n_patches=8)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth_tracking_server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_tracking_server.password)
    run = project.latest("make_demo_data")
    assert run.info.status == "FINISHED"
    logged = [*run.data.params.values(), *run.data.tags.values()]
    assert not any(auth_tracking_server.password in value for value in logged)
