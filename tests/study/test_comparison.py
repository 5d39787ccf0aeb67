"""compare without MLflow, on a runs table built here: conditions never mix (trainable policies, baseline
archs, a tuned run), two test sets are refused, duplicates are listed, intervals and paired tests equal
their reference computations, and the report holds the tables, figures, links and leakage statuses."""

from __future__ import annotations

import statistics
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import binary_metrics
from simclr_s2.study import stats
from simclr_s2.study.comparison import REQUIRED, compare
from simclr_s2.study.report import Links, write_report

TEST_SET = "7e57" * 16
N_PATCHES = 120
NAMES = [f"S2A_MSIL2A_20170613T101031_{i // 100}_{i % 100:02d}" for i in range(N_PATCHES)]  # sorted
LABELS = np.arange(N_PATCHES) % 2
FINETUNE = {"stage": "finetune", "pretrained": "ben", "encoder_version": "simclr-s2-encoder/3", "arch": "resnet152",
            "trainable": "all", "epochs": 50, "settings": "lr=5e-05", "tuned": False, "split_kind": "random",
            "pretraining_overlap": "0",
            "test_digest": TEST_SET}
SCRATCH = {**FINETUNE, "stage": "baseline", "pretrained": "scratch", "encoder_version": ""}
SKILL = {"ben": 0.8, "scratch": 0.7}


def predictions(run_id: str) -> pd.DataFrame:
    """Seeded, distinct per-patch probabilities of each run; runs named 'ben...' are more often right."""
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    skill = SKILL["ben" if run_id.startswith("ben") else "scratch"]
    right = rng.random(N_PATCHES) < skill
    p = np.where(right == LABELS.astype(bool), 0.5 + 0.5 * rng.random(N_PATCHES), 0.5 * rng.random(N_PATCHES))
    frame = pd.DataFrame({"name": NAMES, "label": LABELS, "probability": p})
    return frame.iloc[rng.permutation(N_PATCHES)]  # any row order


def run(version: int, fraction: int, seed: int, base: dict = FINETUNE, **changes) -> dict:
    row = {**base, **changes, "version": version, "fraction": fraction, "seed": seed}
    row["run_id"] = f"{row['pretrained']}-{version}"
    m = binary_metrics(LABELS, predictions(row["run_id"]).sort_values("name")["probability"].to_numpy())
    return {**row, "test_accuracy": m["accuracy"], "test_f1": m["f1"], "test_auc": m["auc"]}


def grid() -> pd.DataFrame:
    """Two trainable policies of one encoder, a tuned run, two baseline archs; ben (all) has 3 seeds at
    10 %, one at 1 %, none at 100 %; ben (head2) at 10 % has seeds 0 and 3 (3 unpaired); v12 reruns v2."""
    rows = [run(1, 10, 0), run(2, 10, 1), run(3, 10, 2), run(4, 1, 0),
            run(5, 10, 0, trainable="head2"), run(6, 10, 3, trainable="head2"),
            run(7, 10, 0, tuned=True),
            run(8, 10, 0, SCRATCH, arch="resnet18"), run(9, 10, 1, SCRATCH, arch="resnet18"),
            run(10, 10, 0, SCRATCH), run(11, 1, 0, SCRATCH),
            run(12, 10, 1)]
    return pd.DataFrame(rows)


BEN, HEAD2, TUNED, S152, S18 = "ben (all)", "ben (head2)", "ben (all) tuned", "scratch resnet152", "scratch resnet18"


@pytest.fixture(scope="module")
def result():
    return compare(grid(), [1, 10, 100], predictions=predictions, n_boot=300)


def cell(result, condition: str, fraction: int) -> dict:
    [row] = result.cells[(result.cells["condition"] == condition) & (result.cells["fraction"] == fraction)].to_dict(
        "records")
    return row


def test_each_condition_is_its_own_row(result) -> None:
    assert result.conditions == (BEN, TUNED, HEAD2, S152, S18)  # fine-tunes first, then baselines
    labels = dict(zip(result.runs["version"], result.runs["condition"], strict=True))
    assert labels[1] == BEN and labels[5] == HEAD2 and labels[7] == TUNED
    assert labels[8] == S18 and labels[10] == S152
    assert len(result.cells) == 5 * 3
    runs = grid().set_index("version")
    expected = {(BEN, 10): [1, 12, 3],  # in seed order (v12 is seed 1)
                (HEAD2, 10): [5, 6], (TUNED, 10): [7],
                (S18, 10): [8, 9], (BEN, 1): [4], (S152, 1): [11]}
    for (condition, fraction), versions in expected.items():
        row = cell(result, condition, fraction)
        assert row["n_runs"] == len(versions) and row["versions"] == ",".join(map(str, versions))
        assert row["test_f1_mean"] == pytest.approx(statistics.mean(runs.loc[versions, "test_f1"]), rel=1e-12)
    assert cell(result, HEAD2, 10)["trainable"] == "head2"


