"""The data stages' folders: a file given where a folder is written is one line before any work, naming the
parameter; a demo write killed or failed leaves no partial folder behind for good."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest
from forked import forked_exit_code
from project_runner import Project, project_env

from simclr_s2.errors import UserError
from simclr_s2.faults import FAULT_ENV
from simclr_s2.stages.data import BUILD_INDEX, CREATE_SPLITS, DEMO_MARKER, MAKE_DEMO_DATA, _write_once
from simclr_s2.stages.fetch import FETCH


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    root = tmp_path_factory.mktemp("project")
    return Project(root, project_env(root))


FOLDERS = {  # stage, the folder parameter, the other parameters (whatever they name, nothing is read)
    "fetch dest": (FETCH, "dest", {"parts": "metadata", "index": "none", "url": "file:///nowhere"}),
    "fetch index": (FETCH, "index", {"parts": "metadata", "url": "file:///nowhere"}),
    "build_index out": (BUILD_INDEX, "out", {}),
    "create_splits out": (CREATE_SPLITS, "out", {"index": "/nowhere/index.parquet"}),
    "make_demo_data out": (MAKE_DEMO_DATA, "out", {}),
    "make_demo_data scene": (MAKE_DEMO_DATA, "scene", {}),
}


@pytest.mark.parametrize("case", FOLDERS)
@pytest.mark.parametrize("below", [False, True])
def test_a_file_given_for_a_folder_is_one_line_naming_the_parameter(project, tmp_path, case, below):
    """The file itself, or a folder below it: refused before any download, scan or write."""
    stage, name, params = FOLDERS[case]
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    given = file / "sub" if below else file
    held = rf" \(it would hold {given}\)" if below else ""
    with pytest.raises(UserError, match=rf"^{name}: {file} is a file{held}; expected a folder, or a path not yet "
                                        r"made$"):
        project.run_stage(stage, **{**params, name: given})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def _killed_write(out: Path) -> int | None:
    """The exit status of a demo write in a process forked from this one (its imports done: a fresh
    interpreter importing the data stages cost about 3.5 CPU-s) that SIMCLR_S2_FAULT kills mid-write."""
    def write() -> None:
        os.environ[FAULT_ENV] = "demo_write@0"  # the fault points read this process's environment
        _write_once("out", out, {"seed": 0}, lambda f: (f / "patch").mkdir(parents=True))

    return forked_exit_code(write)


def test_a_demo_write_killed_leaves_its_partial_folder_to_the_next_write_which_removes_it(tmp_path):
    out = tmp_path / "demo"
    assert _killed_write(out) == -signal.SIGKILL
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith("demo.partial-"), left
    live = tmp_path / f"demo.partial-{os.getppid()}@{socket.gethostname()}"  # a write still running here
    elsewhere = tmp_path / "demo.partial-999999999@another-host"  # one on another host sharing the folder
    for partial in (live, elsewhere):
        partial.mkdir()
    assert not _write_once("out", out, {"seed": 0}, lambda f: (f / "patch").mkdir(parents=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["demo", live.name, elsewhere.name])
    assert sorted(p.name for p in out.iterdir()) == [DEMO_MARKER, "patch"]


def test_a_demo_write_that_fails_removes_its_partial_folder(tmp_path: Path):
    def fail(folder: Path) -> None:
        (folder / "patch").mkdir(parents=True)
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        _write_once("out", tmp_path / "demo", {"seed": 0}, fail)
    assert list(tmp_path.iterdir()) == []
