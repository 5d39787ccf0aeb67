"""The run `mlflow run` made before the entry point started (MLFLOW_RUN_ID) ends FAILED with the reason
when the command stops before, or without, taking it over. A module of its own so a refused parameter
reaches it through the door without importing the stages, torch or torchvision (about 7 CPU-s)."""

from __future__ import annotations

import logging
import os

from simclr_s2.settings.context import Context
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.endings import describe
from simclr_s2.tracking.names import STAGE_TAG


def fail_launcher_run(stage: str, error: BaseException) -> None:
    """End the launcher's run FAILED with `error` as its reason, unless the command took it over (then the
    command ended it) or no launcher made one; a store that cannot be reached only logs a warning."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        ctx = Context.from_env()
        Tracking.of(ctx).fail_if_running(ctx.launcher_run_id, describe(error), {STAGE_TAG: stage})  # unless taken over
    except Exception:  # noqa: BLE001 - the error being reported matters more than this note
        logging.getLogger(__name__).warning("could not mark run %s failed", run_id)
