"""Fixtures that run the real tracking stack (PostgreSQL, SeaweedFS, mlflow server) with simclr_s2.server.

`tracking_server` starts the stack once for the tests/server package in a temporary folder on free ports
and stops it when they are done; `auth_tracking_server` does the same per module with MLflow's basic-auth
app. With SIMCLR_TEST_TRACKING_URI
set, `tracking_server` reuses that server instead (CI can `make server` once); when it is the stack in
SIMCLR_SERVER_DIR (default <repo>/.server) its bucket and restart work too, otherwise they skip.
Tests that use them carry `@pytest.mark.server`; `-m "not server"` leaves them out.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import random
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from cpu_probe import CPU_LOG_ENV, record_cpu
from ports import claim, claim_any, port_range, release

from simclr_s2.server.config import (
    ARTIFACTS_PREFIX,
    BUCKET,
    WEED_GRPC_OFFSET,
    WEED_SERVICES,
    StateDir,
    default_state_dir,
)
from simclr_s2.server.seaweedfs import admin_socket, s3_client

START_TIMEOUT_S = 300


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "server: needs the real tracking stack (PostgreSQL, SeaweedFS, mlflow server), started once",
    )


@dataclasses.dataclass
class TrackingServer:
    """What a test needs to reach one stack, and the handles to take its tracking server down and up."""

    uri: str
    s3_endpoint: str | None
    bucket: str
    artifacts_prefix: str  # key prefix of run artifacts inside the bucket
    aws_access_key_id: str | None
    aws_secret_access_key: str | None
    username: str | None = None
    password: str | None = None
    state_dir: Path | None = None  # None: a server this session did not start and cannot restart
    cli_env: dict[str, str] = dataclasses.field(default_factory=lambda: dict(os.environ), repr=False)

    def client_env(self) -> dict[str, str]:
        """The variables an MLflow client needs: the URI, and the basic-auth credentials if any."""
        env = {"MLFLOW_TRACKING_URI": self.uri}
        if self.username:
            env.update(MLFLOW_TRACKING_USERNAME=self.username, MLFLOW_TRACKING_PASSWORD=self.password)
        return env

    def s3(self):
        """A boto3 client on the bucket, to check what the server stored (clients never need one)."""
        if not (self.s3_endpoint and self.aws_access_key_id):
            pytest.skip(
                "the reused server's object store is unknown: set MLFLOW_S3_ENDPOINT_URL and AWS_* keys"
            )
        return s3_client(self.s3_endpoint, self.aws_access_key_id, self.aws_secret_access_key)

    def object_keys(self, prefix: str = "") -> list[str]:
        pages = self.s3().get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", [])]

    def status(self) -> dict:
        return json.loads(self._cli("status", "--json", ok_codes=(0, 3)).stdout)

    def stop_mlflow(self) -> None:
        """Take the tracking server down (PostgreSQL and SeaweedFS keep running)."""
        self._cli("stop-mlflow")

    def start_mlflow(self) -> None:
        """Bring the tracking server back; returns once /health answers."""
        self._cli("start", *(["--auth"] if self.username else []))

    def restart_mlflow(self) -> None:
        self._cli("restart-mlflow")

    def _cli(self, *args: str, ok_codes: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        if self.state_dir is None:
            pytest.skip(f"{self.uri} was not started by simclr_s2.server: cannot {args[0]} it")
        return run_server_cli(self.state_dir, *args, env=self.cli_env, ok_codes=ok_codes)


def run_server_cli(
    state_dir: Path, *args: str, env: dict[str, str] | None = None, ok_codes: tuple[int, ...] = (0,)
) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "simclr_s2.server", "--dir", str(state_dir), *args],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT_S,
    )
    if result.returncode not in ok_codes:
        raise RuntimeError(
            f"python -m simclr_s2.server {' '.join(args)} exited with {result.returncode}:\n{result.stderr}"
        )
    return result


def free_ports() -> tuple[dict[str, str], list[int]]:
    """Port variables for a stack that clashes with nothing, and the ports claimed for it until released
    (tests/ports.py): SeaweedFS needs 5 ports and each + 10000, PostgreSQL and the mlflow server one each."""
    ports, held = port_range(), []
    try:
        for _ in range(200):
            base = random.randrange(ports.start, ports.stop - WEED_GRPC_OFFSET - len(WEED_SERVICES))
            block = [base + i + offset for i in range(len(WEED_SERVICES)) for offset in (0, WEED_GRPC_OFFSET)]
            claimed = list(itertools.takewhile(claim, block))
            if len(claimed) == len(block):
                held += claimed
                break
            release(claimed)
        else:
            raise RuntimeError("no free block of ports for SeaweedFS")
        variables = {"SIMCLR_S3_PORT": base}
        for name in ("SIMCLR_PG_PORT", "SIMCLR_MLFLOW_PORT"):
            variables[name] = claim_any()
            held.append(variables[name])
    except BaseException:
        release(held)
        raise
    return {name: str(port) for name, port in variables.items()}, held


def _stack_cpu_seconds(state: StateDir) -> float:
    """CPU seconds the stack's detached processes (the ones run/ names, PostgreSQL's postmaster) and their
    descendants spent, live or reaped: pytest never waits for them, so its own count leaves them out."""
    stats = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        stats[int(proc.name)] = (int(fields[1]), sum(map(int, fields[11:15])))  # ppid, utime..cstime
    roots = [int(f.read_text().split()[0]) for f in state.run.glob("*.pid")]
    postmaster = state.pgdata / "postmaster.pid"
    roots += [int(postmaster.read_text().split()[0])] if postmaster.exists() else []
    counted, ticks = set(), 0
    while roots:
        pid = roots.pop()
        if pid in stats and pid not in counted:
            counted.add(pid)
            ticks += stats[pid][1]
            roots += [child for child, (parent, _) in stats.items() if parent == pid]
    return ticks / os.sysconf("SC_CLK_TCK")


def _start_stack(auth: bool) -> Iterator[TrackingServer]:
    """A private stack in /tmp (PostgreSQL runs as postgres, so the folder must be traversable)."""
    state_dir = Path(tempfile.mkdtemp(prefix="simclr-s2-stack-"))
    state_dir.chmod(0o755)
    server = TrackingServer(
        uri="",
        s3_endpoint=None,
        bucket=BUCKET,
        artifacts_prefix=ARTIFACTS_PREFIX,
        aws_access_key_id=f"test-{secrets.token_hex(4)}",
        aws_secret_access_key=secrets.token_hex(16),
        username="admin" if auth else None,
        password=secrets.token_urlsafe(18) if auth else None,
        state_dir=state_dir,
    )
    # Nothing of a stack the user may run leaks in: ports and credentials are this stack's own.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIMCLR_", "MLFLOW_", "AWS_"))}
    ports, held = free_ports()
    env.update(
        ports,
        SIMCLR_MLFLOW_WORKERS="1",  # one worker starts fastest
        AWS_ACCESS_KEY_ID=server.aws_access_key_id,
        AWS_SECRET_ACCESS_KEY=server.aws_secret_access_key,
    )
    if auth:
        env.update(MLFLOW_TRACKING_USERNAME=server.username, MLFLOW_TRACKING_PASSWORD=server.password)
    server.cli_env = env
    try:
        run_server_cli(state_dir, "start", *(["--auth"] if auth else []), env=env)
        weed_socket = admin_socket(StateDir(state_dir).load_config())
        assert weed_socket.exists(), f"SeaweedFS's admin socket is not {weed_socket}, where `stop` removes it"
        report = server.status()
        server.uri, server.s3_endpoint = report["tracking_uri"], report["s3_endpoint"]
        yield server
    finally:
        try:
            if os.environ.get(CPU_LOG_ENV):  # the /proc scan only when the CPU probe asks for it
                record_cpu(f"tests/server/conftest.py::{'auth_' if auth else ''}tracking_server "
                           "(detached processes)", _stack_cpu_seconds(StateDir(state_dir)))
        finally:  # the stack stops even when its count fails
            try:
                run_server_cli(state_dir, "stop", env=env)
                if StateDir(state_dir).has_config():
                    left = admin_socket(StateDir(state_dir).load_config())
                    assert not left.exists(), f"the stack's `stop` left {left}"
            finally:
                shutil.rmtree(state_dir, ignore_errors=True)
                release(held)


def _reused_server(uri: str) -> TrackingServer:
    state = StateDir(default_state_dir())
    if state.has_config():
        config, stored = state.load_config(), state.load_secrets()
        if config.tracking_uri == uri.rstrip("/"):
            return TrackingServer(
                uri=config.tracking_uri,
                s3_endpoint=config.s3_endpoint,
                bucket=BUCKET,
                artifacts_prefix=ARTIFACTS_PREFIX,
                aws_access_key_id=stored.s3_access_key,
                aws_secret_access_key=stored.s3_secret_key,
                username=os.environ.get("MLFLOW_TRACKING_USERNAME") if config.auth else None,
                password=os.environ.get("MLFLOW_TRACKING_PASSWORD") if config.auth else None,
                state_dir=state.root,
            )
    return TrackingServer(
        uri=uri,
        s3_endpoint=os.environ.get("MLFLOW_S3_ENDPOINT_URL"),
        bucket=os.environ.get("SIMCLR_TEST_BUCKET", BUCKET),
        artifacts_prefix=os.environ.get("SIMCLR_TEST_ARTIFACTS_PREFIX", ARTIFACTS_PREFIX),
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY"),
        username=os.environ.get("MLFLOW_TRACKING_USERNAME"),
        password=os.environ.get("MLFLOW_TRACKING_PASSWORD"),
    )


# Each stack stops when the tests that use it are done, not at the end of the session: an idle stack burns
# 0.44 CPU-seconds a minute (load 12), and under `make test` its worker goes on with other files for minutes.
@pytest.fixture(scope="package")
def tracking_server() -> Iterator[TrackingServer]:
    """The shared stack without authentication (or the server named by SIMCLR_TEST_TRACKING_URI)."""
    if uri := os.environ.get("SIMCLR_TEST_TRACKING_URI"):
        yield _reused_server(uri)
    else:
        yield from _start_stack(auth=False)


@pytest.fixture(scope="module")
def auth_tracking_server() -> Iterator[TrackingServer]:
    """A second private stack whose tracking server runs MLflow's basic-auth app."""
    yield from _start_stack(auth=True)


