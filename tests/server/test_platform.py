"""The platform against the real stack (PostgreSQL + S3 + mlflow server): the demo finetune, compare and
promote through `mlflow run`, artifacts in the bucket, a server restart mid-run, a server that stays
down, and basic auth."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from project_runner import ROOT, Project, project_env

from simclr_s2.tracking.registry import CLASSIFIER_MODEL, ENCODER_MODEL

pytestmark = [pytest.mark.server, pytest.mark.e2e]


@pytest.fixture(scope="module")
def server_project(tracking_server, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("server-project")
    # clients need no object-store credentials: artifacts go through the server
    return Project(root, project_env(root, tracking_server.uri),
                   unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"))


@pytest.fixture(scope="module")
def server_demo(server_project):
    server_project.run("finetune", epochs=2)
    return server_project.latest("finetune")


def test_finetune_on_the_server_stack(server_project, server_demo, tracking_server):
    run = server_demo
    assert run.info.status == "FINISHED"
    assert run.data.params["trainable"] == "head2" and run.data.tags["pretrained"] == "ben"
    assert len(server_project.client.get_metric_history(run.info.run_id, "val_f1")) == 2
    keys = tracking_server.object_keys(tracking_server.artifacts_prefix)
    assert any(run.info.run_id in k and k.endswith("evaluation/test/roc.png") for k in keys)
    (version,) = server_project.client.search_model_versions(
        f"name='{CLASSIFIER_MODEL}' and run_id='{run.info.run_id}'")
    assert version.tags["scheme"] == "basic"
    assert server_project.client.get_model_version_by_alias(ENCODER_MODEL, "ben").version == "1"
    for value in [*run.data.params.values(), *run.data.tags.values()]:
        assert tracking_server.aws_secret_access_key not in value


def test_compare_and_promote_on_the_server_stack(server_project, server_demo, tmp_path):
    server_project.run("compare", scheme="basic", fractions="100", out=tmp_path)
    assert (tmp_path / "bars_f1.png").exists()
    server_project.run("promote", scheme="basic")
    champion = server_project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")
    assert champion.run_id == server_demo.info.run_id


def _start(project: Project, **params) -> subprocess.Popen:
    return subprocess.Popen(project.command("finetune", **params), env=project.process_env(), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for_epochs(project: Project, seed: int, n: int, process: subprocess.Popen, timeout: float = 600) -> str:
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        runs = project.runs("finetune", seed=str(seed))
        if runs and len(project.client.get_metric_history(runs[0].info.run_id, "val_auc")) >= n:
            return runs[0].info.run_id
        time.sleep(0.5)
    raise AssertionError(f"finetune seed {seed} did not reach epoch {n}: {process.poll()}")


def _steps(project: Project, run_id: str) -> list[int]:
    return sorted(m.step for m in project.client.get_metric_history(run_id, "val_auc"))


def test_a_run_survives_a_server_restart(server_project, server_demo, tracking_server):
    params = {"epochs": 6, "feature_cache": "false", "seed": 11, "register": "false"}
    process = _start(server_project, **params)
    run_id = _wait_for_epochs(server_project, 11, 1, process)
    tracking_server.restart_mlflow()
    assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]
    run = server_project.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _steps(server_project, run_id) == [0, 1, 2, 3, 4, 5]


def test_a_server_that_stays_down_ends_the_run_clearly_and_it_resumes(server_project, server_demo,
                                                                     tracking_server):
    params = {"epochs": 6, "feature_cache": "false", "seed": 12, "register": "false"}
    env = {**server_project.process_env(), "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
           "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    process = subprocess.Popen(server_project.command("finetune", **params), env=env, cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    run_id = _wait_for_epochs(server_project, 12, 2, process)
    tracking_server.stop_mlflow()
    try:
        started = time.time()
        try:
            _, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
        assert process.returncode != 0
        assert time.time() - started < 300
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert errors and "unreachable" in errors[0] and "resume" in errors[0], stderr[-3000:]
    finally:
        tracking_server.start_mlflow()
    server_project.run("finetune", **params)
    (resumed,) = server_project.runs("finetune", seed="12")
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags["simclr_s2.resumed_from"] == run_id
    assert _steps(server_project, resumed.info.run_id) == [0, 1, 2, 3, 4, 5]


def test_credentials_come_from_the_environment_and_are_never_logged(auth_tracking_server, tmp_path,
                                                                   monkeypatch):
    root = tmp_path / "auth-project"
    project = Project(root, project_env(root, auth_tracking_server.uri))
    anonymous = project.run("make_demo_data", check=False, out=root / "archive", n_patches=8)
    assert anonymous.returncode != 0
    project.env.update(MLFLOW_TRACKING_USERNAME=auth_tracking_server.username,
                       MLFLOW_TRACKING_PASSWORD=auth_tracking_server.password)
    project.run("make_demo_data", out=root / "archive", n_patches=8)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", auth_tracking_server.username)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", auth_tracking_server.password)
    run = project.latest("make_demo_data")
    assert run.info.status == "FINISHED"
    logged = [*run.data.params.values(), *run.data.tags.values()]
    assert not any(auth_tracking_server.password in value for value in logged)