def test_missing_cells_stay(result) -> None:
    row = cell(result, BEN, 100)
    assert row["n_runs"] == 0 and np.isnan(row["test_accuracy_mean"]) and row["interval"] == ""
    assert cell(result, TUNED, 1)["n_runs"] == 0


def test_label_shows_only_what_differs() -> None:
    runs = pd.DataFrame([run(1, 10, 0), run(2, 10, 0, SCRATCH, pretraining_overlap="0"),
                         run(3, 10, 0, pretrained="ca", encoder_version="simclr-s2-encoder/4"),
                         run(4, 10, 0, pretrained="ca", encoder_version="simclr-s2-encoder/5",
                             pretraining_overlap="unknown")])
    assert compare(runs, [10]).conditions == ("ben", "ca encoder 4", "ca encoder 5 pretraining unknown", "scratch")


def test_two_test_sets_are_refused() -> None:
    runs = pd.concat([grid(), pd.DataFrame([run(13, 10, 0, test_digest="0ther" * 13)])])
    with pytest.raises(UserError, match=r"^compare: runs scored on 2 test sets cannot share one comparison: "
                                        r"0ther0ther0t \(1 runs\), 7e577e577e57 \(12 runs\); [^\n]*$"):
        compare(runs, [1, 10])


def test_duplicates_are_listed_and_the_newest_counts(result) -> None:
    dup = result.duplicates
    assert dup[["version", "used", "counted_version", "seed"]].values.tolist() == [[2, False, 12, 1],
                                                                                   [12, True, 12, 1]]
    assert cell(result, BEN, 10)["duplicates"] == 1 and cell(result, BEN, 1)["duplicates"] == 0


def test_intervals_t_across_seeds_and_bootstrap_for_one_run(result) -> None:
    runs = grid().set_index("version")
    values = runs.loc[[1, 3, 12], "test_accuracy"]
    low, high = scipy_stats.t.interval(0.95, 2, loc=values.mean(), scale=scipy_stats.sem(values))
    row = cell(result, BEN, 10)
    assert (row["test_accuracy_low"], row["test_accuracy_high"]) == pytest.approx((low, high), rel=1e-12)
    assert row["interval"] == "t, 3 seeds"
    one = cell(result, BEN, 1)
    frame = predictions("ben-4").sort_values("name")  # compare resamples patches in name order
    assert one["interval"] == f"bootstrap, {N_PATCHES} patches"
    for metric, name in (("test_f1", "f1"), ("test_auc", "auc")):
        expected = stats.bootstrap_interval(frame["label"], frame["probability"], name, n_boot=300)
        assert (one[f"{metric}_low"], one[f"{metric}_high"]) == pytest.approx(expected, abs=1e-12)
    no_predictions = compare(grid(), [1, 10])
    assert np.isnan(cell(no_predictions, BEN, 1)["test_f1_low"]) and no_predictions.paired.empty


def aligned(run_id: str) -> np.ndarray:
    return predictions(run_id).sort_values("name")["probability"].to_numpy()


def test_paired_tests_pair_runs_by_seed(result) -> None:
    paired = result.paired.set_index(["fraction", "condition", "baseline"])
    assert sorted(paired.index.get_level_values("baseline").unique()) == [S152, S18]
    row = paired.loc[(10, BEN, S18)]
    assert row["pairs"] == 2 and row["seeds"] == "0,1" and row["unpaired"] == "condition: 2"
    a = np.stack([aligned("ben-1"), aligned("ben-12")])  # seed 1 is v12, the newest
    b = np.stack([aligned("scratch-8"), aligned("scratch-9")])
    for m in ("accuracy", "f1"):
        expected = stats.paired_bootstrap(LABELS, a, b, m, n_boot=300)
        assert (row[f"{m}_diff"], row[f"{m}_low"], row[f"{m}_high"], row[f"{m}_p"]) == pytest.approx(
            (expected.diff, expected.low, expected.high, expected.p), abs=1e-12)
        per_seed = [stats.metric(m, LABELS, a[i]) - stats.metric(m, LABELS, b[i]) for i in range(2)]
        assert (row[f"{m}_seed_low"], row[f"{m}_seed_high"]) == pytest.approx(stats.t_interval(per_seed), abs=1e-12)
    pairs = result.pairs.set_index(["fraction", "condition", "baseline", "seed"])
    first = pairs.loc[(10, BEN, S18, 0)]
    mcnemar = stats.mcnemar(LABELS, a[0], b[0])
    assert (first["mcnemar_b"], first["mcnemar_c"], first["mcnemar_p"]) == (mcnemar.b, mcnemar.c, mcnemar.p)
    assert first["version"] == 1 and first["baseline_version"] == 8
    assert row["mcnemar_p_max"] == max(pairs.loc[(10, BEN, S18), "mcnemar_p"])
    head2 = paired.loc[(10, HEAD2, S152)]
    assert head2["pairs"] == 1 and head2["unpaired"] == "condition: 3"
    assert (1, BEN, S152) in paired.index and (1, TUNED, S152) not in paired.index


