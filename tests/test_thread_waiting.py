"""Importing the package makes torch's OpenMP threads wait passively unless the user chose otherwise
(simclr_s2/__init__.py): checked in fresh processes, where the variable is read when torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "import os, sys, simclr_s2; print(os.environ['OMP_WAIT_POLICY'], 'torch' in sys.modules)"


@pytest.mark.parametrize(("given", "seen"), [(None, "PASSIVE"), ("ACTIVE", "ACTIVE")])
def test_waiting_threads_sleep_unless_the_user_set_a_policy(given, seen):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given:
        env["OMP_WAIT_POLICY"] = given
    done = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [seen, "False"]  # set before torch (and its libgomp) loads
