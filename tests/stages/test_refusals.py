"""What a stage refuses once it reads what it was given, in one line naming what to change: a classifier
scored on another scheme's labels or on patches it trained on, a demo folder holding another demo, a class
list for a split folder."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.errors import UserError
from simclr_s2.stages import leakage
from simclr_s2.stages.data import DEMO_MARKER, _write_once
from simclr_s2.stages.evaluate import same_scheme
from simclr_s2.stages.inputs import SOURCE, SplitData, load_split_data
from simclr_s2.study.splits import create_splits, load_manifest, scheme_name
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


def _splits(index_path: Path, folder: Path, seed: int) -> SplitData:
    """A random split of the demo index, as create_splits files it (with its source.json)."""
    create_splits(load_index(index_path), "basic", folder, seed=seed, kind="random",
                  index_digest=index_digest(index_path))
    (folder / "basic" / SOURCE).write_text(json.dumps({"index": str(index_path),
                                                       "archive_root": str(index_archive_root(index_path))}))
    return load_split_data(Fetcher(folder.parent / "cache", "file:unused"), str(folder), "basic", 100)


def test_a_test_set_of_another_split_the_classifier_trained_on_is_refused(demo_index: Path, tmp_path: Path):
    """A classifier of the seed-0 split scored on the seed-1 split's test set: some of its patches are the
    classifier's own training or validation patches, read from the split its run logged."""
    own, other = _splits(demo_index, tmp_path / "s0", 0), _splits(demo_index, tmp_path / "s1", 1)
    run = SimpleNamespace(data=SimpleNamespace(params={"split": str(tmp_path / "s0")}))
    client = SimpleNamespace(get_run=lambda run_id: run)
    tags = {"scheme": "basic", "fraction": "100", "train_digest": own.train.digest, "val_digest": own.val.digest}
    fetch = Fetcher(tmp_path / "cache", "file:unused")
    ground = leakage.classifier_ground(client, fetch, tags, "r0")
    assert ground == {*own.train.names, *own.val.names}
    seen = len(ground & set(other.test.names))
    assert seen, "the two seeds' splits should share patches"
    for allow in ("false", "unknown"):
        with pytest.raises(UserError, match=rf"^model_uri: the model was trained or validated on {seen} of the "
                                            rf"{len(other.test.names)} patches of the test set"):
            leakage.training_status(ground, other.test.names, other.index, "test", allow)
    assert leakage.training_status(ground, other.test.names, other.index, "test", "true") == f"override:{seen}"
    assert leakage.training_status(ground, own.test.names, own.index, "test", "false") == "0"
    changed = leakage.classifier_ground(client, fetch, {**tags, "train_digest": "0" * 64}, "r0")
    assert isinstance(changed, leakage.Unreadable) and "no longer holds" in changed.reason
    with pytest.raises(UserError, match="^model_uri: the model's training and validation patches cannot be read"):
        leakage.training_status(changed, other.test.names, other.index, "test", "false")
    assert leakage.training_status(changed, other.test.names, other.index, "test", "unknown") == "unknown"
    assert leakage.classifier_ground(client, fetch, {"scheme": "basic"}, "r0") is None  # recorded no digests
