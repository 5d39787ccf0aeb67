"""`main` over cross-validation folds with the demo's encoders: each fold pretrains its own encoders on the
archive less that fold's evaluation ground, its cells fine-tune them and pass the leakage guard, a rerun
reuses them; an encoder of another fold is still refused; a given split that is one fold gives its cells
that fold, and a registered encoder's recipe is pretrained for it. The fold grid also draws natural-prevalence
sets (`natural_test`), which set its cells' thresholds: one grid for both claims (a grid of their own cost
about 4 CPU-seconds, most of it a registered baseline)."""

from __future__ import annotations

import pandas as pd
import pytest
from project_runner import Project

from simclr_s2.errors import UserError
from simclr_s2.stages import auto
from simclr_s2.stages.classifier import FINETUNE
from simclr_s2.stages.data import CREATE_SPLITS
from simclr_s2.stages.grid import GRID
from simclr_s2.stages.pretrain import PRETRAIN
from simclr_s2.tracking.door import Tracking
from simclr_s2.tracking.names import ENCODER_MODEL

FOLD_0 = {"encoders": "auto", "schemes": "basic", "fractions": "100", "seeds": "0", "epochs": 1,
          "baseline": "false", "split_kind": "folds-2", "folds": "0", "natural_test": "true", "natural_share": 0.2}


def _cells(project, grid_id: str) -> pd.DataFrame:
    return pd.read_csv(project.artifact(grid_id, "grid/cells.csv"))


@pytest.fixture(scope="module")
def project(project_apart: Project) -> Project:
    """Not the session's project: its fold splits, fold encoders and fold cells (basic, 100 %, each fold its
    own test set) must not become the runs the other stage files find as the newest of their kind
    (test_study's grid took a fold's pretrain run for the demo's), nor cells their compare reads."""
    return project_apart


@pytest.fixture(scope="module")
def fold_0(project) -> pd.DataFrame:
    return _cells(project, project.run_stage(GRID, **FOLD_0))


@pytest.fixture(scope="module")
def fold_1_split(project, fold_0) -> str:
    """Fold 1 of the same kind, drawn from the index the grid drew fold 0 from."""
    index = project.latest("create_splits", fold="0").data.params["index"]
    made = project.run_stage(CREATE_SPLITS, index=index, scheme="basic", kind="folds-2", fold=1)
    return f"runs:/{made}/splits"


def test_each_fold_pretrains_its_own_encoders_which_its_cells_fine_tune(project, fold_0):
    assert sorted(fold_0["cell"]) == [f"finetune-{n}-basic-100pct-s0-f0" for n in ("ben", "ca-adam", "ca-sgd")]
    assert set(fold_0["status"]) == {"finished"}
    for row in fold_0.to_dict("records"):
        run = project.client.get_run(row["run_id"])
        assert (run.data.tags["fold"], run.data.tags["encoder_fold"]) == ("0", "0")
        assert run.data.tags["pretraining_overlap"] == "0"  # the guard passed it: no test ground seen
        version = project.client.get_model_version(ENCODER_MODEL, row["pretrained"].rsplit("/", 1)[1])
        pretrain = project.client.get_run(version.run_id)
        assert pretrain.data.tags["fold"] == "0" and pretrain.data.params["exclude_split"] == row["split"]
        recipe = row["cell"].removeprefix("finetune-").split("-basic-")[0]
        assert pretrain.data.params["name"] == run.data.tags["pretrained"] == f"{recipe}-folds-2-f0"


def test_natural_sets_threshold_each_cell_at_the_pools_prevalence(project, fold_0):
    """natural_test=true: the splits the grid draws hold the natural-prevalence test and validation sets, so
    each cell chooses its threshold at the pool's own prevalence and logs the natural-prevalence figures."""
    for row in fold_0.to_dict("records"):
        cell = project.client.get_run(row["run_id"])
        splits = project.client.get_run(cell.data.params["split"].removeprefix("runs:/").split("/")[0])
        assert (splits.data.params["natural_test"], splits.data.params["natural_share"]) == ("true", "0.2")
        assert int(cell.data.params["val_natural_patches"]) > 0
        assert {"test_natural_pr_auc", "test_natural_valthr_f1", "val_threshold"} <= set(cell.data.metrics), \
            sorted(cell.data.metrics)


