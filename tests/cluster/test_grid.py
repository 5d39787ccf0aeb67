"""`main` with backend=ray on a real 2-CPU Ray cluster: cells as Ray tasks two at a time, each a child run
of the grid; a rerun dispatches nothing; a worker killed mid-cell is retried and its cell resumes in the
same run with every step exactly once, while a cell failing with a user error is reported, not retried."""

from __future__ import annotations

import shutil

import pandas as pd
import pytest
from project_runner import unique_name

from simclr_s2.errors import UserError
from simclr_s2.faults import FAULT_ENV
from simclr_s2.settings import specs
from simclr_s2.settings.context import Context
from simclr_s2.settings.spec import build
from simclr_s2.stages.grid import GRID, plan, split_key, variants
from simclr_s2.tracking.tracker import ERROR_TAG, PARENT_TAG, RESUMED_FROM_TAG

# Three cells, two at a time: both run at once, and never three (each cell is a baseline trained and registered)
CELLS = {"encoders": "none", "schemes": "basic", "fractions": "50", "seeds": "0,1,2", "epochs": 1}
RAY = {"backend": "ray", "parallel": 2}


def _cells(project, run_id: str) -> pd.DataFrame:
    return pd.read_csv(project.artifact(run_id, "grid/cells.csv")).set_index("cell")


def _grid(project, **params) -> str:
    return project.run_stage(GRID, **RAY, **params)


@pytest.fixture(scope="module")
def grid(project, cluster, split) -> str:
    return _grid(project, split=split, **CELLS)


def _attempts(run) -> str:
    """How many times the cluster ran the run's cell (simclr_s2.cluster imports Ray: imported here, not by
    collecting this file, which both of `make test`'s workers do while only one runs it)."""
    from simclr_s2.cluster.tasks import ATTEMPTS_TAG
    return run.data.tags[ATTEMPTS_TAG]


def _most_at_once(runs) -> int:
    """The largest number of runs open at the same moment."""
    events = sorted([(r.info.start_time, 1) for r in runs] + [(r.info.end_time, -1) for r in runs])
    open_now = most = 0
    for _, change in events:
        open_now += change
        most = max(most, open_now)
    return most


def test_cells_run_two_at_a_time_as_child_runs_of_the_grid(project, grid):
    cells = _cells(project, grid)
    assert len(cells) == 3 and set(cells["status"]) == {"finished"}
    children = project.runs("baseline", **{PARENT_TAG: grid})
    assert sorted(r.info.run_id for r in children) == sorted(cells["run_id"])
    assert {(r.info.status, _attempts(r)) for r in children} == {("FINISHED", "1")}
    assert _most_at_once(children) == 2
    assert project.client.get_run(grid).data.metrics["cells_dispatched"] == 3


def test_a_rerun_of_a_finished_grid_starts_no_task(project, grid, split):
    before = {r.info.run_id for r in project.runs()}
    rerun = _grid(project, split=split, **CELLS)
    assert [r.info.run_id for r in project.runs() if r.info.run_id not in before] == [rerun]
    assert set(_cells(project, rerun)["status"]) == {"reused"}
    assert project.client.get_run(rerun).data.metrics["cells_dispatched"] == 0
    counts = {k: v for k, v in project.client.get_run(rerun).data.metrics.items() if k.startswith("cells")}
    assert counts == {"cells": 3, "cells_finished": 0, "cells_reused": 3, "cells_failed": 0, "cells_dispatched": 0}


