"""Where predict's maps end up: a published folder others can read, and a run that fails while placing them
with no maps logged."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from scene_files import scene_bands, write_folder

from simclr_s2.errors import UserError
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.learning.serving import save_rebuildable
from simclr_s2.scenes.maps import SUMMARY
from simclr_s2.scenes.output import check_target
from simclr_s2.stages import predict
from simclr_s2.stages.predict import PREDICT


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def test_the_published_maps_follow_the_umask(project, classifier, tmp_path):
    """The scene folder kept mkdtemp's 0700 through the rename: nobody else could read the maps."""
    out = tmp_path / "maps"
    with umask(0o027):
        project.run_stage(PREDICT, scene=str(write_folder(tmp_path / "cogs", scene_bands())), out=str(out),
                          model=classifier)
    assert (out / "cogs").stat().st_mode & 0o777 == 0o750
    assert (out / "cogs" / SUMMARY).stat().st_mode & 0o777 == 0o640


def test_a_run_that_cannot_place_its_maps_has_logged_none(project, classifier, tmp_path, monkeypatch):
    """The maps were logged before they were moved into place: a run failing there (an id that named a
    subfolder, before ids were checked) ended FAILED holding complete, finished-looking maps."""
    def refuse(draft: Path, target: Path, identity: str) -> Path:
        raise UserError(f"out: {target} appeared meanwhile")

    monkeypatch.setattr(predict, "publish", refuse)
    with pytest.raises(UserError, match="appeared meanwhile"):
        project.run_stage(PREDICT, scene=str(write_folder(tmp_path / "cogs", scene_bands())),
                          out=str(tmp_path / "maps"), model=classifier)
    run = project.latest("predict")
    assert run.info.status == "FAILED" and project.client.list_artifacts(run.info.run_id, predict.ARTIFACTS) == []
    assert list((tmp_path / "maps").iterdir()) == []  # the draft removed


def test_the_registered_weights_follow_the_umask(tmp_path):
    """safetensors' save_file wrote them 0600: a registered version's weights nobody else could read."""
    with umask(0o022):
        files = save_rebuildable(IrrigationClassifier.from_scratch("resnet18", 2), tmp_path)
    assert {f.name: f.stat().st_mode & 0o777 for f in files} == {"architecture.json": 0o644,
                                                                "weights.safetensors": 0o644}


def test_the_maps_of_another_scene_of_the_same_name_are_not_replaced(tmp_path):
    """Two folders of per-band GeoTIFFs named alike (T33UUP/2023-06-01/bands, T33UUP/2023-07-01/bands) are two
    scenes of one id: the second predict into the same `out` replaced the first one's maps without a word."""
    target = tmp_path / "maps" / "bands"
    target.mkdir(parents=True)
    (target / SUMMARY).write_text(json.dumps({"entry_point": "predict", "scene_identity": "/data/2023-06-01/bands"}))
    check_target(target, "/data/2023-06-01/bands")  # the same scene again: replaced
    with pytest.raises(UserError, match=r"^out: .*/maps/bands holds the maps of another scene of that name "
                                        r"\(/data/2023-06-01/bands\); name another out") as error:
        check_target(target, "/data/2023-07-01/bands")
    assert "\n" not in str(error.value)
    (target / SUMMARY).write_text(json.dumps({"entry_point": "predict"}))  # written before identities
    check_target(target, "/data/2023-07-01/bands")
