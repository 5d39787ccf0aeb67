"""The run `mlflow run` made before the entry point started (MLFLOW_RUN_ID) ends FAILED with the reason
when the command stops before, or without, taking it over. A module of its own so a refused parameter
reaches it through the door without importing the stages, torch or torchvision (about 7 CPU-s)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.endings import describe
from simclr_s2.tracking.names import STAGE_TAG


def fail_launcher_run(stage: str, error: BaseException, env: Mapping[str, str] | None = None) -> None:
    """End the launcher's run FAILED with `error` as its reason, unless the command took it over (then the
    command ended it) or no launcher made one; a store that cannot be reached only logs a warning. The run
    and its store come from MLflow's variables in `env` (the process's by default) alone, not from a
    context: a bad SIMCLR_S2_* value, failing the context, must still end that run with its reason."""
    env = os.environ if env is None else env
    run_id = env.get("MLFLOW_RUN_ID")
    if not run_id:
        return
    try:
        Tracking.from_env(env).fail_if_running(run_id, describe(error), {STAGE_TAG: stage})  # unless taken over
    except Exception:  # noqa: BLE001 - the error being reported matters more than this note
        logging.getLogger(__name__).warning("could not mark run %s failed", run_id)
