"""Entry points through the real launcher, `mlflow run . --env-manager local`: the run it makes before our
code starts is adopted, in the named experiment (never Default), a kill is resumed under it by the
same rule as everywhere, identical runs launched together train once, and bad input fails the run."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from project_runner import Project

from simclr_s2.faults import FAULT_ENV
from simclr_s2.settings.context import DEFAULT_EXPERIMENT
from simclr_s2.stages.classifier import FINETUNE
from simclr_s2.tracking.names import CLASSIFIER_MODEL

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(readme_demo) -> Project:
    return readme_demo.project


@pytest.fixture(scope="module")
def chain(project: Project) -> dict[str, str]:
    """What the demo's `auto` resolved to (its split and encoder), for runs that name them."""
    params = project.latest("finetune").data.params
    return {"split": params["resolved_split"], "pretrained": params["resolved_pretrained"]}


def _steps(project: Project, run_id: str) -> list[int]:
    return sorted(m.step for m in project.client.get_metric_history(run_id, "val_auc"))


def _errors(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error: ")]


def test_runs_land_in_the_named_experiment_never_in_default(project, chain):
    named = project.client.get_experiment_by_name(DEFAULT_EXPERIMENT).experiment_id
    assert {r.info.experiment_id for r in project.runs()} == {named}
    finetune = project.latest("finetune")
    assert finetune.data.tags["mlflow.project.entryPoint"] == "finetune"  # the launcher's own run, adopted
    assert project.client.search_runs(["0"]) == []


def test_a_bad_parameter_fails_its_run_with_one_line(project, chain):
    done = project.run("finetune", check=False, lr=-1)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    (line,) = _errors(done)
    assert line == "error: lr: expected a finite number > 0, got -1"
    failed = project.runs()[0]
    assert failed.info.status == "FAILED" and failed.data.tags["simclr_s2.error"] == line.removeprefix("error: ")


def test_a_kill_under_mlflow_run_resumes_every_step_once(project, chain):
    params = {**chain, "epochs": 4, "seed": 21, "register": "false"}
    env = {**project.env, FAULT_ENV: "after_upload@1"}
    killed = Project(project.root, env).run("finetune", check=False, **params)
    assert killed.returncode != 0
    (stale,) = project.runs("finetune", seed="21")  # FAILED by the launcher, which saw its child die
    assert stale.info.status == "FAILED" and _steps(project, stale.info.run_id) == [0]
    project.run_stage(FINETUNE, **params)  # the same rule in this process: the kill needed the launcher
    (resumed,) = project.runs("finetune", seed="21")
    assert resumed.info.status == "FINISHED" and resumed.data.tags["simclr_s2.resumed_from"] == stale.info.run_id
    assert _steps(project, resumed.info.run_id) == [0, 1, 2, 3]


def test_two_identical_finetunes_launched_together_train_once(project, chain, tmp_path: Path):
    """The second goes through the launcher, whose own run must end FAILED; the first, held live at a named
    point, is the same stage run in this process (the launcher's adoption is the first test's claim; the
    launcher's CLI and an entry point's imports cost 4.5 and about 8 CPU-s)."""
    params = {**chain, "epochs": 2, "seed": 22}
    with project.held(FINETUNE, "after_log@0", tmp_path, **params) as first:
        second = project.run("finetune", check=False, **params)
    first.result(timeout=600)
    errors = _errors(second)
    assert len(errors) == 1, second.stderr[-3000:]
    line = errors[0]
    runs = project.runs("finetune", seed="22")
    done = [r for r in runs if r.info.status == "FINISHED"]
    assert len(done) == 1 and f"run {done[0].info.run_id}" in line and "running now" in line
    assert [r.info.status for r in runs if r is not done[0]] == ["FAILED"]
    assert _steps(project, done[0].info.run_id) == [0, 1]
    versions = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and tags.seed='22'")
    assert len(versions) == 1
