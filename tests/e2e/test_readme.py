"""Every command the README shows, run as written on a fresh store (sizes made small through the
environment, every other default as shown), so the README cannot drift from the code."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
import urllib.request

import pytest
import rasterio
from ports import claimed_port
from project_runner import ROOT, Project

from simclr_s2.stages.classifier import FINETUNE

pytestmark = pytest.mark.e2e

README = ROOT / "README.md"
CHAIN = ["build_index", "create_splits", "create_splits", "finetune", "make_demo_data", "pretrain"]
MAP_DEMO_SCENE = "mlflow run . -e make_demo_data --env-manager local -P scene=outputs/demo-scene"
MAP_PREDICT = ("mlflow run . -e predict --env-manager local -P scene=outputs/demo-scene "
               "-P model=models:/simclr-s2-irrigation/1")
MAPS = ROOT / "outputs" / "predict" / "demo-scene"


def readme_blocks() -> list[list[str]]:
    """The command lines of each of the README's ```sh blocks, comments stripped: a block runs in one shell."""
    blocks = re.findall(r"```sh\n(.*?)```", README.read_text(), flags=re.DOTALL)
    lines = ([line.split("#", 1)[0].strip() for line in block.splitlines()] for block in blocks)
    return [[line for line in block if line] for block in lines]


def test_every_readme_command_is_run_here():
    assert readme_blocks() == [["make demo", "make test"], [".venv/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db"],
                               [". .venv/bin/activate", MAP_DEMO_SCENE, MAP_PREDICT],
                               [". .venv/bin/activate", "python -m simclr_s2 finetune -h",
                                "mlflow run . -e finetune --env-manager local -P fraction=50"]]


def test_make_test_is_what_ci_runs():
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    plan = subprocess.run(["make", "-n", "test"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "-m pytest" in plan


def test_make_demo_twice_reuses_every_step_but_the_finetune(readme_demo):
    """The second demo is its finetune in this process: `make demo` itself ran as written (the fixture), and
    what is reused is decided by the stages, not by the launcher (whose run is adopted either way)."""
    project = readme_demo.project
    assert sorted(r.data.tags["stage"] for r in project.runs() if r.info.run_id in readme_demo.runs) == CHAIN
    first = readme_demo.first
    lines = first.stdout.splitlines()
    summary = [i for i, line in enumerate(lines) if line.startswith("finetune-ben-basic-100pct-s0: best epoch")]
    assert summary and "test F1" in lines[summary[-1]] and "to browse: mlflow ui" in "\n".join(lines[summary[-1]:])
    assert "Hint: Inferred schema" not in first.stderr and "Pickle or CloudPickle" not in first.stderr
    assert "INFO mlflow.system_metrics" not in first.stderr  # MLflow's own notes stay out of the command's log
    before = {r.info.run_id for r in project.runs()}
    project.run_stage(FINETUNE)
    assert [r.data.tags["stage"] for r in project.runs() if r.info.run_id not in before] == ["finetune"]
    steps = sorted(r.data.tags["stage"] for r in project.runs() if r.data.tags["stage"] != "finetune")
    assert steps == sorted(s for s in CHAIN if s != "finetune")  # each step's run once


def test_the_next_step_command_as_written(readme_demo):
    project = readme_demo.project
    project.shell(" && ".join(readme_blocks()[3]))
    run = project.latest("finetune")
    assert run.info.status == "FINISHED" and run.data.params["fraction"] in ("50", "50.0")


def test_the_map_commands_as_written(readme_demo, tmp_path):
    """The demo scene mapped by the demo's classifier: the COG in the scene's CRS. Read from the run's
    artifacts (the same files): the commands write under the checkout's outputs/, where maps of an earlier
    run may lie."""
    project = readme_demo.project
    project.shell(" && ".join(readme_blocks()[2]))
    run = project.latest("predict")
    assert run.info.status == "FINISHED" and run.data.tags["model_version"] == "simclr-s2-irrigation/1"
    assert run.data.tags["scene_id"] == "demo-scene" and (MAPS / "quicklook.png").is_file()
    cog = project.client.download_artifacts(run.info.run_id, "maps/probability.tif", str(tmp_path))
    with rasterio.open(cog) as maps:
        assert maps.crs.to_epsg() == 32633 and maps.shape == (5, 5)


def test_mlflow_ui_as_written_serves_the_store(readme_demo):
    project = readme_demo.project
    with claimed_port() as port:
        _serve_the_store(project, port)


def _serve_the_store(project: Project, port: int) -> None:
    """The README's `mlflow ui` on `port`, until /health answers; stopped after."""
    command = readme_blocks()[1][0].replace(".venv/bin/", f"{ROOT}/.venv/bin/")
    # One worker and no job runner (click reads both options from the environment): with the defaults the
    # server starts 4 workers and a job runner, 22-24 CPU-seconds before it answers, against 6 (load 15-18).
    env = {**project.process_env(), "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
           "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    server = subprocess.Popen(command, shell=True, cwd=project.root, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                    assert answer.status == 200
                    break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "mlflow ui never answered"
                time.sleep(0.5)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
