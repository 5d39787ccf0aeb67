"""The study as one command on a small grid (two encoders, two fractions, one scheme, baselines), then
compare and promote on what it registered."""

import pandas as pd
import pytest
from mlflow.exceptions import MlflowException

from simclr_s2.tracking.registry import CLASSIFIER_MODEL

pytestmark = pytest.mark.integration

GRID = {"schemes": "basic", "fractions": "50,100", "epochs": 2}


@pytest.fixture(scope="module")
def grid(project, demo, split_uri):
    pretrain = project.latest("pretrain").data.params
    project.run("pretrain", name="ca-sgd", optimizer="sgd", lr=0.1, epochs=1, index=pretrain["resolved_index"],
                exclude_split=f"{split_uri('basic')},{split_uri('expanded')}")
    project.run("main", encoders="ben,ca-sgd", **GRID)
    return project.latest("grid")


def _cells(project, run):
    return pd.read_csv(project.client.download_artifacts(run.info.run_id, "grid/cells.csv"))


def test_every_cell_is_a_tagged_child_run(project, grid):
    cells = _cells(project, grid)
    assert len(cells) == 6 and set(cells["status"]) == {"finished"}
    children = project.runs(**{"mlflow.parentRunId": grid.info.run_id})
    assert sorted(r.info.run_id for r in children) == sorted(cells["run_id"])
    stages = sorted(r.data.tags["stage"] for r in children)
    assert stages == ["baseline"] * 2 + ["finetune"] * 4
    pretrained = sorted(r.data.tags["pretrained"] for r in children)
    assert pretrained == ["ben", "ben", "ca-sgd", "ca-sgd", "scratch", "scratch"]
    assert {r.data.tags["fraction"] for r in children} == {"50", "100"}


def test_a_rerun_trains_nothing(project, grid):
    before = {r.info.run_id for r in project.runs()}
    project.run("main", encoders="ben,ca-sgd", **GRID)
    new = [r for r in project.runs() if r.info.run_id not in before]
    assert [r.data.tags["stage"] for r in new] == ["grid"]
    assert set(_cells(project, new[0])["status"]) == {"reused"}


def test_a_failing_cell_is_reported_while_the_others_finish(project, grid):
    done = project.run("main", check=False, encoders="ben,missing-encoder", **GRID)
    assert done.returncode != 0
    assert "2 of 6 grid cells failed" in done.stderr
    cells = _cells(project, project.latest("grid"))
    assert (cells["status"] == "failed").sum() == 2
    assert set(cells.loc[cells["status"] != "failed", "status"]) == {"reused"}


def test_compare_table_equals_the_runs_metrics(project, grid, tmp_path):
    project.run("compare", scheme="basic", fractions="50,100", out=tmp_path)
    table = pd.read_csv(tmp_path / "table.csv")
    children = project.runs(**{"mlflow.parentRunId": grid.info.run_id})
    for run in children:
        row = table[(table["pretrained"] == run.data.tags["pretrained"])
                    & (table["fraction"] == int(run.data.tags["fraction"]))]
        assert row["n_runs"].item() == 1
        assert row["test_f1_mean"].item() == pytest.approx(run.data.metrics["test_f1"])
        assert row["test_accuracy_mean"].item() == pytest.approx(run.data.metrics["test_accuracy"])
    for figure in ("bars_accuracy.png", "bars_f1.png", "lines.png", "table.md"):
        assert (tmp_path / figure).stat().st_size > 0
    compare = project.latest("compare")
    assert {"bars_f1.png", "table.csv"} <= {f.path for f in project.client.list_artifacts(compare.info.run_id)}


def test_promote_picks_the_best_validation_f1(project, grid):
    versions = project.client.search_model_versions(
        f"name='{CLASSIFIER_MODEL}' and tags.scheme='basic' and tags.fraction='50'")
    scores = {v.version: project.client.get_run(v.run_id).data.metrics["best_val_f1"] for v in versions}
    best = max(scores.values())
    done = project.run("promote", check=False, scheme="basic", fraction=50, dry_run="true")
    winners = [v for v, score in scores.items() if score == best]
    if len(winners) > 1:  # tiny validation sets can tie: then nothing is chosen, and it says so
        assert done.returncode != 0 and "tie" in done.stderr
    else:
        assert done.returncode == 0 and f"would promote v{winners[0]} " in done.stdout
    with pytest.raises(MlflowException):  # a dry run sets no alias
        project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")


def test_promote_moves_the_former_champion_to_previous(project, grid):
    project.run("promote", scheme="basic", fraction=50, pretrained="ben")
    first = project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")
    assert first.tags["pretrained"] == "ben" and first.tags["promoted_metric"] == "val_f1"
    project.run("promote", scheme="basic", fraction=50, pretrained="ca-sgd")
    second = project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "champion")
    assert second.tags["pretrained"] == "ca-sgd"
    assert project.client.get_model_version_by_alias(CLASSIFIER_MODEL, "previous").version == first.version
