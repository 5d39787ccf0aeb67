"""What a stack's folder records (pid files, stack.json, secrets.json) and what later commands make of it,
checked on the functions with a throwaway process or a temporary folder: no stack starts here."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from simclr_s2.server import mlflow_server, processes, stack
from simclr_s2.server.config import Config, Secrets, StackError, StateDir, config_from_env


@pytest.fixture
def state(tmp_path: Path) -> StateDir:
    state = StateDir(tmp_path)
    for folder in (state.logs, state.run):
        folder.mkdir()
    return state


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No setting of a stack the user may run reaches config_from_env or resolve_secrets."""
    for name in list(os.environ):
        if name.startswith(("SIMCLR_", "MLFLOW_", "AWS_")):
            monkeypatch.delenv(name)
    return monkeypatch


def _saved(auth: bool, admin: str | None) -> Config:
    return Config(pg_port=15432, s3_port=18333, mlflow_port=15000, workers=1, auth=auth, admin_username=admin)


def test_workers_a_dead_process_left_are_found_and_ended(state: StateDir) -> None:
    """A killed mlflow server's uvicorn workers keep its port: stop must still end them."""
    proc = processes.spawn(state, "mlflow", ["sh", "-c", "sleep 60 & exit 0"], dict(os.environ))
    proc.wait()  # the leader is gone, its background `sleep` (same process group) lives on
    assert not processes.running(state, "mlflow")
    assert processes.group(state, "mlflow") == (proc.pid, False)

    assert processes.terminate(state, "mlflow", timeout=5) is True
    assert processes.group(state, "mlflow") is None
    assert not (state.run / "mlflow.pid").exists()


def test_an_unreadable_pid_file_is_a_process_not_running(state: StateDir, capsys: pytest.CaptureFixture) -> None:
    (state.run / "seaweedfs.pid").write_text("")  # a crash before spawn wrote it
    assert not processes.running(state, "seaweedfs")
    assert processes.terminate(state, "seaweedfs") is False  # `stop` goes on with PostgreSQL
    assert "seaweedfs.pid is unreadable" in capsys.readouterr().err


def test_a_plain_start_keeps_the_basic_auth_a_stack_was_created_with(clean_env: pytest.MonkeyPatch) -> None:
    assert config_from_env(None, _saved(True, "admin"), bootstrapped=True).auth is True
    assert config_from_env(False, _saved(True, "admin"), bootstrapped=True).auth is False
    assert config_from_env(None, None, bootstrapped=False).auth is False


def test_the_admin_stays_the_one_basic_auth_was_created_with(clean_env: pytest.MonkeyPatch) -> None:
    """Clients set MLFLOW_TRACKING_USERNAME too: whoever restarts the stack does not become its admin."""
    clean_env.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    assert config_from_env(True, _saved(True, "admin"), bootstrapped=True).admin_username == "admin"
    assert config_from_env(None, _saved(False, "admin"), bootstrapped=True).admin_username == "admin"
    assert config_from_env(True, _saved(False, None), bootstrapped=False).admin_username == "alice"


def test_the_admin_password_goes_to_the_server_only_until_the_admin_exists(
    state: StateDir, clean_env: pytest.MonkeyPatch
) -> None:
    clean_env.setenv("MLFLOW_TRACKING_PASSWORD", "alice-password-123")
    config, secrets = _saved(True, "admin"), Secrets("pg", "key", "secret", "flask")
    assert mlflow_server.server_env(state, config, secrets)["MLFLOW_AUTH_ADMIN_PASSWORD"] == "alice-password-123"
    (state.auth_dir / "basic_auth.db").touch()
    assert "MLFLOW_AUTH_ADMIN_PASSWORD" not in mlflow_server.server_env(state, config, secrets)


def test_s3_keys_a_running_seaweedfs_holds_cannot_change(state: StateDir, clean_env: pytest.MonkeyPatch) -> None:
    state.save(_saved(False, None), Secrets("pg", "key", "secret", "flask"))
    clean_env.setenv("AWS_ACCESS_KEY_ID", "other-key")
    with pytest.raises(StackError, match="AWS_ACCESS_KEY_ID differs from the one the running SeaweedFS holds"):
        state.resolve_secrets(s3_running=True)
    assert state.resolve_secrets(s3_running=False).s3_access_key == "other-key"  # stopped: the new key


def test_secrets_json_is_written_whole_and_private(state: StateDir) -> None:
    state.save(_saved(False, None), Secrets("pg", "key", "secret", "flask"))
    assert oct((state.root / "secrets.json").stat().st_mode & 0o777) == "0o600"
    assert state.load_secrets() == Secrets("pg", "key", "secret", "flask")
    assert sorted(p.name for p in state.root.iterdir() if p.is_file()) == ["secrets.json", "stack.json"]


def test_pg_password_of_an_existing_database_cannot_change(state: StateDir, clean_env: pytest.MonkeyPatch) -> None:
    state.save(_saved(False, None), Secrets("pg", "key", "secret", "flask"))
    state.pgdata.mkdir()
    (state.pgdata / "PG_VERSION").write_text("15\n")
    clean_env.setenv("SIMCLR_PG_PASSWORD", "other")
    with pytest.raises(StackError, match="SIMCLR_PG_PASSWORD differs from the one the database in"):
        state.resolve_secrets(s3_running=False)



def test_restarting_the_tracking_server_of_a_stopped_stack_is_one_line_at_once(
    state: StateDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without its database the server retried for two minutes, then died with a traceback in its log."""
    state.save(_saved(False, None), Secrets("pg", "key", "secret", "flask"))
    monkeypatch.setattr(mlflow_server, "start", lambda *args: pytest.fail("started without its database"))
    with pytest.raises(StackError, match=f"PostgreSQL and SeaweedFS of the stack in {state.root} are not running"):
        stack.restart_mlflow(state)


@pytest.mark.parametrize("written", [None, '{"pg_password": "x"', '{"pg_password": "x"}'])  # gone, cut, old
def test_a_missing_or_unreadable_secrets_json_is_one_line(state: StateDir, written: str | None) -> None:
    state.save(_saved(False, None), Secrets("pg", "key", "secret", "flask"))
    secrets = state.root / "secrets.json"
    secrets.unlink() if written is None else secrets.write_text(written)
    with pytest.raises(StackError, match=f"{secrets} is "):
        stack.status(state)
    with pytest.raises(StackError, match=f"{secrets} is "):
        stack.restart_mlflow(state)


@pytest.mark.parametrize(("variable", "port", "other"), [
    ("SIMCLR_MLFLOW_PORT", "18334", "SeaweedFS master (SIMCLR_S3_PORT + 1)"),
    ("SIMCLR_PG_PORT", "28333", "SeaweedFS s3 (SIMCLR_S3_PORT + 0) gRPC"),
])
def test_two_parts_on_one_port_are_refused_before_anything_starts(
    clean_env: pytest.MonkeyPatch, variable: str, port: str, other: str
) -> None:
    """Each port was free, so the stack started PostgreSQL and SeaweedFS, then the server failed to bind."""
    clean_env.setenv(variable, port)
    with pytest.raises(StackError, match=rf"port {port} is wanted by both .*{re.escape(other)}"):
        config_from_env(False, None, bootstrapped=False)
