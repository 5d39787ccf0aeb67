"""The demo scene (make_demo_data scene=<folder>): a folder of per-band GeoTIFFs on a real UTM grid that
`predict` maps right away, one patch a window, its cloud left out; written once, the same bytes per seed."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine

from simclr_s2.bigearthnet.bands import BANDS
from simclr_s2.bigearthnet.demo import SCENE_PATCHES, write_demo_scene
from simclr_s2.errors import UserError
from simclr_s2.scenes.maps import PROBABILITY, SUMMARY
from simclr_s2.stages.data import MAKE_DEMO_DATA
from simclr_s2.stages.predict import PREDICT


def test_the_demo_scene_is_mapped_one_patch_a_window_with_its_cloud_left_out(project, classifier, tmp_path):
    scene = tmp_path / "demo-scene"
    project.run_stage(MAKE_DEMO_DATA, scene=str(scene))
    assert sorted(p.stem for p in scene.glob("*.tif")) == sorted([*BANDS, "SCL"])
    assert project.latest("make_demo_data").data.tags["simclr_s2.reused_files"] == "false"
    run = project.client.get_run(project.run_stage(PREDICT, scene=str(scene), out=str(tmp_path / "maps"),
                                                   model=classifier))
    assert run.info.status == "FINISHED" and run.data.tags["scene_id"] == "demo-scene"
    with rasterio.open(tmp_path / "maps" / "demo-scene" / PROBABILITY) as maps:
        assert (maps.crs.to_epsg(), maps.transform, maps.shape) == \
            (32633, Affine(1200, 0, 300000, 0, -1200, 5400000), (SCENE_PATCHES, SCENE_PATCHES))
        probability = maps.read(1)
    assert np.isnan(probability).sum() == 1 and np.isnan(probability[1, 3])  # the clouded patch only
    summary = json.loads((tmp_path / "maps" / "demo-scene" / SUMMARY).read_text())
    assert summary["windows_scored"] == SCENE_PATCHES**2 - 1 and 0 < summary["masked_share"] < 1 / SCENE_PATCHES**2


def test_the_same_seed_writes_the_same_bytes_and_a_second_run_reuses_them(project, tmp_path):
    first, second = write_demo_scene(tmp_path / "a"), write_demo_scene(tmp_path / "b")
    assert all((first / f.name).read_bytes() == f.read_bytes() for f in second.iterdir())
    assert (first / "B02.tif").read_bytes() != (write_demo_scene(tmp_path / "c", seed=1) / "B02.tif").read_bytes()
    for _ in range(2):
        project.run_stage(MAKE_DEMO_DATA, scene=str(tmp_path / "d"))
    assert project.latest("make_demo_data").data.tags["simclr_s2.reused_files"] == "true"


def test_a_folder_holding_something_else_is_refused_in_one_line(project, tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=rf"^scene: {tmp_path} holds something other than a demo"):
        project.run_stage(MAKE_DEMO_DATA, scene=str(tmp_path))
    assert project.latest("make_demo_data").info.status == "FAILED"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
