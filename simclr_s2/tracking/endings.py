"""Ending a run its own process did not end (a launcher's run, a lost worker's, a lost trial's): FAILED,
with the reason in one tag, unless the run already ended, in which case its own ending tells more; and
clearing what failed runs leave behind."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import suppress
from pathlib import Path

from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from simclr_s2.errors import UserError

ERROR_TAG = "simclr_s2.error"
DRY_RUN_TAG = "dry_run"


def describe(error: BaseException) -> str:
    """The reason written on a failed run: a user error's own line, else the exception's type and text."""
    text = str(error) if isinstance(error, UserError) else f"{type(error).__name__}: {error}"
    return text[:4000]


def fail_if_running(client: MlflowClient, run_id: str, reason: str, tags: Mapping[str, str] | None = None) -> bool:
    """End `run_id` FAILED with `reason` (and `tags`) if it is still RUNNING; True when it was."""
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    for key, value in {**(tags or {}), ERROR_TAG: reason}.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    return True


def mark_dry_run(client: MlflowClient, run_id: str, tags: Mapping[str, str]) -> None:
    """The run `mlflow run` made before a dry run started holds nothing: tagged `dry_run=true` (and `tags`),
    so nobody takes it for a real one; the launcher then ends it FINISHED."""
    for key, value in {**tags, DRY_RUN_TAG: "true"}.items():
        client.set_tag(run_id, key, value)


def remove_empty_checkpoint_folders(client: MlflowClient, folder: Path) -> None:
    """A run that failed before its first checkpoint leaves an empty `folder/<run id>`: removed once that
    run has ended (a running one may be about to write there; a run of another store is left alone)."""
    for child in folder.iterdir() if folder.is_dir() else ():
        if child.is_dir() and not any(child.iterdir()) and _ended(client, child.name):
            with suppress(OSError):  # filled or removed meanwhile: nothing to clear
                child.rmdir()


def _ended(client: MlflowClient, run_id: str) -> bool:
    try:
        return client.get_run(run_id).info.status != "RUNNING"
    except MlflowException:
        return False
