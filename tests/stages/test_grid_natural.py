"""`main natural_test=true`: the splits it draws hold the natural-prevalence test and validation sets, so
each cell chooses its threshold at the pool's own prevalence and logs the natural-prevalence figures."""

from __future__ import annotations

import pandas as pd
import pytest
from project_runner import Project

from simclr_s2.stages.grid import GRID

CELL = {"encoders": "", "schemes": "basic", "fractions": "100", "seeds": "0", "epochs": 1,
        "natural_test": "true", "natural_share": 0.2}


@pytest.fixture(scope="module")
def project(project_apart: Project) -> Project:
    """Not the session's project: its natural splits must not become the `latest` split other tests look for."""
    return project_apart


def test_a_grid_with_natural_sets_thresholds_its_cells_at_natural_prevalence(project):
    grid_id = project.run_stage(GRID, **CELL)
    (row,) = pd.read_csv(project.client.download_artifacts(grid_id, "grid/cells.csv")).to_dict("records")
    assert row["status"] == "finished"
    cell = project.client.get_run(row["run_id"])
    splits = project.client.get_run(cell.data.params["split"].removeprefix("runs:/").split("/")[0])
    assert (splits.data.params["natural_test"], splits.data.params["natural_share"]) == ("true", "0.2")
    assert int(cell.data.params["val_natural_patches"]) > 0
    assert {"test_natural_pr_auc", "test_natural_valthr_f1", "val_threshold"} <= set(cell.data.metrics), \
        sorted(cell.data.metrics)
