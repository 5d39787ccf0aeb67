"""Importing the package shortens how long torch's OpenMP threads spin while they wait, unless the user chose
a wait policy or spin count (simclr_s2/__init__.py): checked in fresh processes, where libgomp reads the
variables when torch loads."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = "import os, sys, simclr_s2; print(os.environ.get('GOMP_SPINCOUNT'), 'torch' in sys.modules)"


@pytest.mark.parametrize(("given", "seen"), [({}, "1000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                             ({"OMP_WAIT_POLICY": "ACTIVE"}, "None")])
def test_waiting_threads_spin_briefly_unless_the_user_chose(given, seen):
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")} | given
    done = subprocess.run([sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [seen, "False"]  # set before torch (and its libgomp) loads
