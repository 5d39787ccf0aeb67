"""How long the platform waits for an unreachable tracking server, and how it tells that case apart.

MLflow's HTTP client already retries every request with exponential backoff, so a server restart
mid-run only pauses training while its metrics are retried: none are lost. Its default (7 retries,
factor 2) waits about four minutes per call; the platform bounds it to about two (6 retries:
4 + 8 + ... + 64 s; process.quiet_defaults), unless the user sets MLFLOW_HTTP_REQUEST_MAX_RETRIES /
_BACKOFF_FACTOR.
"""

from __future__ import annotations

import os

import requests
from mlflow.exceptions import MlflowException

from simclr_s2.errors import UserError

DEFAULT_RETRIES = "6"
DEFAULT_BACKOFF = "2"


class TrackingUnreachable(UserError):
    """The tracking server stayed down past the retry budget: nothing more can be logged this time."""


def retry_budget_s() -> int:
    """Seconds one call may spend waiting between retries: urllib3 retries the first time at once, then
    waits factor * 2^(n-1) before retry n, so factor * (2^retries - 2) in all."""
    retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_RETRIES))
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", DEFAULT_BACKOFF))
    return int(factor * (2**retries - 2))


def is_unreachable(error: BaseException) -> bool:
    """True when `error` says the tracking server could not be reached after every retry."""
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(error, MlflowException):
        text = str(error)
        return "Max retries exceeded" in text or "Failed to establish a new connection" in text \
            or "Connection refused" in text
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and is_unreachable(cause)
