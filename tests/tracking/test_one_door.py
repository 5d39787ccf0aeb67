"""One door to MLflow (docs/development.md, "Layers"): no MLflow client is made outside simclr_s2.tracking's
door (settings' store client, which the door uses, is the one place), and no code, test or benchmark writes
MLflow's settings into the process environment, less the settings MLflow reads from nowhere else."""

from __future__ import annotations

import os
import re
from pathlib import Path

import mlflow
import pytest

from simclr_s2.errors import UserError
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.process import fluent_uris

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("simclr_s2", "tests", "benchmarks", "entrypoints")
CLIENT_MADE = re.compile(r"MlflowClient\(")
CLIENT_MAKER = Path("simclr_s2/settings/mlflow_store.py")
RAW_CLIENT = re.compile(r"(?:\btracking|\bdoor|Tracking\.of\([^)]*\)|Tracking\([^)]*\))\.client\b|\bctx\.client\b")
ENV_WRITE = re.compile(r"""(os\.environ\[\s*["'](MLFLOW_\w+)["']\s*\]\s*=(?!=)"""
                       r"""|(?:setenv|setdefault)\(\s*["'](MLFLOW_\w+)["']"""
                       r"""|os\.environ\.update\([^)]*["'](MLFLOW_\w+)["'])""")
# Where a variable is written on purpose: each is a setting MLflow reads only from the environment.
WRITES_ALLOWED = {
    "tests/server/test_auth.py": {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},  # the auth feature
    "tests/server/test_state.py": {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"},  # the stack's admin
    "tests/tracking/test_connectivity.py": {"MLFLOW_HTTP_REQUEST_MAX_RETRIES"},  # the retry budget's own test
    "tests/tracking/test_claims.py": {"MLFLOW_SQLALCHEMYSTORE_POOL_SIZE"},  # one SQLite pool for 50 contenders
    "tests/app/test_specs.py": {"MLFLOW_TRACKING_URI"},  # the experiment plugin, asked as `mlflow run` asks it
}


def _python_files() -> list[Path]:
    """Every Python file of the project but this one (its examples would count)."""
    here = Path(__file__).resolve()
    return sorted(p for folder in SOURCES for p in (ROOT / folder).rglob("*.py") if p != here)


def env_writes(text: str) -> set[str]:
    """The MLFLOW_* variables `text` writes into the process environment by name."""
    return {next(name for name in match.groups()[1:] if name) for match in ENV_WRITE.finditer(text)}


def test_the_grep_sees_each_way_of_writing_a_variable():
    assert env_writes('os.environ["MLFLOW_TRACKING_URI"] = uri') == {"MLFLOW_TRACKING_URI"}
    assert env_writes("monkeypatch.setenv('MLFLOW_RUN_ID', run)\nos.environ.setdefault(\"MLFLOW_X\", '1')") == {
        "MLFLOW_RUN_ID", "MLFLOW_X"}
    assert env_writes('os.environ.update({"A": 1, "MLFLOW_TRACKING_URI": uri})') == {"MLFLOW_TRACKING_URI"}
    assert env_writes('os.environ["MLFLOW_RUN_ID"] == run or os.environ.get("MLFLOW_RUN_ID")') == set()


def test_no_mlflow_client_is_made_outside_the_door():
    made = [str(p.relative_to(ROOT)) for p in _python_files()
            if CLIENT_MADE.search(p.read_text()) and p.relative_to(ROOT) != CLIENT_MAKER]
    assert made == [], "build a simclr_s2.tracking.door.Tracking instead"


def test_above_tracking_the_door_s_methods_are_used_never_its_client():
    reached = [str(p.relative_to(ROOT)) for p in (ROOT / "simclr_s2").rglob("*.py")
               if "tracking" not in p.relative_to(ROOT).parts[1:2] and RAW_CLIENT.search(p.read_text())]
    assert reached == [], "add what the stage needs to simclr_s2.tracking.door.Tracking"


def test_nothing_writes_mlflow_settings_into_the_environment():
    written = {}
    for path in _python_files():
        name = str(path.relative_to(ROOT))
        extra = env_writes(path.read_text()) - WRITES_ALLOWED.get(name, set())
        if extra:
            written[name] = sorted(extra)
    assert written == {}, "pass the value explicitly (Context, Tracking, a child's env); see tracking/process.py"


def test_the_fluent_api_sees_the_door_s_uris_for_the_call_only(tmp_path, monkeypatch):
    """log_model reads MLflow's process-wide URIs: set for the call, then as they were, the environment
    untouched."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    before = mlflow.get_tracking_uri()
    door = Tracking(f"sqlite:///{tmp_path}/a.db", f"sqlite:///{tmp_path}/b.db")
    with fluent_uris(door.tracking_uri, door.registry_uri):
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (door.tracking_uri, door.registry_uri)
    assert mlflow.get_tracking_uri() == before
    assert "MLFLOW_TRACKING_URI" not in os.environ


def test_a_bad_tracking_uri_is_one_line():
    with pytest.raises(UserError, match=r"^MLFLOW_TRACKING_URI: cannot use 'nosuchscheme://x'") as caught:
        Tracking("nosuchscheme://x").client  # noqa: B018 - building the client is the check
    assert "\n" not in str(caught.value)


def test_a_ray_task_gets_the_store_as_an_argument_and_only_its_own_settings_in_the_environment(monkeypatch):
    """A worker runs one task after another: the run it continues is handed over with the task, never left
    in the worker's environment for the next one (or MLflow's fluent calls) to find."""
    from simclr_s2.cluster.environment import applied, handed_over

    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    monkeypatch.setenv("SIMCLR_S2_MAX_EPOCHS", "2")
    env = handed_over("sqlite:///x.db", "7", "abc")
    assert (env["MLFLOW_TRACKING_URI"], env["MLFLOW_RUN_ID"], env["SIMCLR_S2_MAX_EPOCHS"]) == (
        "sqlite:///x.db", "abc", "2")
    with applied({**env, "SIMCLR_S2_MAX_TRIALS": "3"}):
        assert os.environ["SIMCLR_S2_MAX_TRIALS"] == "3" and "MLFLOW_RUN_ID" not in os.environ
    assert "SIMCLR_S2_MAX_TRIALS" not in os.environ
