"""The project backend plugin: `mlflow run . -e <entry point> --backend ray --backend-config ray.json`
runs the entry point as a Ray task and follows it as the local backend does (output, run status, exit
code), as docs/cluster.md shows. The two commands run at once: each is mostly start-up."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from project_runner import ROOT, unique_name

from simclr_s2.tracking.tracker import ERROR_TAG


@pytest.fixture(scope="module")
def launched(project, cluster, split, tmp_path_factory) -> dict[str, subprocess.CompletedProcess]:
    config = tmp_path_factory.mktemp("backend") / "ray.json"
    config.write_text(json.dumps({"address": cluster, "num_cpus": 1}))
    # not registered: the claim is about running and following, not the registry (2-3 CPU-s saved)
    commands = {"ok": project.command("baseline", split=split, fraction=50, epochs=1, seed=11, register="false"),
                "bad": project.command("baseline", epochs=0, seed=12)}
    running = {name: subprocess.Popen(command + ["--backend", "ray", "--backend-config", str(config)],
                                      env=project.process_env(), cwd=ROOT, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True)
               for name, command in commands.items()}
    outputs = {name: process.communicate(timeout=300) for name, process in running.items()}
    return {name: subprocess.CompletedProcess(process.args, process.returncode, *outputs[name])
            for name, process in running.items()}


def test_an_entry_point_runs_on_the_cluster_and_is_followed(project, launched):
    done = launched["ok"]
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    run = project.latest("baseline", seed="11")
    assert run.info.status == "FINISHED" and run.data.tags["mlflow.project.backend"] == "ray"
    assert f"{run.data.tags['mlflow.runName']}: best epoch 1" in done.stdout  # the entry point's own output
    storage = done.stderr.split("=== Created directory ")[1].split(" ")[0]  # MLflow's, for `path` parameters
    assert not Path(storage).exists()


def test_a_failing_entry_point_fails_mlflow_run_with_its_reason(project, launched):
    done = launched["bad"]
    assert done.returncode == 1
    assert "error: epochs: expected a finite number > 0, got 0" in done.stdout
    run_id = done.stderr.split("Run (ID '")[1].split("'")[0]
    assert project.client.get_run(run_id).info.status == "FAILED"


def test_ctrl_c_while_following_cancels_the_task_and_fails_the_run(project, monkeypatch):
    """As with the local backend: Ctrl-C on `mlflow run --backend ray` stops the command and ends its run
    FAILED (Ray is stood in for: the claim is about the follower)."""
    import ray

    from simclr_s2.cluster.backend import RaySubmittedRun
    from simclr_s2.tracking.door import Tracking

    def stream():
        raise KeyboardInterrupt
        yield

    cancelled = []
    monkeypatch.setattr(ray, "cancel", cancelled.append)
    run_id = project.client.create_run(project.client.create_experiment(unique_name("interrupted"))).info.run_id
    followed = stream()
    with pytest.raises(KeyboardInterrupt):
        RaySubmittedRun(run_id, followed, Tracking(project.env["MLFLOW_TRACKING_URI"])).wait()

    assert cancelled == [followed]
    run = project.client.get_run(run_id)
    assert (run.info.status, run.data.tags[ERROR_TAG]) == ("FAILED", "interrupted")
