"""Commands that tell the truth at their boundary: a full output folder is one line naming it and its file
system; a dry run checks what it would run (an unknown encoder or a split without the scheme is one line
and status 2, no run opened), and the run `mlflow run` made for a dry run says it was one."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from simclr_s2 import disk
from simclr_s2.app.cli import main
from simclr_s2.stages import data
from simclr_s2.stages.data import MAKE_DEMO_DATA
from simclr_s2.stages.grid import GRID
from simclr_s2.tracking.endings import DRY_RUN_TAG


def _exit(project, stage, *argv: str, env: dict[str, str] | None = None) -> int:
    """Run `stage` through its entry point boundary in the project's environment; its exit status."""
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**project.env, **(env or {})}.items():
            mp.setenv(key, value)
        for key in ("MLFLOW_EXPERIMENT_ID", "MLFLOW_EXPERIMENT_NAME", *(() if env else ("MLFLOW_RUN_ID",))):
            mp.delenv(key, raising=False)
        with pytest.raises(SystemExit) as ended:
            main(stage, list(argv))
    return ended.value.code


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


def test_a_full_output_folder_is_one_line_naming_it_and_its_file_system(project, capsys, tmp_path, monkeypatch):
    """The write names no file (a plain write() on a full disk): the line names the fullest folder the
    command writes, here `out`, never SIMCLR_S2_HOME for a disk it is not on."""
    out = tmp_path / "demo"

    def full(folder: Path, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(data, "write_demo_archive", full)
    monkeypatch.setattr(disk, "_free", lambda folder: 0.0 if str(folder).startswith(str(out)) else 1e12)
    before = {r.info.run_id for r in project.runs()}
    assert _exit(project, MAKE_DEMO_DATA, "--out", str(out), "--n-patches", "4") == 2
    line = _error_line(capsys)
    assert f"cannot write {out}: file system {disk.mount_point(out)} is full" in line and "out is the fullest" in line
    (failed,) = [r for r in project.runs() if r.info.run_id not in before]
    assert failed.info.status == "FAILED" and "out is the fullest" in failed.data.tags["simclr_s2.error"]


@pytest.mark.parametrize(("argv", "message"), [
    (("--encoders", "nope"), "encoders: models:/simclr-s2-encoder@nope not found in the model registry"),
    (("--encoders", "/no/such/encoder.pt"), "encoders: /no/such/encoder.pt does not exist"),
    (("--encoders", "runs:/0123abcd/model"), "encoders: runs:/0123abcd/model is no registered model version"),
    (("--encoders", "none", "--split", "{tmp}"), "no splits for scheme 'basic'"),
])
def test_a_dry_run_checks_what_it_would_run(project, capsys, tmp_path, argv, message):
    before = len(project.runs())
    argv = tuple(a.format(tmp=tmp_path) for a in argv)
    assert _exit(project, GRID, "--dry-run", "true", "--schemes", "basic", *argv) == 2
    assert message in _error_line(capsys)
    assert len(project.runs()) == before


def test_the_run_mlflow_run_made_for_a_dry_run_says_so(project, capsys):
    client = project.client
    experiment = client.get_experiment_by_name("simclr-s2") or client.get_experiment(
        client.create_experiment("simclr-s2"))
    launcher = client.create_run(experiment.experiment_id).info.run_id
    assert _exit(project, GRID, "--dry-run", "true", "--encoders", "none", "--schemes", "basic", "--fractions", "10",
                 env={"MLFLOW_RUN_ID": launcher}) == 0
    assert capsys.readouterr().out.split()[0] == "run"
    tags = client.get_run(launcher).data.tags
    assert tags[DRY_RUN_TAG] == "true" and tags["stage"] == GRID.name