def test_predictions_must_cover_the_same_patches() -> None:
    def short(run_id: str) -> pd.DataFrame:
        frame = predictions(run_id)
        return frame.iloc[:-1] if run_id.startswith("scratch") else frame
    with pytest.raises(UserError, match="cover different test patches"):
        compare(grid(), [10], predictions=short, n_boot=50)


def test_input_contract_is_checked() -> None:
    with pytest.raises(UserError, match=r"runs: missing columns \['trainable'\]"):
        compare(grid().drop(columns="trainable"), [10])
    with pytest.raises(UserError, match=r"pretraining_overlap \['yes'\]"):
        compare(grid().assign(pretraining_overlap="yes"), [10])
    with pytest.raises(UserError, match="tuned: expected booleans"):
        compare(grid().assign(tuned="False"), [10])
    with pytest.raises(UserError, match="runs: epochs: expected int values"):
        compare(grid().assign(epochs="many"), [10])
    with pytest.raises(UserError, match=r"fractions \[50\]: no run"):
        compare(grid(), [50])
    assert set(REQUIRED) <= set(grid().columns)


def test_report_files_links_and_statuses(tmp_path: Path) -> None:
    runs = pd.concat([grid(), pd.DataFrame([run(13, 10, 0, pretrained="ca", pretraining_overlap="override:3"),
                                            run(14, 10, 0, pretrained="imported", pretraining_overlap="unknown")])])
    runs["train_digest"] = "a1b2c3d4e5f6" + "0" * 52
    result = compare(runs, [1, 10, 100], predictions=predictions, n_boot=100)
    links = Links(run=lambda r: f"http://mlflow/#/runs/{r}", version=lambda m, v: f"http://mlflow/#/models/{m}/{v}",
                  classifier_model="simclr-s2-classifier")
    paths = write_report(result, tmp_path / "a", "scheme basic", links)
    names = {p.name for p in paths}
    assert names == {"table.csv", "paired.csv", "pairs.csv", "duplicates.csv", "runs.csv", "table.md",
                     "bars_accuracy.png", "bars_f1.png", "lines.png", "paired.png", "report.html"}
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp_path / "a/report.html").read_text()
    assert page.count("data:image/png;base64,") == 4
    assert '<a href="http://mlflow/#/runs/ben-12">' in page
    assert '<a href="http://mlflow/#/models/simclr-s2-classifier/12">v12</a>' in page
    assert '<a href="http://mlflow/#/models/simclr-s2-encoder/3">simclr-s2-encoder/3</a>' in page
    assert "leakage override: 3 test patches seen in pretraining" in page and "pretraining data unknown" in page
    assert TEST_SET[:12] in page and "train a1b2c3d4e5f6" in page
    markdown = (tmp_path / "a/table.md").read_text()
    assert "## Paired tests" in markdown and "## Duplicates" in markdown
    assert "| ben (all) | 100 | 0 | n/a | n/a | n/a | - |" in markdown
    table = pd.read_csv(tmp_path / "a/table.csv")
    assert {"condition", "n_runs", "test_f1_low", "test_f1_high", "pretraining_overlap"} <= set(table.columns)
    again = write_report(result, tmp_path / "b", "scheme basic", links)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again, strict=True))


def test_conditions_without_a_common_seed_are_not_paired(tmp_path: Path) -> None:
    runs = pd.DataFrame([run(1, 10, 5), run(2, 10, 0, SCRATCH), run(3, 10, 1, SCRATCH)])
    result = compare(runs, [10], predictions=predictions, n_boot=50)
    [row] = result.paired.to_dict("records")
    assert row["pairs"] == 0 and row["unpaired"] == "condition: 5; baseline: 0,1" and result.pairs.empty
    names = {p.name for p in write_report(result, tmp_path, "no pairs")}
    assert "paired.png" not in names and "| 10 | ben | scratch | 0 | - |" in (tmp_path / "table.md").read_text()
