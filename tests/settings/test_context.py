"""Where a command's state and data folders default to."""

from __future__ import annotations

from pathlib import Path

from simclr_s2.settings.context import project_folder


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


