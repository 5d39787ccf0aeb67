"""What compare and promote read from the registry: versions as compare's input, diverged ones left out."""

from __future__ import annotations

import math
import sqlite3
from functools import partial

import pytest

from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS, ZSCORE
from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import THRESHOLD_SOURCE
from simclr_s2.study.comparison import REQUIRED, compare
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.names import COMPLETE_TAG
from simclr_s2.tracking.registry import SCALING_TAG
from simclr_s2.tracking.versions import VersionRecord, finite, move_alias, versions_frame

TAGS = {"stage": "finetune", "pretrained": "ben", "arch": "resnet18", "epochs": "50", "fraction": "10", "seed": "0",
        "trainable": "head2", "tuned": "true", "test_digest": "abc", "scheme": "basic"}


def test_non_finite_versions_are_left_out_and_named():
    good = VersionRecord("1", TAGS, {"test_f1": 0.8, "test_accuracy": 0.7, "test_auc": 0.9}, "r1")
    diverged = VersionRecord("2", TAGS, {"test_f1": math.nan, "test_accuracy": 0.5, "test_auc": 0.5}, "r2")
    kept, skipped = finite([good, diverged], ("test_f1", "test_accuracy"), "basic")
    assert kept == [good] and skipped == [diverged.describe()]


def test_versions_that_all_diverged_are_named_not_an_empty_tables_columns():
    diverged = VersionRecord("2", {"pretrained": "ben", "fraction": "10", "seed": "0"},
                             {"test_f1": math.nan, "test_accuracy": 0.5}, "r2")
    with pytest.raises(UserError, match=r"^scheme: every basic version to compare has a non-finite test metric "
                                        r"\(v2 \(ben 10pct s0\)\)"):
        finite([diverged], ("test_f1", "test_accuracy"), "basic")


def test_versions_become_compares_input_with_defaults_for_older_tags():
    frame = versions_frame([VersionRecord("1", TAGS, {"test_f1": 0.8}, "r1")], ("test_f1", "test_accuracy", "test_auc"))
    assert set(REQUIRED) <= set(frame.columns)
    row = frame.iloc[0]
    assert bool(row["tuned"]) is True and row["split_kind"] == "random" and row["pretraining_overlap"] == "unknown"
    assert math.isnan(row["test_auc"])


def test_a_version_whose_natural_threshold_is_the_default_says_so_to_compare():
    reason = "default 0.5: the validation set holds no positive"
    records = [VersionRecord("1", TAGS, {}, "r1"), VersionRecord("2", {**TAGS, THRESHOLD_SOURCE: reason}, {}, "r2")]
    assert versions_frame(records, ())[THRESHOLD_SOURCE].tolist() == ["", reason]


def test_a_version_not_ready_in_the_registry_is_left_out(ctx, caplog):
    """compare counts, and promote ranks, only versions whose registration finished: a remote registry can
    hold one still registering, or failed (its status set in the store here, as such a registry leaves it)."""
    door = Tracking.of(ctx)
    model = f"m-{ctx.experiment_name}"
    door.client.create_registered_model(model)
    run_id = door.client.create_run(ctx.experiment_id, tags={COMPLETE_TAG: "true"}).info.run_id
    door.client.set_terminated(run_id, "FINISHED")
    for seed in range(3):
        door.client.create_model_version(model, "file:///nowhere", run_id, tags={**TAGS, "seed": str(seed)})
    with sqlite3.connect(ctx.tracking_uri.removeprefix("sqlite:///")) as db:
        db.execute("UPDATE model_versions SET status = 'PENDING_REGISTRATION' WHERE name = ? AND version = 2",
                   (model,))
        db.execute("UPDATE model_versions SET status = 'FAILED_REGISTRATION' WHERE name = ? AND version = 3",
                   (model,))
    assert [r.version for r in door.search_versions("basic", model=model)] == ["1"]
    assert "not ready in the registry: v2 (PENDING_REGISTRATION), v3 (FAILED_REGISTRATION)" in caplog.text


def test_a_version_a_killed_run_registered_is_left_out(ctx, caplog):
    """A run killed after registering is resumed by another, which registers the same weights again: the dead
    run's version, older, would win promote's tie-break and point the champion at a run in the trash."""
    door = Tracking.of(ctx)
    model = f"k-{ctx.experiment_name}"
    door.client.create_registered_model(model)
    killed = door.client.create_run(ctx.experiment_id).info.run_id
    resumed = door.client.create_run(ctx.experiment_id, tags={COMPLETE_TAG: "true"}).info.run_id
    door.client.set_terminated(resumed, "FINISHED")
    for run_id in (killed, resumed):
        door.client.create_model_version(model, "file:///nowhere", run_id, tags=TAGS)
    assert [(r.version, r.run_id) for r in door.search_versions("basic", model=model)] == [("2", resumed)]
    assert "left out, registered by runs that never finished (or that this store does not hold): v1 (ben 10pct s0)" \
        in caplog.text


