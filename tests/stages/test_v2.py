"""A BigEarthNet v2.0 demo archive end to end: index with reference maps, splits on the official geographic
split with labels by area (a rule other than the default, which the fine-tune's run records), a fine-tune
whose encoder was pretrained on the v1 demo (the leakage guard crosses archive versions through
s2v1_name), and compare on the v2 test set alone."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings import specs
from simclr_s2.settings.spec import build
from simclr_s2.stages import auto
from simclr_s2.stages.classifier import FINETUNE
from simclr_s2.stages.compare import COMPARE
from simclr_s2.stages.data import BUILD_INDEX, CREATE_SPLITS, MAKE_DEMO_DATA
from simclr_s2.stages.grid import GRID


@pytest.fixture(scope="module")
def v2_split(project, demo, tmp_path_factory):
    root = tmp_path_factory.mktemp("v2")
    project.run_stage(MAKE_DEMO_DATA, out=str(root / "reBEN"), n_patches=60, layout="v2")
    index_run = project.client.get_run(project.run_stage(BUILD_INDEX, archive=str(root / "reBEN"),
                                                         out=str(root / "index")))
    splits = project.run_stage(CREATE_SPLITS, index=f"runs:/{index_run.info.run_id}/index/index.parquet",
                               scheme="basic", kind="official", fractions="50,100", out=str(root / "splits"),
                               min_fraction="0.05", ambiguous="negative")
    return index_run, f"runs:/{splits}/splits"


def test_the_v2_index_reads_the_reference_maps(project, v2_split):
    index_run, _ = v2_split
    assert index_run.data.tags["archive_version"] == "v2"
    index = pd.read_parquet(project.artifact(index_run.info.run_id, "index/index.parquet"))
    assert {"s2v1_name", "area_share_212", "official_split", "epsg"} <= set(index.columns)
    assert index["area_share_212"].between(0, 1).all() and (index["area_share_212"] > 0).any()


def test_the_official_split_is_recorded_with_the_area_rule(project, v2_split):
    splits = project.latest("create_splits", scheme="basic")
    assert splits.data.tags["split_kind"] == "official"
    manifest = project.artifact(splits.info.run_id, "splits/basic/manifest.json")
    text = Path(manifest).read_text()
    assert '"kind": "official"' in text and "area: scheme's classes cover >= 0.05" in text
    assert json.loads(text)["rule"] == {"min_fraction": "0.05", "ambiguous": "negative"}


def test_a_v1_encoder_is_checked_against_a_v2_test_set(project, v2_split, capsys):
    _, split = v2_split
    with pytest.raises(UserError, match=r"pretrained on \d+ of the \d+ patches of the test set"):
        project.run_stage(FINETUNE, split=split, epochs=1, fraction=100)
    run_id = project.run_stage(FINETUNE, split=split, epochs=2, fraction=100, allow_pretraining_overlap="true")
    run = project.client.get_run(run_id)
    assert run.data.tags["pretraining_overlap"].startswith("override:")
    assert run.data.params["split_kind"] == "official"
    # a split given as it is still says which label rule it holds: compare's condition is not the default's
    assert (run.data.tags["min_fraction"], run.data.tags["ambiguous"]) == ("0.05", "negative")


def test_compare_keeps_the_v2_label_rule_apart_and_takes_one_test_set_at_a_time(project, v2_split, tmp_path):
    """The v1 demo's fine-tunes (the default rule) and the v2 one (its split's rule) are two label rules, each
    with its own test set; test_set= narrows the comparison to one."""
    project.run_stage(COMPARE, scheme="basic", fractions="100", out=str(tmp_path / "both"), n_boot=100)
    both = pd.read_csv(tmp_path / "both" / "table.csv", dtype={"min_fraction": str})
    assert set(zip(both["min_fraction"], both["ambiguous"])) == {("auto", "exclude"), ("0.05", "negative")}
    v2 = project.latest("finetune", pretraining_overlap=project.latest("finetune").data.tags["pretraining_overlap"])
    digest = v2.data.params["test_digest"][:12]
    project.run_stage(COMPARE, scheme="basic", fractions="100", out=str(tmp_path), test_set=digest, n_boot=100)
    table = pd.read_csv(tmp_path / "table.csv", dtype={"min_fraction": str})
    assert table["pretraining_overlap"].str.startswith("override:").all() and set(table["split_kind"]) == {"official"}
    assert set(zip(table["min_fraction"], table["ambiguous"])) == {("0.05", "negative")}


def test_the_grid_refuses_the_demo_encoders_for_another_archives_split(project, v2_split, ctx):
    """encoders=auto means the demo's encoders, pretrained on the demo archive: the splits of another index
    (here the v2 demo's; the real archive's alike) are refused before any cell, the demo's own are run."""
    _, split = v2_split
    other = build(specs.Grid, {"split": split, "schemes": "basic", "fractions": "100", "baseline": "false"})
    with pytest.raises(UserError, match=r"^encoders: auto fine-tunes the demo's three encoders, pretrained on the "
                                        r"demo archive, not on the index of these splits \(runs:/\w+/index/"):
        GRID.dry_run(other, ctx)
    GRID.dry_run(build(specs.Grid, {"split": auto.demo_splits(ctx, "basic", make=False), "schemes": "basic",
                                    "fractions": "100", "baseline": "false"}), ctx)
    index_run, _ = v2_split
    drawn = len(project.runs("create_splits"))
    with pytest.raises(UserError, match=r"^encoders: auto fine-tunes the demo's three encoders"):
        GRID.resolve(build(specs.Grid, {"index": f"runs:/{index_run.info.run_id}/index/index.parquet",
                                        "schemes": "basic", "fractions": "100", "baseline": "false"}), ctx)
    assert len(project.runs("create_splits")) == drawn  # refused before any split is drawn
