"""`mlflow server` on top of PostgreSQL and the bucket, optionally with MLflow's basic-auth app. It alone
gets the database password and the S3 keys, through its environment, so no command line or log shows them."""

from __future__ import annotations

import configparser
import os
import sys
from pathlib import Path

from simclr_s2.server import postgres, processes
from simclr_s2.server.config import ARTIFACTS_DESTINATION, HOST, Config, Secrets, StackError, StateDir

START_TIMEOUT_S = 120
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


def server_args(backend_store_uri: str, host: str, port: int, auth: bool) -> list[str]:
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


def command(config: Config) -> list[str]:
    """Run with this Python, so the server is the MLflow version the project pins."""
    return [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        *server_args(
            backend_store_uri=postgres.database_url(config, postgres.PG_DB, scheme="postgresql+psycopg2"),
            host=HOST,
            port=config.mlflow_port,
            auth=config.auth,
        ),
        "--workers",
        str(config.workers),
    ]


def start(state: StateDir, config: Config, secrets: Secrets) -> None:
    """Start the server and wait for /health."""
    proc = processes.spawn(state, "mlflow", command(config), server_env(state, config, secrets))
    try:
        processes.wait("mlflow server", START_TIMEOUT_S, lambda: is_healthy(config), proc)
    except StackError as error:
        processes.terminate(state, "mlflow")
        raise processes.failure(state, "mlflow", str(error)) from None


def server_env(state: StateDir, config: Config, secrets: Secrets) -> dict[str, str]:
    """The server's environment: the clients' own MLFLOW_TRACKING_* variables stay out, and the admin's
    password goes in only while the basic-auth users do not exist yet (it creates the admin)."""
    env = {**SERVER_ENV, **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}}
    env.update(
        PGPASSWORD=secrets.pg_password,  # libpq reads it: no password in the command line or logs
        MLFLOW_S3_ENDPOINT_URL=config.s3_endpoint,
        AWS_ACCESS_KEY_ID=secrets.s3_access_key,
        AWS_SECRET_ACCESS_KEY=secrets.s3_secret_key,
    )
    if config.auth:
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(_write_auth_config(state, config)),
            MLFLOW_AUTH_ADMIN_USERNAME=config.admin_username or "",
            MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.flask_secret_key,
        )
        if os.environ.get("MLFLOW_TRACKING_PASSWORD") and not auth_bootstrapped(state):
            env["MLFLOW_AUTH_ADMIN_PASSWORD"] = os.environ["MLFLOW_TRACKING_PASSWORD"]
    return env


def is_healthy(config: Config) -> bool:
    return processes.http_ok(f"{config.tracking_uri}/health")


def auth_bootstrapped(state: StateDir) -> bool:
    """Whether the basic-auth users exist already, so the admin's credentials are no longer needed."""
    return (state.auth_dir / "basic_auth.db").exists()


def check_admin_credentials() -> None:
    """The first authenticated start creates the admin from the client variables: they must be valid."""
    user = os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD", "")
    if not user or len(password) < MIN_PASSWORD_LENGTH:
        raise StackError(
            "--auth needs MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
            f"({MIN_PASSWORD_LENGTH} characters or more) for the admin user"
        )


def _write_auth_config(state: StateDir, config: Config) -> Path:
    state.auth_dir.mkdir(exist_ok=True)
    parser = configparser.ConfigParser()
    parser["mlflow"] = {
        **AUTH_SETTINGS,
        "database_uri": f"sqlite:///{state.auth_dir / 'basic_auth.db'}",
        "admin_username": config.admin_username or "",
    }
    path = state.auth_dir / "basic_auth.ini"
    with open(path, "w") as handle:
        parser.write(handle)
    return path
