"""The MLflow settings that exist only for a whole process, in one place.

Everything else reaches MLflow through a client built with explicit URIs (door.Tracking). Two things
cannot:
- MLflow's fluent model API (`mlflow.pytorch.log_model`, which registers the model too) reads the tracking
  and registry URIs only from the process-wide setting. `mlflow.set_tracking_uri` would also write
  MLFLOW_TRACKING_URI into os.environ (so every child process inherits it), so `fluent_uris` sets MLflow's
  own module-level values for the one call and puts them back, under a lock.
- The artifact progress bar and the HTTP retries (MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR,
  MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR) are read from the environment on every download and
  request: mlflow 3.17.2 has no setting for them per client, per call or in `mlflow.config`. So
  `quiet_defaults` is the one function that writes MLFLOW_* variables, and only where the user set none.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from mlflow.tracking._model_registry import utils as registry_settings
from mlflow.tracking._tracking_service import utils as tracking_settings

from simclr_s2.tracking.connectivity import DEFAULT_BACKOFF, DEFAULT_RETRIES

_FLUENT = threading.RLock()  # a fluent call inside another (same URIs) must not wait for itself
DEFAULTS = {
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # one bar per file floods the logs
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": DEFAULT_RETRIES,  # about two minutes per call (connectivity.py)
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": DEFAULT_BACKOFF,
}


@contextmanager
def fluent_uris(tracking_uri: str, registry_uri: str) -> Iterator[None]:
    """MLflow's fluent API sees `tracking_uri` and `registry_uri` for the body, and whatever it saw before
    afterwards; the environment is left alone."""
    with _FLUENT:
        saved = tracking_settings._tracking_uri, registry_settings._registry_uri
        tracking_settings._tracking_uri, registry_settings._registry_uri = tracking_uri, registry_uri
        try:
            yield
        finally:
            tracking_settings._tracking_uri, registry_settings._registry_uri = saved


def quiet_defaults() -> None:
    """No artifact progress bars and bounded HTTP retries in this process, unless the user chose otherwise
    (the settings MLflow reads only from the environment, see the module doc)."""
    for name, value in DEFAULTS.items():
        os.environ.setdefault(name, value)
