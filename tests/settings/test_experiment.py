"""The default-experiment plugin finds the project `mlflow run <path>` names, wherever it was started from
(MLflow resolves the experiment in the starting folder, before it moves into the project)."""

from __future__ import annotations

import click
from project_runner import ROOT

from simclr_s2.settings.experiment import ProjectExperimentProvider, project_folder


def test_mlflow_run_of_a_project_path_started_elsewhere_is_in_the_project(tmp_path, monkeypatch):
    from mlflow import cli as mlflow_cli  # 1.8 CPU-s: here, not in collecting, which every xdist worker does

    monkeypatch.chdir(tmp_path)
    provider = ProjectExperimentProvider()
    assert not provider.in_context()  # a script outside any project: MLflow's Default
    with mlflow_cli.run.make_context("run", [str(ROOT), "-e", "finetune", "--env-manager", "local"]):
        assert project_folder() == ROOT and provider.in_context()
    with mlflow_cli.run.make_context("run", ["https://github.com/someone/other-project", "-e", "main"]):
        assert project_folder() == tmp_path and not provider.in_context()  # not a local folder: where it started
    another_tool = click.Command("run", params=[click.Argument(["uri"])], callback=lambda uri: None)
    with another_tool.make_context("run", [str(ROOT)]):
        assert project_folder() == tmp_path  # only MLflow's own `run` names the project
