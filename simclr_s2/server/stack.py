"""The three services as one stack: started in dependency order (PostgreSQL, SeaweedFS, then the mlflow
server that needs both), each health-checked before the next, and stopped in reverse."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

from simclr_s2.server import mlflow_server, postgres, processes, seaweedfs
from simclr_s2.server.config import (
    ARTIFACTS_DESTINATION,
    BUCKET,
    HOST,
    Config,
    StackError,
    StateDir,
    config_from_env,
)
from simclr_s2.server.preflight import check_module, check_port_free


def start(state: StateDir, auth: bool | None) -> Config:
    """Start whatever is not running; `auth` None keeps the stack's basic auth as it was. Every missing
    binary, package or credential and every taken port is reported before anything starts or stops."""
    state.root.mkdir(parents=True, exist_ok=True)
    for folder in (state.logs, state.run):
        folder.mkdir(exist_ok=True)
    saved = state.load_config() if state.has_config() else None
    config = config_from_env(auth, saved, mlflow_server.auth_bootstrapped(state))
    auth = config.auth
    bindir = postgres.find_bindir()
    running = {
        "postgres": postgres.is_running(state, bindir),
        "seaweedfs": processes.running(state, "seaweedfs"),
        "mlflow": processes.running(state, "mlflow"),
    }
    secrets = state.resolve_secrets(s3_running=running["seaweedfs"])
    # processes whose leader died (a killed mlflow server's workers hold its port): ended below, then started anew
    orphaned = [name for name in ("seaweedfs", "mlflow") if not running[name] and processes.group(state, name)]
    if any(running.values()):
        saved = state.load_config()  # a running stack without stack.json is an error, not a fresh start
        _check_same_ports(saved, config)
    restart_for_auth = running["mlflow"] and saved.auth != auth
    if not running["postgres"]:
        bindir = bindir or postgres.install()
    weed = None if running["seaweedfs"] else seaweedfs.find_binary()
    if not running["mlflow"] or restart_for_auth:
        check_module("mlflow", "mlflow")
        if auth:
            check_module("flask_wtf", "'mlflow[auth]'")
            if not mlflow_server.auth_bootstrapped(state):
                mlflow_server.check_admin_credentials()
            elif (user := os.environ.get("MLFLOW_TRACKING_USERNAME")) and user != config.admin_username:
                print(f"basic auth: the admin stays {config.admin_username} (stack.json); "
                      f"MLFLOW_TRACKING_USERNAME={user} is not made one", file=sys.stderr)
    for component, is_running in running.items():
        if not is_running and component not in orphaned:
            for port, who in config.ports(component):
                check_port_free(port, who)
    for component in orphaned:
        print(f"{component}: ending the processes its dead leader left", file=sys.stderr)
        processes.terminate(state, component)
    if restart_for_auth:
        print(f"mlflow server: restarting {'with' if auth else 'without'} basic auth", file=sys.stderr)
        processes.terminate(state, "mlflow")
        running["mlflow"] = False
    state.save(config, secrets)

    steps: list[tuple[str, str, Callable[[], None]]] = [
        (
            "postgres",
            f"PostgreSQL on {HOST}:{config.pg_port}",
            lambda: postgres.start(state, config, secrets, bindir),
        ),
        (
            "seaweedfs",
            f"SeaweedFS S3 on {config.s3_endpoint}, bucket {BUCKET}",
            lambda: seaweedfs.start(state, config, secrets, weed),
        ),
        (
            "mlflow",
            f"mlflow server on {config.tracking_uri}{' (basic auth)' if auth else ''}",
            lambda: mlflow_server.start(state, config, secrets),
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


def stop(state: StateDir) -> None:
    stopped = [
        name
        for name, done in (
            ("mlflow server", processes.terminate(state, "mlflow")),
            ("SeaweedFS", seaweedfs.stop(state)),
            ("PostgreSQL", postgres.stop(state, postgres.find_bindir())),
        )
        if done
    ]
    print(
        f"stopped: {', '.join(stopped)}" if stopped else f"nothing was running in {state.root}",
        file=sys.stderr,
    )


def stop_mlflow(state: StateDir) -> None:
    """Only the tracking server, so clients can be tested against an outage; `start` brings it back."""
    print(
        "mlflow server stopped" if processes.terminate(state, "mlflow") else "mlflow server was not running",
        file=sys.stderr,
    )


def restart_mlflow(state: StateDir) -> None:
    """Only the tracking server (after an MLflow upgrade, say): the data stays where it is. It needs the
    database and the bucket: without them it would retry for two minutes and die with a traceback."""
    config, secrets = state.load_config(), state.stored_secrets()
    down = [name for name, up in (("PostgreSQL", postgres.is_running(state, postgres.find_bindir())),
                                  ("SeaweedFS", processes.running(state, "seaweedfs"))) if not up]
    if down:
        raise StackError(f"{' and '.join(down)} of the stack in {state.root} {'is' if len(down) == 1 else 'are'} "
                         "not running: run `python scripts/server.py start`, which starts whatever is stopped")
    processes.terminate(state, "mlflow")
    for port, who in config.ports("mlflow"):  # a program that took the port while the server was down
        check_port_free(port, who)
    began = time.monotonic()
    mlflow_server.start(state, config, secrets)
    print(
        f"mlflow server on {config.tracking_uri}: restarted in {time.monotonic() - began:.1f} s",
        file=sys.stderr,
    )


def status(state: StateDir) -> dict[str, Any]:
    """Running and healthy state of each part, plus what a client needs to reach the stack."""
    config = state.load_config()
    secrets = state.stored_secrets()
    bindir = postgres.find_bindir()
    pg = postgres.is_running(state, bindir)
    weed, mlflow = (_running(processes.group(state, name)) for name in ("seaweedfs", "mlflow"))
    components = {
        "postgres": {
            "port": config.pg_port,
            "running": pg,
            "healthy": pg and postgres.is_ready(config, bindir),
        },
        "seaweedfs": {
            "port": config.s3_port,
            **weed,
            "healthy": weed["running"] and seaweedfs.is_healthy(config, secrets),
        },
        "mlflow": {
            "port": config.mlflow_port,
            **mlflow,
            "healthy": mlflow["running"] and mlflow_server.is_healthy(config),
        },
    }
    return {
        "dir": str(state.root),
        "tracking_uri": config.tracking_uri,
        "s3_endpoint": config.s3_endpoint,
        "bucket": BUCKET,
        "artifacts_destination": ARTIFACTS_DESTINATION,
        "auth": config.auth,
        "admin_username": config.admin_username,
        "components": components,
    }


def env_lines(config: Config) -> list[str]:
    """Shell lines for clients: only the URI is exported; passwords are named, never printed."""
    lines = [f"export MLFLOW_TRACKING_URI={config.tracking_uri}"]
    if config.auth:
        lines.append(
            "# basic auth: clients send MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD "
            f"(admin user: {config.admin_username})"
        )
    lines.append(
        f"# tune workers: -P storage={postgres.database_url(config, postgres.OPTUNA_DB)} "
        "with PGPASSWORD set (kept out of the URL, which mlflow run logs)"
    )
    lines.append(
        f"# artifacts go through the server to {ARTIFACTS_DESTINATION} on {config.s3_endpoint} "
        "(direct bucket access needs AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)"
    )
    return lines


def _running(found: tuple[int, bool] | None) -> dict[str, bool]:
    """`running`, and `orphaned` when the process died but processes of its group (its workers) live on."""
    return {"running": bool(found and found[1]), "orphaned": bool(found and not found[1])}


def _check_same_ports(saved: Config, wanted: Config) -> None:
    """A running stack keeps its ports: changing one means stopping it first."""
    for field in ("pg_port", "s3_port", "mlflow_port"):
        if getattr(saved, field) != getattr(wanted, field):
            raise StackError(
                f"the stack is running with {field}={getattr(saved, field)}, not "
                f"{getattr(wanted, field)}: run `python scripts/server.py stop` first"
            )
