"""The platform against the real stack (PostgreSQL + S3 + mlflow server): the demo finetune, compare and
promote, artifacts in the bucket, a server restart mid-run, a server that stays down (basic auth:
test_auth.py)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
from mlflow.entities import Run
from project_runner import ROOT, Project, project_env

from simclr_s2.faults import PAUSE_ENV
from simclr_s2.stages.classifier import FINETUNE
from simclr_s2.stages.compare import COMPARE
from simclr_s2.stages.promote import PROMOTE
from simclr_s2.tracking.names import CLASSIFIER_MODEL, ENCODER_MODEL

pytestmark = [pytest.mark.server, pytest.mark.e2e]


@pytest.fixture(scope="module")
def server_project(tracking_server, tmp_path_factory) -> Project:
    root = tmp_path_factory.mktemp("server-project")
    # clients need no object-store credentials: artifacts go through the server
    return Project(root, project_env(root, tracking_server.uri),
                   unset=("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"))


@pytest.fixture(scope="module")
def server_demo(server_project):
    """The demo chain and a 5-epoch finetune on the stack (in this process: `mlflow run` itself is tested
    end to end elsewhere). Its head learns at 5e-4: on the test demo's 16 training patches, at STUDY.md's
    5e-5 it still says one class everywhere after 5 epochs (and after 20), and promote rightly refuses such
    a model."""
    return server_project.client.get_run(server_project.run_stage(FINETUNE, epochs=5, lr=5e-4))


def test_finetune_on_the_server_stack(server_project, server_demo, tracking_server):
    run = server_demo
    assert run.info.status == "FINISHED"
    assert run.data.params["trainable"] == "head2" and run.data.tags["pretrained"] == "ben"
    assert len(server_project.client.get_metric_history(run.info.run_id, "val_f1")) == 5
    keys = tracking_server.object_keys(tracking_server.artifacts_prefix)
    assert any(run.info.run_id in k and k.endswith("evaluation/test/roc.png") for k in keys)
    (version,) = server_project.client.search_model_versions(
        f"name='{CLASSIFIER_MODEL}' and run_id='{run.info.run_id}'")
    assert version.tags["scheme"] == "basic"
    assert server_project.client.get_model_version_by_alias(ENCODER_MODEL, "ben").version == "1"
    for value in [*run.data.params.values(), *run.data.tags.values()]:
        assert tracking_server.aws_secret_access_key not in value


def test_compare_and_promote_on_the_server_stack(server_project, server_demo, tmp_path):
    server_project.run_stage(COMPARE, scheme="basic", fractions="100", out=str(tmp_path), n_boot=100)
    assert (tmp_path / "report.html").exists()
    server_project.run_stage(PROMOTE, scheme="basic", fraction="100")
    champion = server_project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")
    assert champion.run_id == server_demo.info.run_id


def _held_params(demo: Run, seed: int) -> dict[str, object]:
    """A finetune of the demo's split and encoder, 4 epochs, unregistered."""
    params = demo.data.params
    return {"split": params["resolved_split"], "pretrained": params["resolved_pretrained"], "epochs": 4,
            "seed": seed, "register": "false"}


def _held(project: Project, demo: Run, folder: Path, seed: int, env: dict[str, str]) -> subprocess.Popen:
    """That finetune as its own process, held live after logging its epoch 1, until `folder`/resume exists:
    the server can be stopped at a known point, no timer involved."""
    argv = project.entry_point("finetune", **_held_params(demo, seed))
    process = subprocess.Popen(argv, env={**project.process_env(), **env, PAUSE_ENV: f"after_log@1:{folder}"},
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not (folder / "paused").exists():
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.2)
    return process


def _why(project: Project, run: Run) -> tuple:
    """What decides whether a resumed run's predecessor goes to the trash (Tracker._holds_history)."""
    checkpoints = project.root / "home" / "checkpoints" / run.info.run_id
    return (run.info.run_id, run.info.status, {k: v for k, v in run.data.tags.items() if k.startswith("simclr_s2.")},
            [a.path for a in project.client.list_artifacts(run.info.run_id, "checkpoints")],
            sorted(p.name for p in checkpoints.iterdir()) if checkpoints.is_dir() else None)


def _steps(project: Project, run_id: str) -> list[int]:
    return sorted(m.step for m in project.client.get_metric_history(run_id, "val_auc"))


def test_a_run_survives_a_server_restart(server_project, server_demo, tracking_server, tmp_path):
    """The run is held in this process (the claim is about the run's client, not its process: the stays-down
    test below needs the process, for its exit status and its one line). What it logged before the restart is
    read back through the restarted server first: params, metrics and artifacts in the bucket survive it."""
    with server_project.held(FINETUNE, "after_log@1", tmp_path, **_held_params(server_demo, seed=11)) as held:
        tracking_server.restart_mlflow()
        (before,) = server_project.runs("finetune", seed="11")
        assert before.data.params["trainable"] == "head2" and _steps(server_project, before.info.run_id) == [0, 1]
        assert server_project.client.list_artifacts(before.info.run_id, "checkpoints")
    held.result(timeout=600)
    (run,) = server_project.runs("finetune", seed="11")
    assert run.info.status == "FINISHED" and _steps(server_project, run.info.run_id) == [0, 1, 2, 3]


def test_a_server_that_stays_down_ends_the_run_clearly_and_it_resumes(server_project, server_demo,
                                                                     tracking_server, tmp_path):
    retries = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    process = _held(server_project, server_demo, tmp_path, seed=12, env=retries)
    (held,) = server_project.runs("finetune", seed="12")
    tracking_server.stop_mlflow()
    try:
        (tmp_path / "resume").touch()
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 3, stderr[-3000:]
        errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
        assert errors and "unreachable" in errors[0] and "resume" in errors[0], stderr[-3000:]
    finally:
        tracking_server.start_mlflow()
    server_project.run_stage(FINETUNE, **_held_params(server_demo, seed=12))
    runs = server_project.runs("finetune", seed="12")
    assert len(runs) == 1, [_why(server_project, r) for r in runs]  # the held run should be in the trash
    (resumed,) = runs
    assert resumed.info.status == "FINISHED" and resumed.data.tags["simclr_s2.resumed_from"] == held.info.run_id
    assert _steps(server_project, resumed.info.run_id) == [0, 1, 2, 3]
