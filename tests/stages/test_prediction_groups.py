"""A classifier run writes, with each test patch's prediction, the group its split kept apart and that unit's
name: what compare resamples (a tile split's test set is a few tiles, not the 12 km blocks inside them)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from simclr_s2.bigearthnet.index import index_archive_root, index_digest, load_index
from simclr_s2.settings.specs import DEMO_INDEX
from simclr_s2.stages.classifier import BASELINE
from simclr_s2.stages.inputs import SOURCE
from simclr_s2.study.splits import create_splits


def test_a_tile_split_s_test_predictions_are_grouped_by_tile(project, demo, tmp_path: Path) -> None:
    index_path = Path(project.env["SIMCLR_S2_DATA"]) / DEMO_INDEX / "index.parquet"
    index = load_index(index_path)
    # drawn by the library, not as a run: the chain's tests read the newest basic splits run as the demo's
    create_splits(index, "basic", tmp_path, fractions=(100,), kind="tile", index_digest=index_digest(index_path))
    (tmp_path / "basic" / SOURCE).write_text(json.dumps({"index": str(index_path),
                                                         "archive_root": str(index_archive_root(index_path))}))
    run_id = project.run_stage(BASELINE, split=str(tmp_path), epochs=1, register="false")
    scored = pd.read_csv(project.artifact(run_id, "evaluation/test/predictions.csv"))
    tiles = index.set_index("name")["tile"]
    assert scored["group"].tolist() == tiles.loc[scored["name"]].tolist()
    assert set(scored["unit"]) == {"tile"} and scored["group"].nunique() < len(scored)
