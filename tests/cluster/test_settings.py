"""Bad cluster settings are one line naming the setting, at once, before any training."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest
from mlflow.exceptions import ExecutionException

import simclr_s2.cluster
from simclr_s2.cluster.backend import RayConfig
from simclr_s2.errors import UserError
from simclr_s2.settings.spec import build
from simclr_s2.settings.specs import Grid, Tune


@pytest.mark.parametrize(("cls", "values", "message"), [
    (Grid, {"parallel": 2}, "parallel: backend=local runs one cell at a time"),
    (Tune, {"workers": 3}, "workers: backend=local runs one worker at a time"),
    (Grid, {"backend": "ray", "ray_address": "head"}, "ray_address: expected auto, local, host:port"),
    (Grid, {"backend": "ray", "cpus_per_cell": 0}, "cpus_per_cell: expected a finite number > 0"),
])
def test_a_bad_setting_is_refused_by_name(cls, values, message):
    with pytest.raises(UserError, match=message):
        build(cls, values)


@pytest.mark.parametrize("text", ['{"num_cpus": NaN}', '{"num_gpus": Infinity}', '{"num_cpus": -1}'])
def test_a_ray_json_number_that_is_not_finite_and_non_negative_is_refused_by_key(text):
    """JSON's NaN and Infinity parse as floats: refused here, not by Ray after MLflow made the run."""
    key = next(iter(json.loads(text)))
    with pytest.raises(ExecutionException, match=f"ray backend config: {key} must be a finite number >= 0"):
        RayConfig.parse(json.loads(text))


def test_an_address_where_no_cluster_answers_fails_at_once():
    """In a process of its own: this one may already be connected to the tests' cluster."""
    code = ("from simclr_s2.cluster.connection import join\n"
            "try:\n    join('127.0.0.1:1')\nexcept Exception as error:\n    print(error)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("ray_address: nothing answers at 127.0.0.1:1"), done.stderr[-2000:]


@pytest.mark.parametrize(("given", "kept"), [(None, "0"), ("1", "1")])
def test_ray_log_dedup_is_off_before_the_package_imports_ray(monkeypatch, given, kept):
    """Ray reads RAY_DEDUP_LOGS when it is imported: the package's __init__ sets it, before its modules import
    Ray (a user's own value stays)."""
    monkeypatch.delenv("RAY_DEDUP_LOGS", raising=False)
    if given is not None:
        monkeypatch.setenv("RAY_DEDUP_LOGS", given)
    importlib.reload(simclr_s2.cluster)
    assert os.environ["RAY_DEDUP_LOGS"] == kept
