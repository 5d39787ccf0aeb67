"""Telling an unreachable tracking server apart from other errors, and the bounded retry budget."""

import os
from unittest import mock

import pytest
from mlflow.exceptions import MlflowException

from simclr_s2.tracking.connectivity import is_unreachable, retry_budget_s
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


def test_the_wait_is_bounded_unless_the_user_says_otherwise():
    with mock.patch.dict(os.environ):  # restores the whole environment afterwards
        os.environ.pop("MLFLOW_HTTP_REQUEST_MAX_RETRIES", None)
        os.environ.pop("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", None)
        quiet_defaults()
        assert retry_budget_s() == 2 * (2**6 - 2)
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "3"
        quiet_defaults()
        assert retry_budget_s() == 2 * (2**3 - 2)
