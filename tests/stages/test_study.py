"""The study as one command on a small grid (the demo's encoder and the baseline, two fractions, one scheme),
then compare and promote on what it registered; dry runs; and tuning. One encoder: each cell is a fine-tune
and a registration (most of the grid's CPU), and the lists of encoders are the failing grid's (two, one of
them missing) and test_grid_folds' (the demo's three)."""

from __future__ import annotations

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from simclr_s2.errors import UserError
from simclr_s2.stages.compare import COMPARE
from simclr_s2.stages.grid import GRID
from simclr_s2.stages.promote import PROMOTE
from simclr_s2.stages.tune import TUNE
from simclr_s2.tracking.names import CLASSIFIER_MODEL

GRID_PARAMS = {"encoders": "ben", "schemes": "basic", "fractions": "50,100", "epochs": 2}


@pytest.fixture(scope="module")
def grid(project, demo):
    return project.client.get_run(project.run_stage(GRID, **GRID_PARAMS))


def _cells(project, run) -> pd.DataFrame:
    return pd.read_csv(project.artifact(run.info.run_id, "grid/cells.csv"))


def _snapshot(project) -> tuple[set[str], int, list]:
    """Runs, model versions and files of the state and data folders: what a read-only command must not change."""
    files = sorted(p for folder in ("home", "data") for p in (project.root / folder).rglob("*"))
    versions = len(project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}'"))
    return {r.info.run_id for r in project.runs()}, versions, files


def test_every_cell_is_a_tagged_child_run(project, grid):
    """Cells trained for this grid are its children; a cell an earlier command already trained with the same
    key (here the baseline the chain tests may have run) is reused, not trained again."""
    cells = _cells(project, grid)
    assert len(cells) == 4 and set(cells["status"]) <= {"finished", "reused"}
    trained = cells[cells["status"] == "finished"]
    children = project.runs(**{"mlflow.parentRunId": grid.info.run_id})
    assert sorted(r.info.run_id for r in children) == sorted(trained["run_id"])
    runs = [project.client.get_run(run_id) for run_id in cells["run_id"]]
    assert sorted(r.data.tags["pretrained"] for r in runs) == sorted(["ben", "scratch"] * 2)


def test_a_rerun_trains_nothing_and_a_dry_run_opens_nothing(project, grid, capsys):
    before = {r.info.run_id for r in project.runs()}
    project.run_stage(GRID, **GRID_PARAMS)
    new = [r for r in project.runs() if r.info.run_id not in before]
    assert [r.data.tags["stage"] for r in new] == ["grid"]
    assert set(_cells(project, new[0])["status"]) == {"reused"}
    snapshot = _snapshot(project)
    assert project.run_stage(GRID, dry_run="true", **GRID_PARAMS) is None
    assert capsys.readouterr().out.count("reuse ") == 4
    assert _snapshot(project) == snapshot


def test_a_failing_cell_is_reported_while_the_others_finish(project, grid):
    with pytest.raises(UserError, match="2 of 6 grid cells failed"):
        project.run_stage(GRID, **{**GRID_PARAMS, "encoders": "ben,missing-encoder"})
    cells = _cells(project, project.latest("grid"))
    assert (cells["status"] == "failed").sum() == 2
    assert set(cells.loc[cells["status"] != "failed", "status"]) == {"reused"}


def test_compare_reports_every_condition_with_intervals_and_paired_tests(project, grid, tmp_path):
    """The grid's cells (2 epochs) and the demo's fine-tune (3 epochs) are different conditions: never pooled."""
    snapshot = _snapshot(project)
    run_id = project.run_stage(COMPARE, scheme="basic", fractions="50,100", out=str(tmp_path), n_boot=200)
    table = pd.read_csv(tmp_path / "table.csv")
    cells = table[table["epochs"] == 2]
    assert set(cells["pretrained"]) == {"ben", "scratch"} and set(cells["n_runs"]) == {1}
    assert set(table.loc[table["epochs"] == 3, "condition"]) == {"ben 3 epochs"}
    children = project.runs(**{"mlflow.parentRunId": grid.info.run_id})
    for run in children:
        row = cells[(cells["pretrained"] == run.data.tags["pretrained"])
                    & (cells["fraction"] == int(run.data.tags["fraction"]))]
        assert row["test_f1_mean"].item() == pytest.approx(run.data.metrics["test_f1"])
        assert row["test_f1_low"].item() <= row["test_f1_mean"].item() <= row["test_f1_high"].item()
    paired = pd.read_csv(tmp_path / "paired.csv")
    assert len(paired[paired["condition"] != "ben 3 epochs"]) == 2 and set(paired["baseline"]) == {"scratch"}
    logged = {f.path for f in project.client.list_artifacts(run_id)}
    assert {"report.html", "table.csv", "bars_f1.png"} <= logged
    runs, versions, files = snapshot
    assert _snapshot(project)[1:] == (versions, files) and len(_snapshot(project)[0] - runs) == 1