def test_a_rerun_reuses_the_fold_encoders_and_cells(project, fold_0, capsys):
    before = {r.info.run_id for r in project.runs()}
    again = _cells(project, project.run_stage(GRID, **FOLD_0))
    assert set(again["status"]) == {"reused"} and sorted(again["pretrained"]) == sorted(fold_0["pretrained"])
    assert [r.data.tags["stage"] for r in project.runs() if r.info.run_id not in before] == ["grid"]
    project.run_stage(GRID, dry_run="true", **FOLD_0)
    assert capsys.readouterr().out.count("reuse ") == 3


def test_the_grid_resolves_the_demo_index_and_each_given_encoder_once(project, fold_0, monkeypatch, capsys):
    """The splits are drawn from the index and the folds' recipes come from the given versions: each was
    resolved anew by every step that needed it (the index twice, an encoder three times)."""
    calls: list[str] = []
    demo_index, resolve = auto.demo_index, Tracking.encoder_ref
    monkeypatch.setattr(auto, "demo_index", lambda *a, **k: calls.append("index") or demo_index(*a, **k))
    monkeypatch.setattr(Tracking, "encoder_ref",
                        lambda self, uri, what="pretrained": calls.append(f"{what} {uri}") or resolve(self, uri, what))
    pinned = min(fold_0["pretrained"])
    project.run_stage(GRID, dry_run="true", **{**FOLD_0, "encoders": pinned})
    assert sorted(c for c in calls if not c.startswith("pretrained ")) == [f"encoders {pinned}", "index"]
    assert capsys.readouterr().out.count("finetune-") == 1


def test_the_guard_refuses_an_encoder_pretrained_for_another_fold(project, fold_0, fold_1_split):
    ben_0 = fold_0.loc[fold_0["cell"].str.startswith("finetune-ben-"), "pretrained"].iloc[0]
    with pytest.raises(UserError, match=r"the encoder was pretrained on [1-9][0-9]* of the [0-9]+ patches of the test"):
        project.run_stage(FINETUNE, split=fold_1_split, fold=1, pretrained=ben_0, epochs=1, register="false")


def test_a_given_fold_split_gives_its_cells_its_fold_and_a_registered_recipe_its_fold_encoder(project, fold_1_split):
    """An encoder pretrained here (whose run logged its settings) is pretrained again for the fold, on the
    split's index less the fold's evaluation sets; the baseline cell gets the fold from the split's manifest."""
    index = project.latest("create_splits", fold="1").data.params["index"]
    project.run_stage(PRETRAIN, name="whole", index=index, exclude_split="none", epochs=1, max_patches=40)
    cells = _cells(project, project.run_stage(GRID, split=fold_1_split, encoders="whole", schemes="basic",
                                              fractions="50", seeds="0", epochs=1)).set_index("cell")
    assert sorted(cells.index) == ["baseline-resnet18-basic-50pct-s0-f1", "finetune-whole-basic-50pct-s0-f1"]
    assert set(cells["status"]) == {"finished"}
    baseline = project.client.get_run(cells.loc["baseline-resnet18-basic-50pct-s0-f1", "run_id"])
    assert (baseline.data.params["fold"], baseline.data.tags["fold"], baseline.data.tags["held_out"]) == ("1", "1", "1")
    finetune = project.client.get_run(cells.loc["finetune-whole-basic-50pct-s0-f1", "run_id"])
    assert (finetune.data.tags["encoder_fold"], finetune.data.tags["pretraining_overlap"]) == ("1", "0")
    pretrain = project.latest("pretrain", pretrained="whole-folds-2-f1")
    assert (pretrain.data.params["exclude_split"], pretrain.data.params["max_patches"]) == (fold_1_split, "40")
