"""The tracking store a command uses, as the settings floor needs it: a client of exactly the URI it was
given, and the experiment the command's runs go to. Everything else reaches MLflow through the door of
simclr_s2.tracking (which builds its client here, so a bad URI is the same one line everywhere); this
and the experiment plugin are the settings' only MLflow code, since the settings sit below the tracking
floor. Importing MLflow here, before experiment.py, lets MLflow load that plugin while it starts up.

A process makes one client per store: its first opening of a SQLite store imports MLflow's SQLAlchemy
stores and checks the schema (about 2 CPU-s, most of `evaluate`'s look-up of its split, issue 23); MLflow
caches the store itself, so a second client is cheap, but one is all a command needs."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import ArgumentError

from simclr_s2.errors import UserError

DEFAULT_EXPERIMENT = "simclr-s2"


def sqlite_folder(tracking_uri: str) -> Path | None:
    """The folder of a SQLite store's file; None for a server or another store."""
    if not tracking_uri.startswith("sqlite:///"):
        return None
    return Path(tracking_uri.removeprefix("sqlite:///")).resolve().parent


def artifact_location(tracking_uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: beside a SQLite store's file (MLflow would use ./mlruns
    of whatever folder the command runs in, so a store elsewhere would scatter its artifacts); a server
    or other store decides itself (None)."""
    folder = sqlite_folder(tracking_uri)
    return None if folder is None else (folder / "mlruns").as_uri()


def default_tracking_uri() -> str:
    """The store MLflow itself would use when MLFLOW_TRACKING_URI is not set."""
    return mlflow.get_tracking_uri()


def store_uris(env: Mapping[str, str]) -> tuple[str, str | None]:
    """The tracking store and the registry (None: the tracking store's) that MLflow's variables in `env`
    name, MLflow's default store where none is named."""
    return env.get("MLFLOW_TRACKING_URI") or default_tracking_uri(), env.get("MLFLOW_REGISTRY_URI") or None


class StoreClient(MlflowClient):
    """A client that says which registry it was built with (MlflowClient keeps that URI private); the
    fluent calls that read no client (tracking.process) are pointed at both of its URIs."""

    def __init__(self, tracking_uri: str, registry_uri: str) -> None:
        super().__init__(tracking_uri=tracking_uri, registry_uri=registry_uri)
        self.registry_uri = registry_uri


def store_client(tracking_uri: str, registry_uri: str | None = None) -> StoreClient:
    """The client of exactly `tracking_uri` (and `registry_uri`, else the same store), one per process, or
    one line naming the variable when MLflow cannot use it. The one place a client is made (the door's too)."""
    return _client(tracking_uri, registry_uri or tracking_uri)


@cache
def _client(tracking_uri: str, registry_uri: str) -> StoreClient:
    try:
        return StoreClient(tracking_uri, registry_uri)
    except (MlflowException, ArgumentError, ImportError) as error:  # ImportError: a database driver not installed
        text = error.message if isinstance(error, MlflowException) else str(error)
        raise UserError(f"MLFLOW_TRACKING_URI: cannot use {tracking_uri!r}: {text.splitlines()[0]}") from None


def experiment_for(tracking_uri: str, name: str, given_id: str | None) -> str:
    """The experiment a command's runs go to: `given_id` (MLFLOW_EXPERIMENT_ID) when the store has it,
    active, else experiment `name` (MLFLOW_EXPERIMENT_NAME), created when missing."""
    client = store_client(tracking_uri)
    if given_id:
        return _given_experiment(client, given_id)
    found = client.get_experiment_by_name(name)
    if found is not None and found.lifecycle_stage == "deleted":
        raise UserError(f"MLFLOW_EXPERIMENT_NAME: experiment {name!r} is deleted; "
                        f"restore it (mlflow experiments restore) or choose another name")
    return create_experiment(client, name)


def _given_experiment(client: MlflowClient, experiment_id: str) -> str:
    """`experiment_id` when the client's store has it, active; one line naming the variable otherwise."""
    try:
        found = client.get_experiment(experiment_id)
    except MlflowException as error:
        if error.error_code not in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise
        found = None
    if found is None or found.lifecycle_stage == "deleted":
        state = "is deleted" if found else "does not exist"
        raise UserError(f"MLFLOW_EXPERIMENT_ID: experiment {experiment_id} {state} in {client.tracking_uri}; "
                        "unset it or name an existing experiment (MLFLOW_EXPERIMENT_NAME)")
    return experiment_id


def create_experiment(client: MlflowClient, name: str) -> str:
    """Get or create experiment `name` (a client of the store it belongs to); its id."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location(client.tracking_uri))
    except MlflowException:  # created by another process a moment ago
        return client.get_experiment_by_name(name).experiment_id
