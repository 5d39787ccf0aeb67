"""A full disk at a checkpoint's write or upload: the training stops with one line naming the file and its
file system, the run ends FAILED with that line as its reason, and no half-written file survives; the
empty checkpoint folder a failed run leaves is cleared once the run has ended."""

from __future__ import annotations

import errno

import pytest
from mlflow.tracking import MlflowClient
from safetensors import SafetensorError
from tiny_training import step, train

from simclr_s2 import disk
from simclr_s2.learning import checkpoints
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.tracker import ERROR_TAG, Tracker


def _half_save(tensors: object, filename, metadata: object = None) -> None:
    """safetensors' save_file on a full disk: part of the file written, then its writer's I/O error."""
    with open(filename, "wb") as fh:
        fh.write(b"half a checkpoint")
    raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")


def _full_upload(self, run_id: str, local_path: str, artifact_path: str | None = None) -> None:
    raise OSError(errno.ENOSPC, "No space left on device", local_path, None, f"/artifacts/{run_id}/train.pt")


@pytest.mark.parametrize(("where", "named"), [("write", "train.pt"), ("upload", "/artifacts/")])
def test_a_full_disk_at_a_checkpoint_fails_the_run_with_one_line(ctx, monkeypatch, where, named):
    if where == "write":
        monkeypatch.setattr(checkpoints, "save_file", _half_save)
    else:
        monkeypatch.setattr(MlflowClient, "log_artifact", _full_upload)
    with pytest.raises(disk.DiskFullError) as raised:
        train(ctx, epochs=2)
    line = str(raised.value)
    assert "\n" not in line and named in line and "file system" in line and "is full" in line
    (run,) = Tracker(ctx).unfinished(step(2))
    assert run.info.status == "FAILED" and run.data.tags[ERROR_TAG] == line
    folder = ctx.home / "checkpoints" / run.info.run_id
    assert not list(ctx.home.rglob("*.tmp"))
    # a checkpoint that was written whole stays for a resume; a folder left empty is cleared
    assert sorted(p.name for p in folder.iterdir()) == ([] if where == "write" else ["train.pt"])
    Tracking.of(ctx).remove_empty_checkpoint_folders(ctx.home / "checkpoints")
    assert folder.exists() == (where == "upload")


def test_a_running_runs_empty_checkpoint_folder_stays(ctx):
    running = Tracking.of(ctx).client.create_run(ctx.experiment_id).info.run_id
    (ctx.home / "checkpoints" / running).mkdir(parents=True)
    Tracking.of(ctx).remove_empty_checkpoint_folders(ctx.home / "checkpoints")
    assert (ctx.home / "checkpoints" / running).is_dir()
