"""`predict` in-process as its entry point runs it, on the synthetic scenes and on the real v2 patch, against
a tiny registered classifier: the maps on the scene's own grid, masked pixels as no data, the offset
applied, the evaluate path's probability, and bad input as one line and a FAILED run with nothing written."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
import rasterio
from rasterio.transform import Affine
from scene_files import CLOUD, ORIGIN, SIDE, scene_bands, write_folder, write_raster, write_safe

from simclr_s2.bigearthnet.bands import STUDY_BANDS
from simclr_s2.errors import UserError
from simclr_s2.faults import FAULT_ENV
from simclr_s2.learning.datasets import BatchLoader, PatchDataset
from simclr_s2.learning.models import IrrigationClassifier
from simclr_s2.learning.train import predict
from simclr_s2.scenes.maps import IRRIGATED, NODATA, PROBABILITY, QUICKLOOK, SUMMARY
from simclr_s2.scenes.product import native_resolution
from simclr_s2.stages.evaluate import EVALUATE
from simclr_s2.stages.predict import PREDICT
from simclr_s2.tracking.registry import ModelRef, load_logged
from simclr_s2.tracking.thresholds import validation_threshold

REBEN = Path(__file__).parents[1] / "bigearthnet" / "fixtures" / "reben-sample"


def run_predict(project, scene: Path, out: Path, expect_drafts: int = 0, **params: object
                ) -> tuple[dict, np.ndarray, np.ndarray, dict]:
    """The run's tags, the probability and binary maps with their profile, and the summary (`expect_drafts`:
    hidden folders in `out` that the run must leave, of other runs)."""
    run = project.client.get_run(project.run_stage(PREDICT, scene=str(scene), out=str(out), **params))
    assert run.info.status == "FINISHED"
    folder = out / run.data.tags["scene_id"]
    assert sorted(p.name for p in folder.iterdir()) == sorted([IRRIGATED, PROBABILITY, QUICKLOOK, SUMMARY])
    assert len([p.name for p in out.iterdir() if p.name.startswith(".")]) == expect_drafts  # none of its own
    logged = {Path(f.path).name for f in project.client.list_artifacts(run.info.run_id, "maps")}
    assert logged == {IRRIGATED, PROBABILITY, QUICKLOOK, SUMMARY}
    with rasterio.open(folder / PROBABILITY) as p, rasterio.open(folder / IRRIGATED) as b:
        assert p.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and b.nodata == NODATA
        assert (p.crs, p.transform, p.shape) == (b.crs, b.transform, b.shape)
        profile = {"crs": p.crs.to_epsg(), "transform": p.transform, "shape": p.shape}
        probability, binary = p.read(1), b.read(1)
    return {**run.data.tags, **profile}, probability, binary, json.loads((folder / SUMMARY).read_text())


def test_a_product_is_mapped_at_10_m_on_its_own_grid_with_clouds_as_no_data(project, classifier, tmp_path):
    bands = scene_bands()
    bands["SCL"][:60, :60] = CLOUD  # 20 m pixels: the 10 m window at row 0, column 0
    stored = {b: a + 1000 if b != "SCL" else a for b, a in bands.items()}  # baseline 05.09: DN + 1000
    tags, p, binary, summary = run_predict(project, write_safe(tmp_path, stored), tmp_path / "maps",
                                           model=classifier, stride=60, threshold=0.5)
    assert summary["scene_identity"] == tags["scene_id"]  # a product's id is its acquisition's, wherever it lies
    assert (tags["crs"], tags["transform"], tags["shape"]) == (32633, Affine(10, 0, *ORIGIN[:1], 0, -10, ORIGIN[1]),
                                                               (SIDE, SIDE))
    assert (tags["model_version"], tags["processing_baseline"], tags["boa_offset"]) == \
        (classifier.removeprefix("models:/"), "05.09", "-1000")
    assert tags["scene_id"].startswith("S2A_MSIL2A_20230601T100559_N0509")
    cloud = np.zeros((SIDE, SIDE), bool)
    cloud[:120, :120] = True
    assert np.isnan(p[cloud]).all() and (binary[cloud] == NODATA).all()
    assert not np.isnan(p[~cloud]).any() and ((p[~cloud] > 0) & (p[~cloud] < 1)).all()
    np.testing.assert_array_equal(binary[~cloud], p[~cloud] >= 0.5)
    assert summary["masked_share"] == 0.0625 and summary["scored_ha"] == (SIDE**2 - 120**2) / 100
    assert summary["irrigated_ha"] == (binary == 1).sum() / 100 and summary["map_resolution_m"] == 10
    assert summary["windows"] == 49 and summary["windows_scored"] == 49 - 4 and summary["note"] == ""

    folder_tags, cells, _, folder_summary = run_predict(project, write_folder(tmp_path / "cogs", bands),
                                                        tmp_path / "maps", model=classifier)
    assert folder_summary["scene_identity"] == str((tmp_path / "cogs").resolve())  # a folder's name is no identity
    assert (folder_tags["transform"], folder_tags["shape"]) == (Affine(1200, 0, ORIGIN[0], 0, -1200, ORIGIN[1]), (4, 4))
    assert folder_tags["boa_offset"] == "0" and folder_tags["threshold_source"].startswith("default 0.5")
    _, cells_of_product, _, _ = run_predict(project, write_safe(tmp_path / "again", stored), tmp_path / "maps",
                                            model=classifier)  # the same product id: its earlier maps replaced
    np.testing.assert_array_equal(cells, cells_of_product)  # the offset brings the product to the archive's DN
    assert np.isnan(cells[0, 0]) and not np.isnan(cells.ravel()[1:]).any()


def test_the_real_patch_gets_the_probability_evaluate_gives_it(project, classifier, tmp_path):
    patch = next((REBEN / "BigEarthNet-S2").glob("*/*"))
    tags, cells, _, summary = run_predict(project, patch, tmp_path, model=classifier, mask="none")
    assert (tags["crs"], tags["transform"], tags["shape"]) == (32633, Affine(1200, 0, 390000, 0, -1200, 5348400),
                                                               (1, 1))
    model, _ = load_logged(project.client, classifier, IrrigationClassifier, "model")
    _, evaluated, _ = predict(model, BatchLoader(PatchDataset(REBEN, [patch.name], [0.0], STUDY_BANDS), 1))
    assert abs(float(cells[0, 0]) - float(evaluated[0])) < 1e-6
    assert summary["windows_scored"] == 1 and summary["masked_share"] == 0


def test_a_fully_clouded_scene_is_a_map_of_no_data_and_says_so(project, classifier, tmp_path):
    bands = scene_bands()
    bands["SCL"][:] = CLOUD
    _, p, binary, summary = run_predict(project, write_folder(tmp_path / "cogs", bands), tmp_path / "maps",
                                        model=classifier, stride=120)
    assert np.isnan(p).all() and (binary == NODATA).all()
    assert summary["windows_scored"] == 0 and summary["masked_share"] == 1 and summary["irrigated_ha"] == 0
    assert "every window holds masked pixels" in summary["note"]


@pytest.mark.parametrize(("width", "height", "cells"), [(96, SIDE, (4, 1)), (SIDE, 96, (1, 4)), (96, 96, (1, 1))])
def test_a_scene_smaller_than_a_window_is_a_map_of_no_data_at_either_stride(project, classifier, tmp_path, width,
                                                                             height, cells):
    """At stride 120 its map had 0 cells along the short side, which GDAL refused."""
    bands = {b: a[:height * 10 // native_resolution(b), :width * 10 // native_resolution(b)]
             for b, a in scene_bands().items()}
    folder = write_folder(tmp_path / "cogs", bands)
    for stride, shape in ((120, cells), (60, (height, width))):
        tags, p, binary, summary = run_predict(project, folder, tmp_path / "maps", model=classifier, stride=stride)
        assert tags["shape"] == shape and np.isnan(p).all() and (binary == NODATA).all()
        assert summary["windows"] == 0 and "smaller than one window" in summary["note"]
        assert summary["scene_ha"] == width * height / 100 and summary["scored_ha"] == 0


def test_a_killed_run_leaves_its_draft_to_the_next_run_which_removes_it(project, classifier, tmp_path):
    """Killed with its draft maps half written (SIGKILL: no clean-up runs, as for SIGTERM's default), a run left
    its draft in `out` for ever; the next run on this host removes the drafts of processes that are gone."""
    folder, out = write_folder(tmp_path / "cogs", scene_bands()), tmp_path / "maps"
    params = {"scene": folder, "out": out, "model": classifier, "stride": 60}
    killed = subprocess.run(project.entry_point("predict", **params), env={**project.process_env(),
                            FAULT_ENV: "map_row@0"}, capture_output=True, text=True, check=False, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    left = [p.name for p in out.iterdir()]
    assert len(left) == 1 and left[0].startswith(".predict-") and left[0].endswith(".draft")
    live = out / f".predict-{os.getpid()}@{socket.gethostname()}-x.draft"  # a draft of a live run
    elsewhere = out / ".predict-999999999@another-host-x.draft"  # of a run on another host sharing `out`
    for draft in (live, elsewhere):
        draft.mkdir()
    run_predict(project, folder, out, model=classifier, stride=120, expect_drafts=2)
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == sorted([live.name, elsewhere.name])


def _no_scl(folder: Path) -> None:
    (folder / "SCL.tif").unlink()


def _b05_elsewhere(folder: Path) -> None:
    write_raster(folder / "B05.tif", scene_bands()["B05"], 20, crs="EPSG:32632")


@pytest.mark.parametrize(("spoil", "message"), [
    (lambda folder: (folder / "B05.tif").unlink(), r"scene: cogs \(GeoTIFF folder\) has no B05; the model reads"),
    (_b05_elsewhere, r"B05 .* is in EPSG:32632, B04 in EPSG:32633: one CRS expected"),
    (_no_scl, r"has no SCL \(mask=none maps without it\)"),
])
def test_a_scene_that_cannot_be_mapped_is_one_line_and_a_failed_run(project, classifier, tmp_path, spoil, message):
    folder = write_folder(tmp_path / "cogs", scene_bands())
    spoil(folder)
    _refused(project, message, tmp_path / "maps", scene=str(folder), model=classifier)


def test_an_l1c_product_is_refused(project, classifier, tmp_path):
    _refused(project, "Level-1C product", tmp_path / "maps", model=classifier,
             scene=str(write_safe(tmp_path, scene_bands(), level="1C")))


def test_a_model_without_band_metadata_is_refused(project, classifier, tmp_path):
    """The classifier's files registered again by hand, without its tags: nothing says which bands it takes."""
    client = project.client
    registered = client.get_model_version(*classifier.removeprefix("models:/").split("/"))
    files = client.get_model_version_download_uri(registered.name, registered.version)
    bare = client.create_model_version(client.create_registered_model("hand-registered").name, files,
                                       registered.run_id)
    _refused(project, "records no band list", tmp_path / "maps", model=f"models:/hand-registered/{bare.version}",
             scene=str(write_folder(tmp_path / "cogs", scene_bands())))


def test_evaluate_refuses_a_model_that_records_no_band_list(project, classifier, tmp_path):
    """evaluate, as predict, reads the bands a classifier's version names: a model without that record (its
    files registered again by hand, or a downloaded model folder) is refused before any data is read, never
    fed the archive's bands in an order guessed from its channel count."""
    client = project.client
    registered = client.get_model_version(*classifier.removeprefix("models:/").split("/"))
    files = client.get_model_version_download_uri(registered.name, registered.version)
    bare = client.create_model_version(client.create_registered_model("hand-registered-eval").name, files,
                                       registered.run_id)
    folder = mlflow.artifacts.download_artifacts(artifact_uri=files, dst_path=str(tmp_path / "model"))
    for uri in (f"models:/hand-registered-eval/{bare.version}", folder):
        with pytest.raises(UserError, match=rf"^model_uri: {uri} records no band list \(a registered version's "
                                            r"band_list or bands tag\); evaluate reads the archive's bands by name"):
            project.run_stage(EVALUATE, model_uri=uri, split=str(tmp_path / "no-split"))
        assert project.latest("evaluate").info.status == "FAILED"


def test_a_runs_uri_is_read_as_the_version_its_run_registered(project, classifier):
    """runs:/<id>/model of a registered classifier carries its version's tags (its bands, scaling and threshold),
    as its models:/ URI does."""
    registered = project.client.get_model_version(*classifier.removeprefix("models:/").split("/"))
    _, by_run = load_logged(project.client, f"runs:/{registered.run_id}/model", IrrigationClassifier, "model")
    _, by_version = load_logged(project.client, classifier, IrrigationClassifier, "model")
    assert by_run == by_version and "band_list" in by_run.tags


def test_an_output_folder_that_cannot_be_written_is_refused(project, classifier, tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match=r"out: cannot write .*/file/maps: Not a directory"):
        project.run_stage(PREDICT, scene=str(tmp_path), out=str(tmp_path / "file" / "maps"), model=classifier)
    assert project.latest("predict").info.status == "FAILED"


def _refused(project, message: str, out: Path, **params: object) -> None:
    with pytest.raises(UserError, match=message) as error:
        project.run_stage(PREDICT, out=str(out), **params)
    assert "\n" not in str(error.value)
    run = project.latest("predict")
    assert run.info.status == "FAILED" and run.data.tags["simclr_s2.error"] == str(error.value)
    assert list(out.iterdir()) == []  # not even a draft


def test_the_threshold_is_the_one_evaluate_chose_on_validation(project):
    ref = ModelRef("models:/simclr-s2-irrigation/99", "simclr-s2-irrigation/99", {}, None)
    assert validation_threshold(project.client, ref)[0] == 0.5
    client = project.client
    chosen = {"threshold_set": "val_natural_100pct.csv", "threshold_overlap": "0"}  # natural, off its ground
    tags = {"stage": "evaluate", "simclr_s2.complete": "true", **chosen}
    run_id = client.create_run(project.context().experiment_id, tags=tags).info.run_id
    client.log_param(run_id, "resolved_model", ref.version)
    client.log_metric(run_id, "val_threshold", 0.37)
    client.set_terminated(run_id)
    assert validation_threshold(client, ref) == (0.37, f"val_threshold of evaluate run {run_id}")
    tagged = ModelRef(ref.uri, ref.version, {"val_threshold": "0.42"}, None)
    assert validation_threshold(client, tagged)[0] == 0.42
