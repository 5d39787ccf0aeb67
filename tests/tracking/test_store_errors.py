"""A store MLflow refuses is one line at the command's boundary, and nothing else is said about it."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest

from simclr_s2.app import boundary
from simclr_s2.errors import UserError
from simclr_s2.settings.mlflow_store import store_client
from simclr_s2.tracking.door import Tracking


def test_the_tidying_after_a_failure_keeps_quiet_about_a_refused_store(ctx, tmp_path, caplog):
    refused = replace(ctx, tracking_uri=(tmp_path / "filestore").as_uri())  # MLflow's file store: refused
    with pytest.raises(UserError, match="MLFLOW_TRACKING_URI: cannot use"):
        Tracking.of(refused).client  # noqa: B018 - building the client is what fails
    (ctx.home / "checkpoints" / "some-run").mkdir(parents=True)
    with caplog.at_level(logging.WARNING):
        boundary._clear_checkpoint_folders(refused)
    assert caplog.records == []


def test_a_uri_sqlalchemy_cannot_parse_is_one_line_naming_the_variable():
    with pytest.raises(UserError, match=r"^MLFLOW_TRACKING_URI: cannot use 'sqlite:/bad.db': Could not parse"):
        store_client("sqlite:/bad.db")
