"""What a stage refuses once it reads what it was given, in one line naming what to change: a classifier
scored on another scheme's labels (on its own ground: test_training_ground.py), a demo folder holding another
demo, a class list for a split folder, a registered model or a folder named for a data file."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pytest

from simclr_s2.bigearthnet.index import load_index
from simclr_s2.errors import UserError
from simclr_s2.settings.spec import build
from simclr_s2.settings.specs import Compare
from simclr_s2.stages.compare import COMPARE
from simclr_s2.stages.data import DEMO_MARKER, _write_once
from simclr_s2.stages.evaluate import same_scheme
from simclr_s2.study.splits import load_manifest, scheme_name
from simclr_s2.tracking.artifacts import Fetcher


def test_a_classifier_is_never_scored_on_another_schemes_labels():
    tags = {"scheme": "basic", "fraction": "100"}
    with pytest.raises(UserError, match=r"^scheme: the model models:/m/1 was trained on scheme basic, not "
                                        r"expanded; scheme=basic scores it on its own labels$"):
        same_scheme(tags, "expanded", "models:/m/1")
    same_scheme(tags, "basic", "models:/m/1")
    same_scheme({}, "expanded", "runs:/r/model")  # a model that never said: nothing to compare


def test_a_demo_folder_holding_another_size_names_the_variable_that_chose_it(tmp_path: Path):
    """The demo chain's folder (out=auto) is chosen by SIMCLR_S2_DATA and sized by SIMCLR_S2_DEMO_PATCHES,
    not by a parameter the command has."""
    (tmp_path / DEMO_MARKER).write_text(json.dumps({"n_patches": 200, "seed": 0}))
    with pytest.raises(UserError, match=rf"^SIMCLR_S2_DATA: {tmp_path} holds a demo of \{{'n_patches': 200, "
                                        r"'seed': 0\}, not a demo of \{'n_patches': 150, 'seed': 0\}; the demo "
                                        r"chain's size is SIMCLR_S2_DEMO_PATCHES: set it back"):
        _write_once("SIMCLR_S2_DATA", tmp_path, {"n_patches": 150, "seed": 0}, lambda f: pytest.fail("written"))


def test_a_damaged_demo_marker_is_no_demo_and_says_so_in_one_line(tmp_path: Path):
    (tmp_path / DEMO_MARKER).write_text('{"n_patches": 15')  # a marker cut short
    with pytest.raises(UserError, match=rf"^SIMCLR_S2_DATA: {tmp_path} holds something other than a demo"):
        _write_once("SIMCLR_S2_DATA", tmp_path, {"n_patches": 150, "seed": 0}, lambda f: pytest.fail("written"))


def test_a_split_folder_missing_its_scheme_names_the_parameter(tmp_path: Path):
    with pytest.raises(UserError, match=rf"^split: no splits for scheme 'basic' in {tmp_path}: found schemes \[\]"):
        load_manifest(tmp_path, "basic")


def test_a_class_list_is_told_the_folder_create_splits_filed_it_under(tmp_path: Path):
    folder = scheme_name("Rice fields;Vineyards")[0]
    assert folder.startswith("custom_")
    with pytest.raises(UserError, match=rf"^scheme: create_splits files the splits of 'Rice fields;Vineyards' "
                                        rf"under {folder}; give scheme={folder}$"):
        load_manifest(tmp_path, "Rice fields;Vineyards")


def test_a_registered_model_named_for_data_is_refused_before_its_download(tmp_path: Path, monkeypatch):
    """create_splits index=models:/simclr-s2-encoder@ben downloaded the encoder whole, then said the index
    file was not found in the download folder."""
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", lambda **_: pytest.fail("downloaded"))
    with pytest.raises(UserError, match=r"^index: models:/simclr-s2-encoder@ben is a registered model; expected a "
                                        r"path or an artifact URI such as runs:/<run id>/<artifact path>$"):
        Fetcher(tmp_path, "sqlite:///unused.db").path("models:/simclr-s2-encoder@ben", "index")


def test_a_run_uri_without_an_artifact_path_is_one_line(tmp_path: Path, monkeypatch):
    """runs:/<id> downloads the run's artifacts, none of them named <id>: the path returned did not exist."""
    def download(artifact_uri: str, dst_path: str, tracking_uri: str) -> None:
        (Path(dst_path) / "splits").mkdir(parents=True)

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", download)
    fetch = Fetcher(tmp_path, "sqlite:///unused.db")
    with pytest.raises(UserError, match=r"^split: runs:/0123abcd names no artifact; expected runs:/<run id>/"):
        fetch.path("runs:/0123abcd", "split")
    assert fetch.path("runs:/0123abcd/splits", "split").is_dir()


def test_the_folder_build_index_wrote_is_told_to_name_its_file(tmp_path: Path):
    with pytest.raises(UserError, match=rf"^index {tmp_path}: a folder; expected the index file, such as "
                                        rf"{tmp_path / 'index.parquet'}$"):
        load_index(tmp_path)


def test_compare_refuses_a_file_for_its_out_folder_before_any_work(tmp_path: Path):
    """compare out=<a file> was a traceback (FileExistsError) once the bootstrap was done."""
    (tmp_path / "notes.txt").write_text("")
    run = SimpleNamespace(tracking=SimpleNamespace(search_versions=lambda *_: pytest.fail("the registry was read")))
    with pytest.raises(UserError, match=rf"^out: {tmp_path / 'notes.txt'} is a file; expected a folder"):
        COMPARE.execute(build(Compare, {"out": str(tmp_path / "notes.txt")}), {}, run, None)
