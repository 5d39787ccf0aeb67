"""Bad cluster settings are one line naming the setting, at once, before any training."""

from __future__ import annotations

import subprocess
import sys

import pytest

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


def test_an_address_where_no_cluster_answers_fails_at_once():
    """In a process of its own: this one may already be connected to the tests' cluster."""
    code = ("from simclr_s2.cluster.connection import join\n"
            "try:\n    join('127.0.0.1:1')\nexcept Exception as error:\n    print(error)")
    done = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert done.stdout.startswith("ray_address: nothing answers at 127.0.0.1:1"), done.stderr[-2000:]
