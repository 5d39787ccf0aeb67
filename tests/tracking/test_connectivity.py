"""Telling an unreachable tracking server apart from other errors, and the bounded retry budget."""

import os
import socket
import threading
from unittest import mock

import pytest
import requests
from mlflow.exceptions import MlflowException, RestException
from mlflow.protos.databricks_pb2 import ENDPOINT_NOT_FOUND, PERMISSION_DENIED, UNAUTHENTICATED
from urllib3.exceptions import MaxRetryError, ResponseError

from simclr_s2.tracking.connectivity import failing_status, is_unreachable, refusal, retry_budget_s, server_lost
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.process import quiet_defaults


def test_a_refused_connection_is_unreachable(monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with pytest.raises(MlflowException) as caught:
        Tracking("http://127.0.0.1:9").client.search_experiments()
    assert is_unreachable(caught.value)


def test_other_errors_are_not():
    assert not is_unreachable(MlflowException("RESOURCE_DOES_NOT_EXIST: run abc"))
    assert not is_unreachable(ValueError("bad"))


def test_a_server_answering_an_error_to_every_retry_was_reached():
    """urllib3's exhausted retries on HTTP 500 say "Max retries exceeded" too: the server answered, it is
    failing, not unreachable (MLflow's own wording of the error)."""
    retried = requests.exceptions.RetryError(MaxRetryError(None, "/api", ResponseError("too many 500 error responses")))
    error = MlflowException(f"API request to http://127.0.0.1:5000/api failed with exception {retried}")
    assert "Max retries exceeded" in str(error) and not is_unreachable(error) and failing_status(error) == 500
    assert server_lost(error) == "answered HTTP 500 to every retry (see the server's log)"


def test_a_refusal_of_the_credentials_a_permission_or_the_api_names_the_variables():
    """Basic auth answers 401 (no or wrong credentials) and 403 (a user without the permission) as plain
    text, a proxy may as MLflow's JSON, and a server that is not MLflow's (the stack's S3 port, say) 403 or
    a plain 404; a wrapped refusal is one too. MLflow's own 404 (JSON: no such run) is not one."""
    unauthenticated = MlflowException("failed with error code 401 != 200", error_code=UNAUTHENTICATED)
    assert "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD" in refusal(unauthenticated)
    wrapped = RuntimeError("logging failed")
    wrapped.__cause__ = unauthenticated
    assert refusal(wrapped) == refusal(unauthenticated)
    assert "(HTTP 403)" in refusal(MlflowException("Permission denied", error_code=PERMISSION_DENIED))
    assert "(HTTP 403)" in refusal(RestException({"error_code": "PERMISSION_DENIED", "message": "no"}))
    not_mlflow = MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code "
                                 "404 != 200. Response body: '404 page not found'", error_code=ENDPOINT_NOT_FOUND)
    assert "MLFLOW_TRACKING_URI names another server" in refusal(not_mlflow)
    not_allowed = MlflowException("API request to endpoint /api/2.0/mlflow/runs/create failed with error code "
                                  "405 != 200. Response body: '405 plain'")  # MLflow names it INTERNAL_ERROR
    assert "has no MLflow REST API (HTTP 405)" in refusal(not_allowed)
    assert refusal(RestException({"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Run abc not found"})) is None
    assert refusal(PermissionError("/data: read-only")) is None


def test_a_failed_tls_handshake_says_so_and_names_the_uri(monkeypatch):
    """https:// to a plain-HTTP server (here: an MLflow server's port) is retried like an outage, but the
    line must say what to fix, not only that the server was unreachable."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as listener:  # accepts, then answers the TLS hello with plain HTTP
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        answer = threading.Thread(target=lambda: _answer_plainly(listener), daemon=True)
        answer.start()
        with pytest.raises(MlflowException) as caught:
            Tracking(f"https://127.0.0.1:{listener.getsockname()[1]}").client.search_experiments()
        answer.join(5)
    assert "https:// MLFLOW_TRACKING_URI" in server_lost(caught.value)
    assert server_lost(requests.exceptions.ConnectionError("Connection refused")) == "unreachable"


def _answer_plainly(listener: socket.socket) -> None:
    connection, _ = listener.accept()
    with connection:
        connection.recv(4096)
        connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")


def test_the_wait_is_bounded_unless_the_user_says_otherwise():
    with mock.patch.dict(os.environ):  # restores the whole environment afterwards
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        os.environ.pop("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", None)
        quiet_defaults()
        assert retry_budget_s() == 2 * (2**6 - 2)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "3"
        quiet_defaults()
        assert retry_budget_s() == 2 * (2**3 - 2)
