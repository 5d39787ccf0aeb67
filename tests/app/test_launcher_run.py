"""The run `mlflow run` made before the command started ends FAILED with the reason, even when building the
command's context is what failed."""

from __future__ import annotations

import pytest

from simclr_s2.app.launcher_run import fail_launcher_run
from simclr_s2.errors import UserError
from simclr_s2.settings.context import Context
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.endings import ERROR_TAG


def test_a_bad_setting_still_ends_the_launcher_run_with_its_reason(tmp_path):
    door = Tracking(f"sqlite:///{tmp_path}/mlflow.db")
    launcher = door.open(door.client.create_experiment("launched"), "launcher", {})
    env = {"MLFLOW_TRACKING_URI": door.tracking_uri, "MLFLOW_RUN_ID": launcher, "SIMCLR_S2_HEARTBEAT_S": "0"}
    with pytest.raises(UserError, match="SIMCLR_S2_HEARTBEAT_S") as refused:
        Context.from_env(env)
    fail_launcher_run("finetune", refused.value, env)
    run = door.get_run(launcher)
    assert (run.info.status, run.data.tags[ERROR_TAG]) == ("FAILED", str(refused.value))
