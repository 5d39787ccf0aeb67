"""evaluate reads the split's packed store when one is there (as after `fetch pack=splits`, which streams it
with no GeoTIFFs extracted; test_stream.py shows that store is the packer's bit for bit), else the GeoTIFFs
rounded as the store holds them: the same probabilities either way, and those finetune's test scoring gave.
finetune and baseline check their `fold` against the split's manifest."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from simclr_s2.errors import UserError
from simclr_s2.settings.specs import DEMO_ARCHIVE
from simclr_s2.stages.classifier import BASELINE
from simclr_s2.stages.data import CREATE_SPLITS
from simclr_s2.stages.evaluate import EVALUATE
from simclr_s2.tracking.names import CLASSIFIER_MODEL

SCORED = ["name", "label", "probability"]


@contextlib.contextmanager
def _hidden(path: Path) -> Iterator[None]:
    """`path` out of sight for the block (renamed beside itself), then back."""
    away = path.with_name(f".{path.name}.hidden")
    path.rename(away)
    try:
        yield
    finally:
        away.rename(path)


def _scored(project, run_id: str) -> pd.DataFrame:
    return pd.read_csv(project.artifact(run_id, "evaluation/test/predictions.csv"))[SCORED]


def _plots_at_both_thresholds(project, run_id: str) -> None:
    """Each threshold's folder has its confusion matrix and the ROC and PR curves, drawn once for both."""
    folders = [project.artifact(run_id, f"evaluation/{name}")
               for name in ("test", "test_valthr")]
    for name in ("confusion_matrix.png", "roc.png", "pr.png"):
        assert all((folder / name).stat().st_size > 1000 for folder in folders)
    for name in ("roc.png", "pr.png"):
        assert (folders[0] / name).read_bytes() == (folders[1] / name).read_bytes()


def test_evaluate_scores_from_the_store_alone_as_from_the_geotiffs_and_as_finetune(project, demo, split_uri):
    (version,) = project.client.search_model_versions(f"name='{CLASSIFIER_MODEL}' and run_id='{demo.info.run_id}'")

    def evaluated() -> pd.DataFrame:  # in the demo fine-tune's batches
        run_id = project.run_stage(EVALUATE, model_uri=f"models:/{CLASSIFIER_MODEL}/{version.version}",
                                   split=split_uri(), batch_size=32)
        _plots_at_both_thresholds(project, run_id)
        return _scored(project, run_id)

    packed, archive = project.root / "home" / "packed", Path(project.env["SIMCLR_S2_DATA"]) / DEMO_ARCHIVE
    with _hidden(archive):  # a store and no GeoTIFFs
        from_store = evaluated()
    with _hidden(packed):  # GeoTIFFs and no store
        from_files = evaluated()
        assert not packed.exists()  # looked for, never made
        with _hidden(archive), pytest.raises(UserError, match=r"^split: no packed store of its patches in "
                                                              r"bands B04,.* and no GeoTIFFs in .*; make the"):
            evaluated()
    pd.testing.assert_frame_equal(from_store, from_files, check_exact=True)
    pd.testing.assert_frame_equal(from_store, _scored(project, demo.info.run_id), check_exact=True)


def test_a_fold_the_split_does_not_hold_out_is_one_line(project, demo, split_uri, tmp_path):
    with pytest.raises(UserError, match=r"^fold: the split .*basic is not a cross-validation fold, but fold=1 "
                                        r"was given; expected fold=none$"):
        project.run_stage(BASELINE, split=split_uri(), fold="1", epochs=1)
    index = f"runs:/{project.latest('build_index').info.run_id}/index/index.parquet"
    project.run_stage(CREATE_SPLITS, index=index, kind="folds-2", fold=1, fractions="100", out=str(tmp_path))
    for given in ("none", "0"):
        with pytest.raises(UserError, match=rf"^fold: the split .*basic holds out fold 1 \(1\), but "
                                            rf"fold={given} was given; expected fold=1$"):
            project.run_stage(BASELINE, split=str(tmp_path), fold=given, epochs=1)


def test_the_natural_validation_set_is_scored_from_the_training_store(project, demo, tmp_path):
    index = f"runs:/{project.latest('build_index').info.run_id}/index/index.parquet"
    project.run_stage(CREATE_SPLITS, index=index, natural_test="true", natural_share=0.2, fractions="100",
                      out=str(tmp_path))
    packed = sorted((project.root / "home" / "packed").glob("*/names.txt"))
    run = project.client.get_run(project.run_stage(BASELINE, split=str(tmp_path), epochs=1, register="false"))
    assert "test_natural_valthr_f1" in run.data.metrics
    wanted = {*pd.read_csv(tmp_path / "basic" / "val_natural_100pct.csv")["name"],
              *pd.read_csv(tmp_path / "basic" / "test.csv")["name"]}
    # nothing packed for scoring: the sets are read from a store the demo chain packed, which holds them all
    assert sorted((project.root / "home" / "packed").glob("*/names.txt")) == packed
    assert any(wanted <= set(p.read_text().split()) for p in packed)


def test_the_fine_tune_reads_its_split_from_the_store_pretraining_packed(project, demo):
    """The demo packs each patch once: pretraining packs the whole index (test patches too, never read), and
    the fine-tune reads its split's patches from that store instead of packing them again."""
    split_run = demo.data.params["resolved_split"].removeprefix("runs:/").split("/")[0]
    split = project.artifact(split_run, "splits/basic")
    pool = {name for csv in split.glob("*.csv") for name in pd.read_csv(csv)["name"]}
    stores = [set(p.read_text().split()) for p in (project.root / "home" / "packed").glob("*/names.txt")]
    assert any(pool < names for names in stores) and pool not in stores, (len(pool), [len(s) for s in stores])