def test_a_killed_worker_resumes_its_cell_in_the_same_run_while_a_failing_cell_is_reported(
        project, cluster, split, monkeypatch, tmp_path):
    """The fault point is set for every cell: the `basic` cell's worker is killed after its first
    checkpoint is uploaded and before that epoch's metrics are logged; the `expanded` cell fails before
    training, for a user error only the cell can find (a damaged file of its splits: the grid reads the
    manifests alone before it dispatches, so a scheme or fraction the split lacks is refused there)."""
    damaged = tmp_path / "splits"
    shutil.copytree(project.artifact(split.split("/")[1], "splits/basic"), damaged / "basic")
    shutil.copytree(damaged / "basic", damaged / "expanded")
    (damaged / "expanded" / "train_100pct.csv").write_text("name,label\n")
    monkeypatch.setitem(project.env, FAULT_ENV, "after_upload@0")
    with pytest.raises(UserError, match="1 of 2 grid cells failed"):
        _grid(project, split=str(damaged), encoders="none", schemes="basic,expanded", fractions="100", seeds="7",
              epochs=2)
    cells = _cells(project, project.latest("grid").info.run_id)
    resumed = cells.loc["baseline-resnet18-basic-100pct-s7"]
    failed = cells.loc["baseline-resnet18-expanded-100pct-s7"]
    assert resumed["status"] == "finished" and failed["status"] == "failed"
    run = project.client.get_run(resumed["run_id"])
    assert run.info.status == "FINISHED" and _attempts(run) == "2"
    assert run.data.tags[RESUMED_FROM_TAG] == run.info.run_id  # its own checkpoint, in its own run
    for key in ("train_loss", "val_auc"):
        assert sorted(m.step for m in project.client.get_metric_history(run.info.run_id, key)) == [0, 1]
    broken = project.client.get_run(failed["run_id"])
    assert broken.info.status == "FAILED" and _attempts(broken) == "1"
    assert "expanded" in failed["error"] and broken.data.tags[ERROR_TAG] == failed["error"]


def test_a_full_disk_at_the_last_cell_fails_that_cell_and_cells_csv_says_why(project, split, monkeypatch):
    """backend=local, no Ray: the second cell's checkpoint write fails as torch.save does on a full disk;
    the grid still writes cells.csv, with that cell failed for one line naming the file and its file system."""
    from simclr_s2.tracking import publisher

    saves = []

    def save_until_full(state: object, path, epoch: int = -1) -> None:
        saves.append(path)
        if len(saves) == 2:
            path.with_name(path.name + ".tmp").write_bytes(b"half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing "
                               "file data/0: file write failed")
        real_save(state, path, epoch)

    real_save = publisher.save_atomically
    monkeypatch.setattr(publisher, "save_atomically", save_until_full)
    with pytest.raises(UserError, match="1 of 2 grid cells failed"):
        project.run_stage(GRID, backend="local", split=split, encoders="none", schemes="basic", fractions="25,50",
                          seeds="3", epochs=1)
    cells = _cells(project, project.latest("grid").info.run_id)
    failed = cells.loc["baseline-resnet18-basic-50pct-s3"]
    assert cells.loc["baseline-resnet18-basic-25pct-s3", "status"] == "finished"
    assert failed["status"] == "failed" and f"cannot write {saves[1]}: writing failed on file system" in failed["error"]
    run = project.client.get_run(failed["run_id"])
    assert run.info.status == "FAILED" and run.data.tags[ERROR_TAG] == failed["error"]
    assert not list(saves[1].parent.glob("*.tmp"))


# ---- folds and label rules as dimensions of the grid ------------------------------------------------------


def test_folds_and_label_rules_are_dimensions_whose_cells_record_them():
    spec = build(specs.Grid, {"encoders": "none", "schemes": "basic", "fractions": "10", "seeds": "0",
                              "split_kind": "country", "folds": "0,2", "min_fractions": "auto,0.05",
                              "ambiguous": "exclude,negative"})
    drawn = variants(spec, ["Austria", "Portugal", "Serbia"])
    assert [(v.fold, v.held_out) for v in drawn[::4]] == [(0, "Austria"), (2, "Serbia")] and len(drawn) == 8
    cells = plan(spec, {}, {split_key("basic", v): f"runs:/{i}/splits" for i, v in enumerate(drawn)}, drawn)
    assert len({c.label for c in cells}) == len({c.params["split"] for c in cells}) == 8
    cell = next(c for c in cells if c.variant == drawn[7])
    assert cell.label == "baseline-resnet18-basic-10pct-s0-f2-mf0.05-neg" and cell.params["fold"] == "2"
    assert cell.tags == {"fold": "2", "held_out": "Serbia", "min_fraction": "0.05", "ambiguous": "negative"}
    assert cell.spec.fold == "2"  # the cell's run logs it as a parameter too
    default = build(specs.Grid, {"encoders": "none", "schemes": "basic", "fractions": "10"})
    plain = plan(default, {}, {"basic": "runs:/s/splits"}, variants(default, []))
    assert [(c.label, c.tags, "fold" in c.params) for c in plain] == [  # the default rule recorded too
        ("baseline-resnet18-basic-10pct-s0", {"min_fraction": "auto", "ambiguous": "exclude"}, False)]


