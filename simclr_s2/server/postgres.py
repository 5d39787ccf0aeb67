"""PostgreSQL, the backend store of runs, metrics and the registry (and of Optuna's studies): the Debian
binaries, installed with apt when missing, run as the postgres user since initdb refuses root."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from simclr_s2.server import processes
from simclr_s2.server.config import HOST, Config, Secrets, StackError, StateDir
from simclr_s2.server.preflight import require

PG_USER = PG_DB = "mlflow"
OPTUNA_DB = "optuna"  # Optuna and MLflow both keep an alembic_version table: one database each
START_TIMEOUT_S = 60


def database_url(config: Config, database: str, scheme: str = "postgresql") -> str:
    """A URL without the password: libpq reads PGPASSWORD, and URLs end up in logs and run params."""
    return f"{scheme}://{PG_USER}@{HOST}:{config.pg_port}/{database}"


def find_bindir() -> Path | None:
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


def install() -> Path:
    """A fresh CI machine may lack PostgreSQL: install the Debian package when we are allowed to."""
    if os.geteuid() == 0 and shutil.which("apt-get") and not os.environ.get("SIMCLR_PG_BIN"):
        print("PostgreSQL not found: installing the Debian package postgresql", file=sys.stderr)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "postgresql"]):
            if subprocess.run(cmd, check=False, env=env, stdout=sys.stderr).returncode != 0:
                raise StackError(
                    f"`{' '.join(cmd)}` failed: install PostgreSQL yourself or set SIMCLR_PG_BIN"
                )
        if found := find_bindir():
            return found
    raise StackError(
        "PostgreSQL binaries (pg_ctl, initdb) not found in SIMCLR_PG_BIN, /usr/lib/postgresql/*/bin "
        "or PATH: install the Debian package postgresql"
    )


def is_running(state: StateDir, bindir: Path | None) -> bool:
    if bindir is None or not state.has_database():
        return False
    status = processes.run(_as_postgres([bindir / "pg_ctl", "status", "-D", state.pgdata]), check=False)
    return status.returncode == 0


def is_ready(config: Config, bindir: Path) -> bool:
    cmd = [bindir / "pg_isready", "-q", "-h", HOST, "-p", str(config.pg_port)]
    return processes.run(cmd, check=False).returncode == 0


def start(state: StateDir, config: Config, secrets: Secrets, bindir: Path) -> None:
    """Create the cluster on first use, start it on loopback TCP only, then make sure both databases exist."""
    if not state.has_database():
        _initdb(state, secrets, bindir)
    log = state.logs / "postgres.log"
    log.touch()
    _chown_postgres(log)
    options = f"-h {HOST} -p {config.pg_port} -k ''"  # TCP on loopback only, no Unix socket
    cmd = [
        bindir / "pg_ctl",
        "start",
        "-D",
        state.pgdata,
        "-l",
        log,
        "-w",
        "-t",
        str(START_TIMEOUT_S),
        "-o",
        options,
    ]
    if processes.run(_as_postgres(cmd), check=False).returncode != 0:
        raise processes.failure(state, "postgres", f"PostgreSQL did not start on {HOST}:{config.pg_port}")
    processes.wait("PostgreSQL", START_TIMEOUT_S, lambda: is_ready(config, bindir))
    _create_databases(config, secrets)


def stop(state: StateDir, bindir: Path | None) -> bool:
    """False when it was not running."""
    if not is_running(state, bindir):
        return False
    processes.run(_as_postgres([bindir / "pg_ctl", "stop", "-D", state.pgdata, "-m", "fast", "-w"]))
    return True


def _initdb(state: StateDir, secrets: Secrets, bindir: Path) -> None:
    state.pgdata.mkdir(mode=0o700, exist_ok=True)
    _chown_postgres(state.pgdata)
    if processes.run(_as_postgres(["test", "-w", state.pgdata]), check=False).returncode != 0:
        raise StackError(
            f"the postgres user cannot write {state.pgdata}: make its parent folders traversable "
            "(chmod o+x) or choose another SIMCLR_SERVER_DIR"
        )
    pwfile = state.run / "initdb.pw"  # the password never appears on a command line
    pwfile.touch(mode=0o600)
    pwfile.write_text(secrets.pg_password + "\n")
    _chown_postgres(pwfile)
    try:
        cmd = [
            bindir / "initdb",
            "-D",
            state.pgdata,
            "-U",
            PG_USER,
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--no-locale",
            "--no-instructions",
        ]
        result = processes.run(_as_postgres(cmd), check=False)
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise StackError(f"initdb failed for {state.pgdata}: {last}")


def _create_databases(config: Config, secrets: Secrets) -> None:
    psycopg2 = require("psycopg2", "psycopg2-binary")
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
