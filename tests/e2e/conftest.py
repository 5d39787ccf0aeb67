"""One fresh store for the end-to-end tests, started the way the README starts a newcomer: `make demo`
(with an 80-patch demo and fine-tunes capped at 5 epochs through the environment: the launcher tests ask
for 2 or 4). The README's later commands, and the tests of the `mlflow run` launcher, run on what it made."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import pytest
from project_runner import Project, project_env


@dataclass(frozen=True)
class Demo:
    project: Project
    first: subprocess.CompletedProcess  # what the first `make demo` printed
    runs: frozenset[str]  # the runs it made


@pytest.fixture(scope="session")
def readme_demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    root = tmp_path_factory.mktemp("readme")
    project = Project(root, project_env(root, SIMCLR_S2_MAX_EPOCHS="5"))
    first = project.shell("make demo")
    return Demo(project, first, frozenset(r.info.run_id for r in project.runs()))
