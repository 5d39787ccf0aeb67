"""Session fixtures shared by all tests (one small demo archive and its index, built once), one thread per
process, and how `make test`'s two xdist workers share the files out.

Treat the archive and index as read-only: a test that breaks patches copies them into its own tmp_path first.
"""

from __future__ import annotations

import gc
import os

# One thread per process, set before torch or numpy load (subprocesses inherit it): `make test` runs two
# workers on two cores, each starting entry points of its own. Two OpenMP threads per process there spin
# on each other's cores: tests/learning/test_train.py took 100-127 s of CPU time with two threads, 16-22 s
# with one (load average 13-16, interleaved).
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from pathlib import Path

import pytest
from cpu_probe import cpu_seconds, record_cpu
from xdist.scheduler import LoadScopeScheduling

from simclr_s2.app.cli import imports_uncollected
from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import build_index

TESTS = Path(__file__).resolve().parent
# Folders whose conftest builds a session fixture (a server stack, a Ray cluster, a demo project): under
# pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) each runs whole on one worker, so it is built once.
# The files named beside them use none of it and go on their own (the auth stack is only test_auth.py's).
ONE_WORKER_FOLDERS = {"server", "e2e", "cluster", "stages", "tracking", "scenes"}
ON_THEIR_OWN = {"server/test_auth.py", "server/test_docker_files.py", "stages/test_auto.py"}
# The slowest groups, slowest first, one file of each (CPU-seconds by group from a CI run's probe,
# tests/cpu_probe.py, 2026-12-06: stages 175, e2e 150, server 63, cluster 51, test_tuning 46, scenes 21, then
# 19 to 12): a group holding one of these files starts before every other, so no long group begins while the
# other worker has nothing left (longest first).
SLOWEST_FIRST = ("stages/test_study.py", "e2e/test_mlflow_run.py", "server/test_platform.py", "cluster/test_grid.py",
                 "study/test_tuning.py", "scenes/test_predict.py", "learning/test_distributed.py",
                 "learning/test_train.py", "tracking/test_tracker.py", "study/test_splits.py", "server/test_auth.py",
                 "learning/test_simclr.py", "learning/test_pretrain_on_demo.py")
DEMO_PATCHES = 120
DEMO_SEED = 0
# Real BigEarthNet-S2 names given to the first demo patches, so the official lists apply to them:
# name -> (on the snow list, on the cloud/shadow list, official split, country)
LISTED_PATCHES = {
    "S2A_MSIL2A_20170701T093031_44_45": (True, False, None, "Finland"),
    "S2A_MSIL2A_20170701T093031_4_32": (True, False, None, "Finland"),
    "S2A_MSIL2A_20170613T101031_38_58": (False, True, None, "Austria"),
    "S2A_MSIL2A_20170613T101031_0_45": (False, False, "train", "Finland"),
    "S2A_MSIL2A_20170613T101031_0_49": (False, False, "validation", "Finland"),
    "S2A_MSIL2A_20170613T101031_0_48": (False, False, "test", "Finland"),
}


@pytest.fixture(scope="session")
def demo_recipe() -> dict:
    """How `demo_archive` was written: n_patches, seed, and `listed` = LISTED_PATCHES."""
    return {"n_patches": DEMO_PATCHES, "seed": DEMO_SEED, "listed": LISTED_PATCHES}


@pytest.fixture(scope="session")
def demo_archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 120-patch demo archive (seed 0); its first 6 patches carry the real names of LISTED_PATCHES."""
    root = tmp_path_factory.mktemp("demo") / "BigEarthNet-v1.0"
    return write_demo_archive(root, n_patches=DEMO_PATCHES, seed=DEMO_SEED, real_names=list(LISTED_PATCHES))


@pytest.fixture(scope="session")
def demo_index(demo_archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The index Parquet file of `demo_archive` (built with 2 worker processes)."""
    return build_index(demo_archive, tmp_path_factory.mktemp("index") / "index.parquet", workers=2).index_path


@pytest.fixture(scope="session")
def migrated_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty SQLite tracking store with MLflow's tables made, to copy as a project's `mlflow.db` where the
    claim is not about a new store: a new store runs MLflow's migrations, about 1 CPU-s; a copy opens in 0.04."""
    from simclr_s2.tracking.door import Tracking

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    Tracking(f"sqlite:///{path}").client.search_experiments()
    return path


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """With SIMCLR_S2_TEST_CPU_LOG set, the CPU seconds of each test: setup, call and teardown together."""
    start = cpu_seconds()
    yield
    record_cpu(item.nodeid, cpu_seconds() - start)


def group_of(file: str) -> str:
    """The group of a test file (its path under tests/): its folder if that is one of ONE_WORKER_FOLDERS,
    else the file itself (its module fixtures are built once)."""
    folder = file.split("/")[0]
    return folder if folder in ONE_WORKER_FOLDERS and file not in ON_THEIR_OWN else file


def _rank(group: str) -> int:
    """Where a group starts: by its slowest file in SLOWEST_FIRST, else after all of those."""
    ranks = [i for i, file in enumerate(SLOWEST_FIRST) if group_of(file) == group]
    return min(ranks, default=len(SLOWEST_FIRST))


class FileGroupScheduling(LoadScopeScheduling):
    """xdist's loadgroup, with the group read from the test's file (`group_of`). xdist's own reads an
    `xdist_group` mark that its worker appends to the node id, which pytest 9.2 no longer lets it change
    (pytest-dev/pytest-xdist#1386): every test then went to whichever worker was free, and both workers
    built every server stack, demo project and Ray cluster."""

    def _split_scope(self, nodeid: str) -> str:
        return group_of(nodeid.split("::", 1)[0].removeprefix("tests/"))


def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> LoadScopeScheduling | None:
    """`--dist loadgroup` (what `make test` runs) groups by FileGroupScheduling; other modes are xdist's."""
    return FileGroupScheduling(config, log) if config.getvalue("dist") == "loadgroup" else None


def pytest_configure(config: pytest.Config) -> None:
    """xdist hands out groups in collection order (not re-sorted by test count), which the hook below sets."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


@pytest.hookimpl(hookwrapper=True)
def pytest_collection(session: pytest.Session):
    """Collect (import torch, MLflow, scikit-learn and every test module) as a command imports its stage
    (`imports_uncollected`): every full collection walked those objects again, 6.7 of tests/study's 50 CPU-s.
    Collection's own garbage (about 22,000 objects) is freed before the rest is frozen. A wrapper, so xdist's
    controller, which collects nothing, has its collector back too."""
    with imports_uncollected():
        yield
        gc.collect()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The slowest groups first (`_rank`), then the others as collected; within a group the tests keep
    their order."""
    def group(item: pytest.Item) -> str:
        return group_of(item.path.relative_to(TESTS).as_posix())

    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(group(item), index)
    order = {id(item): index for index, item in enumerate(items)}
    items.sort(key=lambda item: (_rank(group(item)), first_seen[group(item)], order[id(item)]))
