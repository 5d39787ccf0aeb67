"""A tracking store shared by the tracker's tests (a new SQLite store costs a second of migrations); each
test gets its own experiment and state folder, so none sees another's runs."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from simclr_s2.settings.context import Context


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store')}/mlflow.db"


@pytest.fixture
def ctx(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    """A context of its own. Its folders are in the environment too, for the processes a test starts
    (handed the store by tiny_training.context_env); the store and experiment only in the context."""
    for key, value in {"SIMCLR_S2_HOME": str(tmp_path / "home"), "SIMCLR_S2_DATA": str(tmp_path / "data"),
                       "SIMCLR_S2_HEARTBEAT_S": "1"}.items():
        monkeypatch.setenv(key, value)
    for key in ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID"):
        monkeypatch.delenv(key, raising=False)
    return Context.from_env({**os.environ, "MLFLOW_TRACKING_URI": store,
                             "MLFLOW_EXPERIMENT_NAME": f"test-{uuid.uuid4().hex[:8]}"})
