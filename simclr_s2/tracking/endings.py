"""Ending a run its own process did not end (a launcher's run, a lost worker's, a lost trial's): FAILED,
with the reason in one tag, unless the run already ended, in which case its own ending tells more."""

from __future__ import annotations

from collections.abc import Mapping

from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient

ERROR_TAG = "simclr_s2.error"


def fail_if_running(client: MlflowClient, run_id: str, reason: str, tags: Mapping[str, str] | None = None) -> bool:
    """End `run_id` FAILED with `reason` (and `tags`) if it is still RUNNING; True when it was."""
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    for key, value in {**(tags or {}), ERROR_TAG: reason}.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, RunStatus.to_string(RunStatus.FAILED))
    return True
