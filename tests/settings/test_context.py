"""Where a command's state and data folders default to."""

from __future__ import annotations

from pathlib import Path

import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings.context import Context, project_folder


def test_the_folders_default_to_the_checkout_or_for_an_installed_copy_the_working_folder(tmp_path, monkeypatch):
    """An installed copy (pip install ., the training image) would have put .simclr_s2 and data/ in
    site-packages."""
    installed = tmp_path / "site-packages" / "simclr_s2" / "settings" / "context.py"
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert project_folder(installed) == work
    checkout = tmp_path / "checkout"
    (checkout / "simclr_s2" / "settings").mkdir(parents=True)
    (checkout / "MLproject").write_text("name: simclr-s2\n")
    assert project_folder(checkout / "simclr_s2" / "settings" / "context.py") == checkout


def test_this_checkout_is_the_project_folder() -> None:
    assert (project_folder() / "MLproject").is_file() and project_folder() == Path(__file__).resolve().parents[2]




@pytest.mark.parametrize("text", ["nan", "inf", "1e400", "-1", "0", "soon"])
def test_a_heartbeat_or_checkpoint_interval_is_a_finite_number_above_zero(text: str) -> None:
    """nan made the heartbeat beat without pause (Event.wait(nan) returns at once), inf killed its thread."""
    for name in ("SIMCLR_S2_HEARTBEAT_S", "SIMCLR_S2_CHECKPOINT_INTERVAL_S"):
        with pytest.raises(UserError, match=f"^{name}: expected a finite number > 0, got '{text}'$"):
            Context.from_env({"MLFLOW_TRACKING_URI": "sqlite:///unused.db", name: text})


def test_a_demo_size_or_cap_is_a_whole_number_above_zero() -> None:
    with pytest.raises(UserError, match="^SIMCLR_S2_DEMO_PATCHES: expected a whole number > 0, got '1e3'$"):
        Context.from_env({"MLFLOW_TRACKING_URI": "sqlite:///unused.db", "SIMCLR_S2_DEMO_PATCHES": "1e3"})