@pytest.mark.parametrize(("params", "match"), [
    ({"split": "runs:/x/splits", "split_kind": "folds-3"}, "split_kind: applies to the splits the grid draws"),
    ({"split": "runs:/x/splits", "min_fractions": "0.5"}, "min_fractions: applies to the splits the grid draws"),
    ({"folds": "1"}, "folds: split_kind spatial has no folds"),
    ({"split_kind": "folds-3", "folds": "1,01"}, "folds: expected distinct values, 01 repeats an earlier one"),
    ({"min_fractions": "0.05,2"}, "min_fractions: expected"),
])
def test_grid_dimensions_are_refused_in_one_line(params, match):
    with pytest.raises(UserError, match=match):
        build(specs.Grid, params)
    with pytest.raises(UserError, match="folds: 3 is not a fold of folds-3, which has folds 0 to 2"):
        variants(build(specs.Grid, {"split_kind": "folds-3", "folds": "3"}), ["0", "1", "2"])


def test_a_grid_fold_is_drawn_as_its_own_split_and_its_cell_records_it(project, split):
    """backend=local, fold 1 of 2 of the demo (whose index `split` made): its create_splits run and its cell
    carry the fold as tags and parameter; a rerun reuses the cell."""
    params = {"encoders": "none", "schemes": "basic", "fractions": "50", "seeds": "0", "epochs": 1,
              "split_kind": "folds-2", "folds": "1"}
    grid = project.run_stage(GRID, **params)
    cells = _cells(project, grid)
    assert list(cells.index) == ["baseline-resnet18-basic-50pct-s0-f1"] and list(cells["status"]) == ["finished"]
    assert project.client.get_run(grid).data.params["resolved_folds"] == "0,1"
    run = project.client.get_run(cells["run_id"].iloc[0])
    assert (run.data.tags["fold"], run.data.tags["held_out"], run.data.params["fold"]) == ("1", "1", "1")
    made = project.client.get_run(cells["split"].iloc[0].split("/")[1])
    assert (made.data.tags["split_kind"], made.data.tags["fold"], made.data.tags["held_out"]) == ("folds-2", "1", "1")
    assert list(_cells(project, project.run_stage(GRID, **params))["status"]) == ["reused"]


def test_an_interrupted_dispatch_cancels_its_tasks_and_ends_their_runs_killed(project, monkeypatch):
    """Ctrl-C on the driver while cells train: no cell's run may stay RUNNING with nobody to end it (Ray is
    stood in for: the claim is about the driver's side)."""
    import ray

    from simclr_s2.cluster import dispatch
    from simclr_s2.stages.classifier import BASELINE

    def interrupted(refs, num_returns):
        raise KeyboardInterrupt

    cancelled = []
    submitted = iter(["ref-a", "ref-b"])
    task = type("Task", (), {"options": lambda self, **_: self, "remote": lambda self, *_: next(submitted)})()
    monkeypatch.setattr(dispatch, "_remote_stage", lambda: task)
    monkeypatch.setattr(ray, "wait", interrupted)
    monkeypatch.setattr(ray, "cancel", cancelled.append)
    parent = project.client.create_run(project.client.create_experiment(unique_name("interrupted"))).info
    ctx = Context.from_env({**project.process_env(), "MLFLOW_EXPERIMENT_ID": parent.experiment_id})
    jobs = [dispatch.Job(f"cell-{seed}", BASELINE, {"seed": seed}) for seed in (0, 1)]
    placement = dispatch.Placement(address="local", parallel=2)
    with pytest.raises(KeyboardInterrupt):
        dispatch._Dispatch(ctx, parent.run_id, placement, dispatch.Progress(2, "cells")).run(jobs)

    assert cancelled == ["ref-a", "ref-b"]
    runs = project.runs("baseline", **{PARENT_TAG: parent.run_id})
    assert {(r.info.status, r.data.tags[ERROR_TAG]) for r in runs} == {
        ("KILLED", "the command that dispatched it stopped: KeyboardInterrupt: ")}
    assert len(runs) == 2