def test_versions_differing_only_in_their_input_are_two_conditions():
    """The `bands` and scaling tags reach compare ("" for a version older than them, read as the study's
    bands, z-scored): a 10-band and a 12-band baseline are two conditions, neither a duplicate of the other."""
    scores = {"test_f1": 0.7, "test_accuracy": 0.7, "test_auc": 0.8}
    baseline = {**TAGS, "stage": "baseline", "pretrained": "scratch", "tuned": "false"}
    records = [VersionRecord("1", {**baseline, "bands": ",".join(STUDY_BANDS), SCALING_TAG: ZSCORE}, scores, "r1"),
               VersionRecord("2", {**baseline, "bands": ",".join(BANDS)}, scores, "r2"),
               VersionRecord("3", {**baseline, "seed": "1"}, scores, "r3")]
    frame = versions_frame(records, scores)
    assert frame["bands"].tolist()[1:] == [",".join(BANDS), ""] and frame[SCALING_TAG].tolist()[1:] == ["", ""]
    result = compare(frame, [10])
    assert result.conditions == ("scratch bands all", "scratch bands study") and result.duplicates.empty
    assert result.cells.set_index("condition").loc["scratch bands study", "versions"] == "1,3"


def test_a_version_whose_run_is_marked_complete_but_not_finished_is_left_out(ctx, caplog):
    """The completion mark is written before the run ends FINISHED: between the two (or where ending it failed
    and the run was ended FAILED) the run is no finished run, and its version is not ranked, as the
    tracker's reuse and the threshold search require both."""
    door = Tracking.of(ctx)
    model = f"f-{ctx.experiment_name}"
    door.client.create_registered_model(model)
    runs = [door.client.create_run(ctx.experiment_id, tags={COMPLETE_TAG: "true"}).info.run_id for _ in range(3)]
    door.client.set_terminated(runs[0], "FINISHED")
    door.client.set_terminated(runs[2], "FAILED")  # runs[1] stays RUNNING
    for seed, run_id in enumerate(runs):
        door.client.create_model_version(model, "file:///nowhere", run_id, tags={**TAGS, "seed": str(seed)})
    assert [(r.version, r.run_id) for r in door.search_versions("basic", model=model)] == [("1", runs[0])]
    assert "never finished" in caplog.text and "v2 (ben 10pct s1), v3 (ben 10pct s2)" in caplog.text


def test_each_alias_keeps_its_own_reason_on_the_version_and_a_former_holder_loses_it(ctx):
    """A version may hold champion and another alias: promoting it to the second must not write over why it is
    champion; once champion moves on, the former holder no longer says it was promoted to champion (the
    promote runs keep the history)."""
    door = Tracking.of(ctx)
    model = f"p-{ctx.experiment_name}"
    door.client.create_registered_model(model)
    reason = {"promoted_alias": "champion", "promoted_metric": "val_f1", "promoted_value": "0.8"}
    for _ in range(2):  # the first with the reason a promote before alias_tags wrote
        door.client.create_model_version(model, "file:///nowhere", tags={**TAGS, **reason})
    move = partial(move_alias, door.client, model=model)
    move("1", "champion", reason, former=None, previous_alias="previous")
    assert not [k for k in door.client.get_model_version(model, "1").tags if k.startswith("promoted_")]
    move("1", "best-auc", {**reason, "promoted_metric": "val_auc"}, former=None, previous_alias="best-auc-previous")
    first = door.client.get_model_version(model, "1").tags
    assert (first["promoted.champion.metric"], first["promoted.best-auc.metric"]) == ("val_f1", "val_auc")
    move("2", "champion", reason, former="1", previous_alias="previous")
    first, second = (door.client.get_model_version(model, v) for v in ("1", "2"))
    assert [k for k in first.tags if k.startswith(("promoted.champion.", "promoted_"))] == []
    assert first.tags["promoted.best-auc.value"] == "0.8" and second.tags["promoted.champion.value"] == "0.8"
    assert (sorted(first.aliases), second.aliases) == (["best-auc", "previous"], ["champion"])