def _client_environment(monkeypatch: pytest.MonkeyPatch, server: TrackingServer) -> None:
    """Point MLflow at `server` the way a user would; no S3 variables: artifacts go through the server."""
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "MLFLOW_S3_ENDPOINT_URL",
        "MLFLOW_TRACKING_USERNAME",
        "MLFLOW_TRACKING_PASSWORD",
        "MLFLOW_TRACKING_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in server.client_env().items():
        monkeypatch.setenv(name, value)


@pytest.fixture
def tracking_env(tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch) -> TrackingServer:
    """This test's MLflow clients (and subprocesses it starts) talk to the shared stack."""
    _client_environment(monkeypatch, tracking_server)
    return tracking_server


@pytest.fixture
def auth_tracking_env(
    auth_tracking_server: TrackingServer, monkeypatch: pytest.MonkeyPatch
) -> TrackingServer:
    """Like tracking_env, on the basic-auth stack, with the admin's MLFLOW_TRACKING_USERNAME/PASSWORD set."""
    _client_environment(monkeypatch, auth_tracking_server)
    return auth_tracking_server


@pytest.fixture
def free_stack_ports() -> Iterator[dict[str, str]]:
    """SIMCLR_PG_PORT, SIMCLR_S3_PORT and SIMCLR_MLFLOW_PORT values that nothing listens on, held for the test."""
    ports, held = free_ports()
    yield ports
    release(held)
