"""Session fixtures shared by all tests (one small demo archive and its index, built once), one thread per
process, and how `make test`'s two xdist workers share the files out.

Treat the archive and index as read-only: a test that breaks patches copies them into its own tmp_path first.
"""

from __future__ import annotations

import os

# One thread per process, set before torch or numpy load (subprocesses inherit it): `make test` runs two
# workers on two cores, each starting entry points of its own. Two OpenMP threads per process there spin
# on each other's cores: tests/learning/test_train.py took 100-127 s of CPU time with two threads, 16-22 s
# with one (load average 13-16, interleaved).
for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

from collections.abc import Iterable
from pathlib import Path

import pytest

from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import build_index

TESTS = Path(__file__).resolve().parent
SHARED_SCOPES = ("session", "package")
# The slowest groups, slowest first (measured with --durations): a group holding one of these files starts
# before every other, so no long group begins while the other worker has nothing left (longest first).
SLOWEST_FIRST = ("server/test_platform.py", "e2e/test_mlflow_run.py", "stages/test_study.py",
                 "cluster/test_grid.py", "study/test_tuning.py", "tracking/test_tracker.py",
                 "learning/test_train.py", "learning/test_simclr.py", "learning/test_distributed.py",
                 "scenes/test_predict.py")
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


def pytest_configure(config: pytest.Config) -> None:
    """xdist hands out groups in collection order (not re-sorted by test count), which the hook below sets."""
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def _shared_fixtures(item: pytest.Item) -> Iterable[tuple[str, str]]:
    """The session or package fixtures of a test folder's conftest this test uses (the costly ones: a server
    stack, a Ray cluster, a demo project); this file's session fixtures are cheap and built per worker."""
    for name in getattr(item, "fixturenames", ()):
        for definition in item._fixtureinfo.name2fixturedefs.get(name, ()):
            if definition.scope in SHARED_SCOPES and definition.baseid.startswith("tests/"):
                yield definition.baseid, name


def _groups(items: list[pytest.Item]) -> dict[str, str]:
    """File -> group: the files whose tests share a costly fixture, joined (union-find), so under xdist's
    loadgroup each such fixture is built once, on one worker; every other file is a group of its own."""
    parent: dict[object, object] = {}

    def root(node: object) -> object:
        while parent.setdefault(node, node) != node:
            node = parent[node]
        return node

    for item in items:
        for shared in _shared_fixtures(item):
            parent[root(shared)] = root(_file(item))
    files = {_file(item) for item in items}
    members: dict[object, list[str]] = {}
    for file in sorted(files):
        members.setdefault(root(file), []).append(file)
    return {file: "+".join(group) for group in members.values() for file in group}


def _file(item: pytest.Item) -> str:
    return item.path.relative_to(TESTS).as_posix()


def _rank(group: str) -> int:
    files = group.split("+")
    return min((SLOWEST_FIRST.index(f) for f in files if f in SLOWEST_FIRST), default=len(SLOWEST_FIRST))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for xdist's loadgroup (`_groups`) and put the slowest groups first; within a group the
    tests keep their order. Without xdist the marks do nothing, and only the order changes."""
    groups = _groups(items)
    first_seen: dict[str, int] = {}
    for index, item in enumerate(items):
        first_seen.setdefault(groups[_file(item)], index)
        item.add_marker(pytest.mark.xdist_group(groups[_file(item)]))
    order = {id(item): index for index, item in enumerate(items)}

    def key(item: pytest.Item) -> tuple[int, int, int]:
        group = groups[_file(item)]
        return _rank(group), first_seen[group], order[id(item)]

    items.sort(key=key)
