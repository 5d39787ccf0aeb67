"""A failed write on a full or read-only file system, however it arrives, is one line naming the file and
its file system; anything else passes untouched; what a failed write left half done is removed."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from simclr_s2 import disk
from simclr_s2.disk import DiskFullError
from simclr_s2.settings.context import Context
from simclr_s2.stages.base import written_folders

ZIP_WRITER = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
              "file write failed")


@pytest.mark.parametrize(("error", "named", "says"), [
    (OSError(errno.ENOSPC, "No space left on device"), "given", "is full"),
    (OSError(errno.EDQUOT, "Disk quota exceeded", "/q/x"), "/q/x", "disk quota exceeded"),
    (OSError(errno.EROFS, "Read-only file system", "/ro/x"), "/ro/x", "is read-only"),
    (OSError(errno.ENOSPC, "No space left on device", "/src/a", None, "/dst/a"), "/dst/a", "is full"),  # a copy
    (OSError("/s/pixels.npy: short write of rows 0..3 (disk full?)"), "given", "is full"),
    (RuntimeError(ZIP_WRITER), "given", "writing failed"),
    (MlflowException("failed to download: [Errno 28] No space left on device"), "given", "is full"),
    (MlflowException("(sqlite3.OperationalError) database or disk is full\n[SQL: INSERT INTO metrics ...]"),
     "given", "is full"),  # SQLITE_FULL, from a SQLite tracking store
])
def test_every_form_of_a_full_disk_is_one_line_naming_the_file_and_its_file_system(tmp_path, error, named, says):
    given = tmp_path / "out" / "file"
    full = disk.failure(error, given)
    target = given if named == "given" else Path(named)
    assert isinstance(full, DiskFullError) and full.path == str(target)
    message = str(full)
    assert "\n" not in message and str(target) in message and says in message
    assert f"file system {disk.mount_point(target)} " in message


@pytest.mark.parametrize("error", [OSError(errno.ENOENT, "No such file", "/x"), RuntimeError("shape mismatch"),
                                   ValueError("bad")])
def test_other_errors_are_no_disk_failure(error):
    assert disk.failure(error, "/x") is None


def test_a_failed_write_removes_its_leftovers_and_names_the_path(tmp_path):
    half, folder = tmp_path / "x.tmp", tmp_path / "partial"
    half.write_bytes(b"half")
    (folder / "sub").mkdir(parents=True)
    with pytest.raises(DiskFullError, match=str(tmp_path / "x")), disk.writing(tmp_path / "x", half, folder):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(KeyError), disk.writing(tmp_path / "x", half):  # not a disk failure: as it was
        raise KeyError("k")


def test_an_error_naming_no_file_names_the_fullest_folder_written(tmp_path, monkeypatch):
    roomy, full = tmp_path / "roomy", tmp_path / "full"
    monkeypatch.setattr(disk, "_free", lambda folder: 0.0 if folder == full else 1e12)
    found = disk.unnamed(OSError(errno.ENOSPC, "No space left on device"), {"home": roomy, "out": full})
    assert found is not None and found.path == str(full) and "out is the fullest" in str(found)
    named = disk.unnamed(OSError(errno.ENOSPC, "No space left on device", "/a/b"), {"out": full})
    assert named is not None and named.path == "/a/b"
    assert disk.unnamed(KeyError("k"), {"out": full}) is None


def test_a_costly_place_is_looked_up_only_for_a_disk_failure_that_names_no_file():
    looked: list[bool] = []

    def where() -> Path:
        looked.append(True)
        return Path("/artifacts")

    assert disk.failure(KeyError("k"), where) is None
    assert disk.failure(OSError(errno.ENOSPC, "No space left on device", "/x"), where).path == "/x" and not looked
    assert disk.failure(OSError(errno.ENOSPC, "No space left on device"), where).path == "/artifacts" and looked


def test_a_sqlite_store_is_among_the_folders_a_full_disk_naming_no_file_is_looked_for(tmp_path):
    """SQLite's "database or disk is full" names no file: the store's folder is a candidate, after the ones a
    person named (the first is named on a tie)."""
    ctx = Context.from_env({"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/store/mlflow.db",
                            "SIMCLR_S2_HOME": str(tmp_path / "home"), "SIMCLR_S2_DATA": str(tmp_path / "data")})
    folders = written_folders(None, ctx)
    assert list(folders) == ["SIMCLR_S2_DATA", "SIMCLR_S2_HOME", "the SQLite tracking store's folder",
                             "the temporary folder"]
    assert folders["the SQLite tracking store's folder"] == (tmp_path / "store").resolve()
    server = Context.from_env({"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"})
    assert "the SQLite tracking store's folder" not in written_folders(None, server)
