"""Session fixtures shared by all tests: one small demo archive and its index, built once.

Treat both as read-only: a test that breaks patches copies them into its own tmp_path first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import build_index

TESTS = Path(__file__).resolve().parent
# Folders whose conftest builds a session fixture (a server stack, a Ray cluster, a demo project): under
# pytest-xdist (`make test` runs `-n 2 --dist loadgroup`) each runs whole on one worker, so it is built once.
ONE_WORKER_FOLDERS = {"server", "e2e", "cluster", "stages", "tracking", "scenes"}
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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for xdist's loadgroup: a folder of ONE_WORKER_FOLDERS together, else each file (its
    module fixtures are built once). Without xdist the marks do nothing."""
    for item in items:
        parts = item.path.relative_to(TESTS).parts
        group = parts[0] if parts[0] in ONE_WORKER_FOLDERS else "/".join(parts)
        item.add_marker(pytest.mark.xdist_group(group))

