"""Session fixtures shared by all tests: one small demo archive and its index, built once.

Treat both as read-only: a test that breaks patches copies them into its own tmp_path first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_s2.bigearthnet.demo import write_demo_archive
from simclr_s2.bigearthnet.index import build_index

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


@pytest.fixture(autouse=True)
def _fresh_mlflow_state():
    """Each test starts from MLflow's process-wide defaults: no active run or experiment, and the tracking
    and registry URIs read from the environment. MLflow keeps these in module globals, so a test that sets
    an experiment or a URI would otherwise send later tests' runs into its own (deleted) store
    (mlflow.set_experiment also writes MLFLOW_EXPERIMENT_ID into the environment)."""
    import os

    saved = {name: os.environ.get(name) for name in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME",
                                                     "MLFLOW_RUN_ID", "MLFLOW_TRACKING_URI")}
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    import mlflow
    from mlflow.tracking import _model_registry, _tracking_service, fluent

    while mlflow.active_run():
        mlflow.end_run()
    fluent._active_experiment_id = None
    _tracking_service.utils._tracking_uri = None
    _model_registry.utils._registry_uri = None
