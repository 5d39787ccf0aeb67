"""One real local Ray cluster of 2 CPUs for the session (started and stopped here), and a test project
whose demo splits (an 80-patch archive) the cells train on."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from project_runner import Project, project_from

from simclr_s2.stages import auto

COMMAND_VARIABLES = ("MLFLOW_", "SIMCLR_S2_")  # set per command by the tests: no node may hold its own


@pytest.fixture(scope="package")
def cluster() -> Iterator[str]:
    """A 2-CPU Ray cluster on this machine (no dashboard: here it would only cost start-up); its address. Ray is
    imported here, not when the folder is collected: both of `make test`'s workers collect it, one runs it."""
    import ray

    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith(COMMAND_VARIABLES)}
    try:
        ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    finally:
        os.environ.update(saved)
    # Both workers import the training stack (about 5 s each) while the session makes its demo splits.
    warm = ray.remote(num_cpus=1)(lambda: bool(__import__("simclr_s2.cluster.tasks")))
    warming = [warm.remote() for _ in range(2)]
    yield ray.get_runtime_context().gcs_address
    ray.get(warming)
    ray.shutdown()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The project backend's tests after the folder's others. Its entry points run in a runtime_env of their
    own (a working_dir), for which Ray starts workers and then retires idle ones beyond the cluster's CPUs:
    run first, they retired the two workers `cluster` had warmed, and the grid and tuning tasks paid the
    imports again in new ones (about 10 CPU-s a worker)."""
    backend = [item for item in items if item.path.name == "test_backend.py"]
    rest = [item for item in items if item.path.name != "test_backend.py"]
    folder = [i for i, item in enumerate(rest) if backend and item.path.parent == backend[0].path.parent]
    if folder:  # else nothing of the folder but the backend's tests was selected
        items[:] = rest[:folder[-1] + 1] + backend + rest[folder[-1] + 1:]


@pytest.fixture(scope="package")
def project(tmp_path_factory: pytest.TempPathFactory, migrated_store: Path) -> Project:
    return project_from(migrated_store, tmp_path_factory.mktemp("cluster-project"))


@pytest.fixture(scope="package")
def split(project: Project) -> str:
    """runs:/ URI of the demo splits of the basic scheme (the baseline cells need nothing else)."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in project.env.items():
            if key.startswith("SIMCLR_S2_"):
                mp.setenv(key, value)
        return auto.demo_splits(project.context(), "basic")
