"""How long the platform waits for an unreachable tracking server, and how it tells that case apart from
a server that answered but refused the request (credentials, a permission, no MLflow API at that URI).

MLflow's HTTP client already retries every request with exponential backoff, so a server restart
mid-run only pauses training while its metrics are retried: none are lost. Its default (7 retries,
factor 2) waits about four minutes per call; the platform bounds it to about two (6 retries:
4 + 8 + ... + 64 s; process.quiet_defaults), unless the user sets MLFLOW_HTTP_REQUEST_MAX_RETRIES /
_BACKOFF_FACTOR.
"""

from __future__ import annotations

import os
import re

import requests
from mlflow.exceptions import MlflowException

from simclr_s2.errors import UserError

DEFAULT_RETRIES = "6"
DEFAULT_BACKOFF = "2"
_FAILING = re.compile(r"too many (\d{3}) error responses")
# MLflow's words for an answer whose body is not its JSON error (a server's own errors are that JSON)
# MLflow's words for an answer that was not its JSON; the status is read from them, as MLflow calls a status it
# has no name for (405, 501) INTERNAL_ERROR, i.e. 500
_PLAIN_ANSWER = re.compile(r"API request to endpoint \S+ failed with error code (\d{3})")


class TrackingUnreachable(UserError):
    """The tracking server stayed down (or answered only errors) past the retry budget: nothing more can be
    logged this time."""


def retry_budget_s() -> int:
    """Seconds one call may spend waiting between retries: urllib3 retries the first time at once, then
    waits factor * 2^(n-1) before retry n, so factor * (2^retries - 2) in all."""
    retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", DEFAULT_RETRIES))
    factor = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", DEFAULT_BACKOFF))
    return int(factor * (2**retries - 2))


def is_unreachable(error: BaseException) -> bool:
    """True when `error` says the tracking server could not be reached after every retry: no connection, or
    no answer in time. A server that answered every retry with an error was reached (`failing_status`)."""
    if failing_status(error) is not None:
        return False
    if isinstance(error, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    if isinstance(error, MlflowException):
        text = str(error)
        return "Max retries exceeded" in text or "Failed to establish a new connection" in text \
            or "Connection refused" in text
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and is_unreachable(cause)


def failing_status(error: BaseException) -> int | None:
    """The HTTP status a tracking server answered every retry with (urllib3's "too many 500 error
    responses", which also says "Max retries exceeded"), or None."""
    found = _FAILING.search(str(error))
    if found is not None:
        return int(found.group(1))
    cause = error.__cause__ or error.__context__
    return None if cause is None or cause is error else failing_status(cause)


def refusal(error: BaseException) -> str | None:
    """What a server that was reached but refused MLflow's request answered, in words with the variable to
    fix (None: no such refusal): the credentials (HTTP 401), a permission (403), or no MLflow API at all (a
    404, 405 or 501 that is not MLflow's JSON: MLFLOW_TRACKING_URI names another server). MLflow does not retry
    these, and waiting or resuming would not help."""
    status = error.get_http_status_code() if isinstance(error, MlflowException) else None
    if status == 401:
        return "refused the credentials (HTTP 401): set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD " \
               "to a user of that server"
    if status == 403:
        return "refused the request (HTTP 403): MLFLOW_TRACKING_USERNAME's user lacks a permission this command " \
               "needs (ask the server's admin), or MLFLOW_TRACKING_URI names a server other than MLflow's"
    if (plain := _PLAIN_ANSWER.match(str(error))) and (status := int(plain.group(1))) in (404, 405, 501):
        return f"has no MLflow REST API (HTTP {status}): MLFLOW_TRACKING_URI names another server (its port?), " \
               "or an MLflow server too old for this client"
    cause = error.__cause__ or error.__context__
    return None if cause is None or cause is error else refusal(cause)


def server_lost(error: BaseException) -> str | None:
    """What `error` says went wrong with the tracking server after every retry, in words (None: nothing)."""
    if (status := failing_status(error)) is not None:
        return f"answered HTTP {status} to every retry (see the server's log)"
    if not is_unreachable(error):
        return None
    if _tls_failed(error):  # a server speaking plain HTTP, or a certificate not trusted here: no outage
        return "unreachable over TLS: an https:// MLFLOW_TRACKING_URI needs a server that speaks TLS (http:// " \
               "otherwise) with a certificate this machine trusts (MLFLOW_TRACKING_SERVER_CERT_PATH)"
    return "unreachable"


def _tls_failed(error: BaseException) -> bool:
    """Whether the connection failed in its TLS handshake (requests' SSLError, or MLflow's words for it)."""
    if isinstance(error, requests.exceptions.SSLError) or "Caused by SSLError" in str(error):
        return True
    cause = error.__cause__ or error.__context__
    return cause is not None and cause is not error and _tls_failed(cause)