def test_promote_picks_the_best_validation_f1_within_one_fraction(project, grid, capsys):
    with pytest.raises(UserError, match="span 2 values of fraction"):
        project.run_stage(PROMOTE, scheme="basic")
    versions = project.client.search_model_versions(
        f"name='{CLASSIFIER_MODEL}' and tags.scheme='basic' and tags.fraction='50'")
    scores = {v.version: project.client.get_run(v.run_id).data.metrics["best_val_f1"] for v in versions
              if v.tags["val_near_constant"] != "true"}  # one class on validation: never ranked
    snapshot = _snapshot(project)
    if not scores:  # the 2-epoch cells may say one class on validation (val F1 0.667 or 0): nothing is chosen
        with pytest.raises(UserError, match=f"{len(versions)} near-constant"):
            project.run_stage(PROMOTE, scheme="basic", fraction="50")
        assert _snapshot(project)[1] == snapshot[1]
        with pytest.raises(MlflowException, match="alias champion not found"):
            project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")
        return
    try:
        project.run_stage(PROMOTE, scheme="basic", fraction="50", dry_run="true")
    except UserError as error:  # tiny validation sets can tie: then nothing is chosen, and it says so
        assert "tie" in str(error)
        return
    assert _snapshot(project) == snapshot
    assert "dry run: would promote" in capsys.readouterr().out
    project.run_stage(PROMOTE, scheme="basic", fraction="50")
    champion = project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")
    assert scores[champion.version] == max(scores.values())


def test_tune_as_the_readme_shows_it(project, demo, monkeypatch):
    monkeypatch.setitem(project.env, "SIMCLR_S2_MAX_TRIALS", "2")
    run_id = project.run_stage(TUNE, n_trials=3, epochs=2)
    run = project.client.get_run(run_id)
    assert run.data.params["split"] == "auto" and run.data.params["resolved_split"].startswith("runs:/")
    assert run.data.params["resolved_n_trials"] == "2"
    trials = project.runs("tune-trial", **{"mlflow.parentRunId": run_id})
    assert len(trials) == 2
    final = project.client.get_run(run.data.tags["simclr_s2.final_run"])
    assert final.data.tags["mlflow.parentRunId"] == run_id and final.data.tags["simclr_s2.tuned"] == "true"


def test_a_data_error_stops_the_study_instead_of_failing_every_trial(project, demo, monkeypatch):
    from simclr_s2.stages import tune as tune_stage

    calls = []

    def broken_data(*args, **kwargs):
        calls.append(1)
        raise UserError("patch X: missing band file X_B04.tif")

    monkeypatch.setattr(tune_stage, "train_classifier", broken_data)
    with pytest.raises(UserError, match="missing band file"):
        project.run_stage(TUNE, n_trials=3, epochs=1, study_name="broken-data", final_run="false")
    assert len(calls) == 1
    failed = project.latest("tune")
    assert failed.info.status == "FAILED" and "missing band file" in failed.data.tags["simclr_s2.error"]


def test_the_study_protocol_preset_plans_the_original_codes_cells(project, demo, capsys):
    project.run_stage(GRID, protocol="study", schemes="basic", fractions="10", dry_run="true")
    shown = capsys.readouterr().out
    assert "baseline-resnet152-basic-10pct-s0" in shown and "finetune-ben-basic-10pct-s0" in shown
    assert "(to make)" in shown  # its ResNet-152 demo encoders are not pretrained yet, and a dry run makes nothing
    with pytest.raises(UserError, match="protocol: study sets trainable"):
        project.run_stage(GRID, protocol="study", trainable="head2,all", dry_run="true")
