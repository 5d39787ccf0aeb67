"""compare without MLflow, on a runs table built here: conditions never mix (trainable policies, baseline
archs, a tuned run), two test sets are refused, duplicates are listed, intervals and paired tests equal
their reference computations (spatial groups resampled, seeds by Student t, Holm across every test), natural
prevalence, overlap and near-constant flags reach the table, and the report holds the tables, figures,
links and leakage statuses."""

from __future__ import annotations

import math
import statistics
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from scipy import stats as scipy_stats

from simclr_s2.bigearthnet.bands import BANDS, STUDY_BANDS
from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import binary_metrics, threshold_source
from simclr_s2.study import report, stats
from simclr_s2.study.comparison import FILE_ENCODER, ONE_SEED, REQUIRED, Comparison, compare
from simclr_s2.study.report import Links, write_report

TEST_SET = "7e57" * 16
N_PATCHES = 120
NAMES = [f"S2A_MSIL2A_20170613T101031_{i // 100}_{i % 100:02d}" for i in range(N_PATCHES)]  # sorted
LABELS = np.arange(N_PATCHES) % 2
GROUPS = [f"32629/{i // 20}/0" for i in range(N_PATCHES)]  # 6 blocks of 20 patches
FINETUNE = {"stage": "finetune", "pretrained": "ben", "encoder_version": "simclr-s2-encoder/3",
            "arch": "resnet152", "trainable": "all", "epochs": 50, "settings": "lr=5e-05", "tuned": False,
            "split_kind": "random", "pretraining_overlap": "0", "test_digest": TEST_SET}
SCRATCH = {**FINETUNE, "stage": "baseline", "pretrained": "scratch", "encoder_version": ""}
SKILL = {"ben": 0.8, "scratch": 0.7}
NO_POSITIVE = threshold_source(np.zeros(1))  # a run's natural validation set held no positive


def predictions(run_id: str) -> pd.DataFrame:
    """Seeded, distinct per-patch probabilities of each run; runs named 'ben...' are more often right."""
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    skill = SKILL["ben" if run_id.startswith("ben") else "scratch"]
    right = rng.random(N_PATCHES) < skill
    p = np.where(right == LABELS.astype(bool), 0.5 + 0.5 * rng.random(N_PATCHES), 0.5 * rng.random(N_PATCHES))
    frame = pd.DataFrame({"name": NAMES, "label": LABELS, "probability": p, "group": GROUPS})
    return frame.iloc[rng.permutation(N_PATCHES)]  # any row order


def natural(run_id: str) -> pd.DataFrame | None:
    """Natural-prevalence predictions for the ben runs only: 1 in 10 positive, probabilities near truth."""
    if not run_id.startswith("ben"):
        return None
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    y = np.arange(200) % 10 == 0
    return pd.DataFrame({"name": np.arange(200), "label": y.astype(int),
                         "probability": np.clip(0.1 + 0.6 * y + rng.normal(0, 0.1, 200), 0, 1)})


def run(version: int, fraction: int, seed: int, base: dict = FINETUNE, **changes) -> dict:
    row = {**base, **changes, "version": version, "fraction": fraction, "seed": seed}
    row["run_id"] = f"{row['pretrained']}-{version}"
    m = binary_metrics(LABELS, predictions(row["run_id"]).sort_values("name")["probability"].to_numpy())
    return {**row, "test_accuracy": m["accuracy"], "test_f1": m["f1"], "test_auc": m["auc"],
            "test_near_constant": m["near_constant"], "footprint_overlap_test": 0.0,
            "test_natural_valthr_mcc": 0.5 if row["pretrained"] == "ben" else math.nan}


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


BEN, HEAD2, TUNED = "ben (all)", "ben (head2)", "ben (all) tuned"
S152, S18 = "scratch resnet152", "scratch resnet18"


@pytest.fixture(scope="module")
def result():
    return compare(grid(), [1, 10, 100], predictions=predictions, natural=natural, n_boot=300)


def cell(result, condition: str, fraction: int) -> dict:
    cells = result.cells
    [row] = cells[(cells["condition"] == condition) & (cells["fraction"] == fraction)].to_dict("records")
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
    assert compare(runs, [10]).conditions == ("ben", "ca encoder 4", "ca encoder 5 pretraining unknown",
                                              "scratch")


def test_recalibrated_batchnorm_is_its_own_condition() -> None:
    """Recomputed BatchNorm statistics change the model: runs with and without them never pool, and a run
    older than the tag is neither."""
    runs = pd.DataFrame([run(1, 10, 0, bn_recalibrated="true"), run(2, 10, 1, bn_recalibrated="true"),
                         run(3, 10, 0, bn_recalibrated="false"), run(4, 10, 1, bn_recalibrated=""),
                         run(5, 10, 0, SCRATCH, bn_recalibrated="false"),
                         run(6, 10, 1, SCRATCH, bn_recalibrated="")])
    result = compare(runs, [10])
    assert result.conditions == ("ben", "ben BN recalibrated", "ben BN unknown", "scratch")
    assert cell(result, "ben BN recalibrated", 10)["versions"] == "1,2"
    assert cell(result, "scratch", 10)["versions"] == "5,6"  # a baseline never recalibrates, tagged or not


def test_a_run_without_the_label_rule_tags_pools_with_one_tagged_with_the_default_rule() -> None:
    """A cell made before main tagged every cell's label rule reads "" (no tag): it is the default rule's,
    one condition with the cells tagged auto/exclude, apart from another rule's."""
    runs = pd.DataFrame([run(1, 10, 0), run(2, 10, 1, min_fraction="auto", ambiguous="exclude"),
                         run(3, 10, 2, min_fraction="", ambiguous=""),
                         run(4, 10, 0, min_fraction="auto", ambiguous="negative")])
    result = compare(runs, [10])
    assert result.conditions == ("ben ambiguous exclude", "ben ambiguous negative")
    assert cell(result, "ben ambiguous exclude", 10)["versions"] == "1,2,3"


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


def test_every_interval_resamples_seeds_and_groups(result) -> None:
    row = cell(result, BEN, 10)
    assert row["interval"] == "3 seeds x 6 groups"
    assert result.method == ("bootstrap over spatial groups of test patches, Student t over seeds: 6 spatial "
                             f"groups (12 km blocks) of {N_PATCHES} test patches resampled, seeds by t with k - 1 "
                             "df; only 6 groups: a bootstrap over fewer than 20 understates the spread, so its "
                             f"intervals are too narrow and its p too small; {ONE_SEED}")
    runs = np.stack([aligned(r) for r in ("ben-1", "ben-12", "ben-3")])  # seed order: v1, v12 (seed 1), v3
    expected = stats.interval(LABELS, runs, "accuracy", GROUPS, n_boot=300)
    assert (row["test_accuracy_low"], row["test_accuracy_high"]) == pytest.approx(
        (expected.low, expected.high), abs=1e-12)
    one = cell(result, BEN, 1)  # one seed: the same method, groups only
    assert one["interval"] == "1 seeds x 6 groups"
    for metric, name in (("test_f1", "f1"), ("test_auc", "auc")):
        expected = stats.interval(LABELS, aligned("ben-4"), name, GROUPS, n_boot=300)
        assert (one[f"{metric}_low"], one[f"{metric}_high"]) == pytest.approx((expected.low, expected.high),
                                                                             abs=1e-12)
    no_predictions = compare(grid(), [1, 10])
    assert no_predictions.method.startswith("Student t across seeds")
    values = grid().set_index("version").loc[[1, 3, 12], "test_accuracy"]
    low, high = scipy_stats.t.interval(0.95, 2, loc=values.mean(), scale=scipy_stats.sem(values))
    t_row = cell(no_predictions, BEN, 10)
    assert (t_row["test_accuracy_low"], t_row["test_accuracy_high"]) == pytest.approx((low, high), rel=1e-12)
    assert np.isnan(cell(no_predictions, BEN, 1)["test_f1_low"]) and no_predictions.paired.empty


def test_predictions_without_groups_resample_patches_and_say_so() -> None:
    result = compare(grid(), [10], predictions=lambda r: predictions(r).drop(columns="group"), n_boot=50)
    assert "120 test patches (the predictions name no spatial group: each patch its own)" in result.method
    assert cell(result, BEN, 10)["interval"] == "3 seeds x 120 groups"


def test_natural_overlap_and_flags_reach_the_cells(result) -> None:
    row = cell(result, BEN, 10)
    assert row["test_natural_valthr_mcc_mean"] == 0.5 and row["footprint_overlap_test_mean"] == 0.0
    assert np.isnan(cell(result, S18, 10)["test_natural_valthr_mcc_mean"])
    assert row["near_constant_runs"] == 0
    constant = grid().assign(test_near_constant=[1.0] + [0.0] * 11)
    assert cell(compare(constant, [10]), BEN, 10)["near_constant_runs"] == 1
    assert row["default_threshold_runs"] == 0  # no run says its natural threshold is the default
    kept = grid().assign(val_threshold_source=[NO_POSITIVE] + [""] * 11)
    assert cell(compare(kept, [10]), BEN, 10)["default_threshold_runs"] == 1
    bins = result.reliability
    assert set(bins["condition"]) == {BEN, HEAD2, TUNED} and set(bins["fraction"]) == {1, 10}
    ben = bins[(bins["condition"] == BEN) & (bins["fraction"] == 10)]
    assert ben["patches"].sum() == 3 * 200 and len(ben) == 10


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
        expected = stats.paired(LABELS, a, b, m, GROUPS, n_boot=300)
        assert (row[f"{m}_diff"], row[f"{m}_low"], row[f"{m}_high"], row[f"{m}_p"]) == pytest.approx(
            (expected.value, expected.low, expected.high, expected.p), abs=1e-12)
    pairs = result.pairs.set_index(["fraction", "condition", "baseline", "seed"])
    first = pairs.loc[(10, BEN, S18, 0)]
    assert first["accuracy_diff"] == pytest.approx(stats.metric("accuracy", LABELS, a[0])
                                                   - stats.metric("accuracy", LABELS, b[0]), abs=1e-12)
    assert first["version"] == 1 and first["baseline_version"] == 8 and row["groups"] == 6
    head2 = paired.loc[(10, HEAD2, S152)]
    assert head2["pairs"] == 1 and head2["unpaired"] == "condition: 3"
    assert (1, BEN, S152) in paired.index and (1, TUNED, S152) not in paired.index


def test_holm_adjusts_every_test_of_the_comparison(result) -> None:
    paired = result.paired[result.paired["pairs"] > 0]
    raw = paired[["accuracy_p", "f1_p"]].to_numpy().ravel()
    adjusted = paired[["accuracy_p_holm", "f1_p_holm"]].to_numpy().ravel()
    assert adjusted == pytest.approx(stats.holm(raw), abs=1e-15, nan_ok=True)
    tested = ~np.isnan(raw)  # a pairing of one seed pair is no test (stats.paired), so Holm counts it out
    assert np.array_equal(tested, np.repeat(paired["pairs"].to_numpy() > 1, 2))
    assert (adjusted[tested] >= raw[tested]).all() and tested.sum() == 2  # of 7 pairings, one has 2 seed pairs
    columns = list(result.paired.columns)
    assert columns.index("accuracy_p_holm") == columns.index("accuracy_p") + 1  # side by side


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


@dataclass
class Written:
    """A report written once for the tests that look at it: what compare gave, the links, the files and each
    figure's text."""

    result: Comparison
    links: Links
    paths: list[Path]
    captions: dict[str, str]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Written:
    """The report of the grid and two more runs (an overlap override, an imported encoder), with natural
    predictions, written once (its figures are most of its CPU) with the text of each figure kept."""
    others = [run(13, 10, 0, pretrained="ca", pretraining_overlap="override:3"),
              run(14, 10, 0, pretrained="imported", pretraining_overlap="unknown", val_threshold_source=NO_POSITIVE)]
    runs = pd.concat([grid(), pd.DataFrame(others)])
    runs["train_digest"] = "a1b2c3d4e5f6" + "0" * 52
    result = compare(runs, [1, 10, 100], predictions=predictions, natural=natural, n_boot=100)
    links = Links(run=lambda r: f"http://mlflow/#/runs/{r}", version=lambda m, v: f"http://mlflow/#/models/{m}/{v}",
                  classifier_model="simclr-s2-classifier")
    captions: dict[str, str] = {}
    save = report._save

    def kept(fig: Figure, path: Path) -> Path:
        captions[path.name] = " ".join(t.get_text() for t in fig.findobj(Text)).replace("\n", " ")
        return save(fig, path)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(report, "_save", kept)
        paths = write_report(result, tmp_path_factory.mktemp("report") / "a", "scheme basic", links)
    return Written(result, links, paths, captions)


def test_each_figure_says_what_its_numbers_count(written: Written) -> None:
    """A bar carries "n=<runs>", a curve's point and a paired point a bare number: each caption says which."""
    captions = written.captions
    assert "n = runs (seeds) per bar" in captions["bars_f1.png"]
    assert "number = runs (seeds)" in captions["lines.png"] and "per bar" not in captions["lines.png"]
    assert "number = seed pairs" in captions["paired.png"]


def test_report_files_links_and_statuses(written: Written, tmp_path: Path) -> None:
    result, paths, folder = written.result, written.paths, written.paths[0].parent
    names = {p.name for p in paths}
    assert names == {"table.csv", "paired.csv", "pairs.csv", "duplicates.csv", "runs.csv", "table.md",
                     "bars_accuracy.png", "bars_f1.png", "lines.png", "paired.png", "reliability.png",
                     "report.html"}
    for p in paths:
        assert p.stat().st_size > 0
        if p.suffix == ".png":
            assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (folder / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 5
    assert "Holm p (F1)" in page and "natural MCC" in page and "test patches near train (%)" in page
    assert result.method in page
    assert '<a href="http://mlflow/#/runs/ben-12">' in page
    assert '<a href="http://mlflow/#/models/simclr-s2-classifier/12">v12</a>' in page
    assert '<a href="http://mlflow/#/models/simclr-s2-encoder/3">simclr-s2-encoder/3</a>' in page
    assert "leakage override: 3 test patches seen in pretraining" in page
    assert "pretraining data unknown" in page
    assert "natural threshold 0.5, no positive in natural validation (1 of 1 runs)" in page
    assert TEST_SET[:12] in page and "train a1b2c3d4e5f6" in page
    markdown = (folder / "table.md").read_text()
    assert "## Paired tests" in markdown and "## Duplicates" in markdown
    tested = int(result.paired[["accuracy_p", "f1_p"]].notna().to_numpy().sum())  # pairings of 2+ seed pairs
    assert tested == 2 and "Holm's adjustment over all 2 tests" in markdown
    assert "nan" not in markdown.lower().replace("natural", "")  # a pairing of one seed pair: "-", no p
    assert f"| ben (all) | 100 | 0 | {' | '.join(['n/a'] * 11)} | - | - |" in markdown
    table = pd.read_csv(folder / "table.csv")
    assert {"condition", "n_runs", "test_f1_low", "test_f1_high", "pretraining_overlap"} <= set(table.columns)
    again = write_report(result, tmp_path / "b", "scheme basic", written.links)
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(paths, again, strict=True))


def test_conditions_without_a_common_seed_are_not_paired(tmp_path: Path) -> None:
    runs = pd.DataFrame([run(1, 10, 5), run(2, 10, 0, SCRATCH), run(3, 10, 1, SCRATCH)])
    result = compare(runs, [10], predictions=predictions, n_boot=50)
    [row] = result.paired.to_dict("records")
    assert row["pairs"] == 0 and row["unpaired"] == "condition: 5; baseline: 0,1" and result.pairs.empty
    names = {p.name for p in write_report(result, tmp_path, "no pairs")}
    assert "paired.png" not in names
    assert "| 10 | ben | scratch | 0 | - | - |" in (tmp_path / "table.md").read_text()


def test_a_pairing_of_one_seed_pair_between_cells_of_two_is_said_and_untested() -> None:
    runs = pd.DataFrame([run(1, 10, 0), run(2, 10, 1), run(3, 10, 1, SCRATCH), run(4, 10, 2, SCRATCH)])
    result = compare(runs, [10], predictions=predictions, n_boot=50)
    [row] = result.paired.to_dict("records")
    assert row["pairs"] == 1 and math.isnan(row["f1_p"]) and math.isnan(row["accuracy_p_holm"])
    assert set(result.cells["n_runs"]) == {2} and result.method.endswith(ONE_SEED)


def test_a_counted_run_without_predictions_beside_runs_with_them_is_refused_naming_its_version():
    with pytest.raises(UserError, match=r"^version 12 \(run ben-12\) has no test predictions, which other"):
        compare(grid(), [10], predictions=lambda r: None if r == "ben-12" else predictions(r), n_boot=50)


def test_predictions_missing_only_from_an_uncounted_duplicate_or_from_every_run_are_no_refusal():
    """v2 is rerun by v12, which is the one counted; without any predictions the intervals are t over seeds."""
    kept = compare(grid(), [10], predictions=lambda r: None if r == "ben-2" else predictions(r), n_boot=50)
    assert "resampled" in kept.method
    assert compare(grid(), [10], predictions=lambda r: None, n_boot=50).method.startswith("Student t across seeds")


def test_input_bands_and_scaling_are_part_of_the_condition() -> None:
    """Two baselines that differ only in their input bands are two conditions, never one with the other listed
    as its superseded duplicate; so are two input scalings; a version older than the tags reads as the
    study's bands, z-scored."""
    study, every = ",".join(STUDY_BANDS), ",".join(BANDS)
    runs = pd.DataFrame([run(1, 10, 0, SCRATCH, bands=study), run(2, 10, 0, SCRATCH, bands=every),
                         run(3, 10, 1, SCRATCH)])  # no bands tag
    result = compare(runs, [10])
    assert result.conditions == ("scratch bands all", "scratch bands study")
    assert cell(result, "scratch bands study", 10)["versions"] == "1,3" and result.duplicates.empty
    runs = pd.DataFrame([run(1, 10, 0, SCRATCH, scaling=""), run(2, 10, 0, SCRATCH, scaling="reflectance/10000")])
    result = compare(runs, [10])
    assert result.conditions == ("scratch scaling bigearthnet-zscore", "scratch scaling reflectance/10000")
    assert result.duplicates.empty


def test_two_encoder_files_of_one_name_are_two_conditions() -> None:
    """moco/resnet18.pth and dino/resnet18.pth: one name, two contents (a file's version is its sha256), so two
    conditions labelled apart, neither listed as a rerun the other superseded."""
    moco, dino = (f"{FILE_ENCODER}{c * 64}" for c in "ab")
    file = {"pretrained": "resnet18", "pretraining_overlap": "unknown"}
    runs = pd.DataFrame([run(1, 10, 0, encoder_version=moco, **file), run(2, 10, 0, encoder_version=dino, **file)])
    result = compare(runs, [10])
    assert result.conditions == ("resnet18 encoder sha256:aaaaaaaaaaaa", "resnet18 encoder sha256:bbbbbbbbbbbb")
    assert result.duplicates.empty and set(result.cells["n_runs"]) == {1}


def test_a_condition_is_paired_only_with_baselines_of_its_bands(tmp_path: Path, monkeypatch) -> None:
    """A 12-band fine-tune against a 10-band baseline would measure the bands too, not pretraining alone: it is
    paired with a baseline of its bands, and where there is none, its row says so."""
    every = ",".join(BANDS)
    ssl4eo = {"pretrained": "ssl4eo", "bands": every, "scaling": "reflectance/10000", "pretraining_overlap": "unknown"}
    runs = pd.DataFrame([run(1, 10, 0), run(2, 10, 1), run(3, 10, 0, **ssl4eo), run(4, 10, 1, **ssl4eo),
                         run(5, 10, 0, SCRATCH), run(6, 10, 1, SCRATCH)])
    result = compare(runs, [10], predictions=predictions, n_boot=50)
    rows = result.paired.set_index("condition")
    assert (rows.loc["ben", "baseline"], rows.loc["ben", "pairs"]) == ("scratch", 2)
    assert (rows.loc["ssl4eo", "baseline"], rows.loc["ssl4eo", "pairs"]) == ("", 0)
    note = "not paired: no baseline of its bands all (the baselines: bands study)"
    assert rows.loc["ssl4eo", "unpaired"] == note and set(result.pairs["condition"]) == {"ben"}
    legend, save = [], report._save

    def kept(fig: Figure, path: Path) -> Path:
        legend.extend(t.get_text() for t in fig.findobj(Text) if path.name == "paired.png" and " - " in t.get_text())
        return save(fig, path)

    monkeypatch.setattr(report, "_save", kept)
    write_report(result, tmp_path, "bands")
    assert [t for t in legend if "\n" not in t] == ["ben - scratch"]  # the unpaired row draws and names nothing
    assert f"| 10 | ssl4eo |  | 0 | - | - | - | - | - | - | - | {note} |" in (tmp_path / "table.md").read_text()
    runs = pd.concat([runs, pd.DataFrame([run(7, 10, 0, SCRATCH, bands=every), run(8, 10, 1, SCRATCH, bands=every)])])
    result = compare(runs, [10], predictions=predictions, n_boot=50)
    assert list(zip(result.paired["condition"], result.paired["baseline"], result.paired["pairs"])) == [
        ("ben", "scratch bands study", 2), ("ssl4eo", "scratch bands all", 2)]


TILES = dict(zip(NAMES, [f"33UU{i // 60}" for i in range(N_PATCHES)], strict=True))  # 2 tiles of 3 blocks each


def by_tile(run_id: str) -> pd.DataFrame:
    """A tile split's predictions, as a classifier run writes them: each patch's tile, and the unit."""
    frame = predictions(run_id)
    return frame.assign(group=frame["name"].map(TILES), unit="tile")


def test_a_tile_split_s_predictions_are_resampled_by_tile_and_the_method_names_the_unit() -> None:
    """The groups a run records with their unit serve every run of its test set (ben-1's, written before the
    unit was, hold 12 km blocks); 2 tiles are few, which the method says."""
    runs = grid().assign(split_kind="tile")
    result = compare(runs, [10], predictions=lambda r: predictions(r) if r == "ben-1" else by_tile(r), n_boot=100)
    row = cell(result, BEN, 10)
    assert row["interval"] == "3 seeds x 2 groups"
    tiles = [TILES[n] for n in NAMES]
    expected = stats.interval(LABELS, np.stack([aligned(r) for r in ("ben-1", "ben-12", "ben-3")]), "accuracy",
                              tiles, n_boot=100)
    assert (row["test_accuracy_low"], row["test_accuracy_high"]) == pytest.approx((expected.low, expected.high),
                                                                                   abs=1e-12)
    assert set(result.paired["groups"]) == {2}
    assert ("6 spatial groups" not in result.method
            and f"2 spatial groups (tiles) of {N_PATCHES} test patches resampled" in result.method
            and "only 2 groups: a bootstrap over fewer than 20 understates the spread" in result.method)


def test_predictions_logged_before_their_unit_hold_12_km_blocks_which_the_method_says() -> None:
    result = compare(grid().assign(split_kind="tile"), [10], predictions=predictions, n_boot=50)
    assert ("6 spatial groups (12 km blocks, not the split's own tiles: predictions logged before those were "
            f"recorded) of {N_PATCHES} test patches") in result.method
    assert f"6 spatial groups (12 km blocks) of {N_PATCHES}" in compare(grid(), [10], predictions=predictions,
                                                                         n_boot=50).method


def test_a_fraction_without_a_baseline_says_so_in_the_paired_table() -> None:
    """A fine-tune at a fraction where no baseline ran is not left out of the paired table unseen."""
    runs = pd.DataFrame([run(1, 1, 0), run(2, 10, 0), run(3, 10, 0, SCRATCH)])
    rows = compare(runs, [1, 10], predictions=predictions, n_boot=50).paired.set_index("fraction")
    assert (rows.loc[1, "pairs"], rows.loc[1, "baseline"]) == (0, "")
    assert rows.loc[1, "unpaired"] == "not paired: no baseline at this fraction (baselines at 10 %)"
    assert rows.loc[10, "baseline"] == "scratch"


def test_the_reliability_diagram_shows_each_bins_patches(result, tmp_path: Path, monkeypatch) -> None:
    """At natural prevalence an upper bin holds a few patches: the diagram says how many each point stands for."""
    drawn: list[Figure] = []
    monkeypatch.setattr(report, "_save", lambda fig, path: drawn.append(fig) or path)
    report.plot_reliability(result, tmp_path / "reliability.png", "t")
    bins = result.reliability
    ben = bins[(bins["condition"] == BEN) & (bins["fraction"] == 10) & (bins["patches"] > 0)]
    counts = drawn[0].axes[len(set(bins["fraction"])):]  # the second row: one panel per fraction
    lines = [line for ax in counts for line in ax.get_lines() if line.get_label() == BEN]
    assert any(list(line.get_ydata()) == ben["patches"].tolist() for line in lines)


def test_each_cell_names_the_test_set_of_its_own_label_rule() -> None:
    """Two label rules draw two test sets: a cell's provenance names its runs' one, not the start of the
    comparison's list of both."""
    other = "abcd" * 16
    rules = {"min_fraction": "0.05", "test_digest": other}
    runs = pd.DataFrame([run(1, 10, 0), run(2, 10, 0, SCRATCH), run(3, 10, 0, **rules),
                         run(4, 10, 0, SCRATCH, **rules)])
    page = report.to_html(compare(runs, [10]), "t", [])
    assert page.count(f"test {TEST_SET[:12]}") == 2 and page.count(f"test {other[:12]}") == 2
    assert "test [min_fractio" not in page


def test_each_cell_shows_its_natural_prevalence_beside_pr_auc(result) -> None:
    """A PR-AUC at natural prevalence reads against the share irrigated (a predictor without skill scores it)."""
    assert cell(result, BEN, 10)["natural_prevalence"] == pytest.approx(0.1)  # natural(): 1 in 10 positive
    assert np.isnan(cell(result, S18, 10)["natural_prevalence"])  # no natural predictions
    assert np.isnan(cell(result, BEN, 100)["natural_prevalence"])  # no run
    assert "natural prevalence" in report.CELL_HEADER


def test_too_few_resamples_for_holm_to_call_any_difference_are_named() -> None:
    """The smallest bootstrap p is 2 / (n_boot + 1): times Holm's number of tests it can stay above 0.05, and
    then a large, consistent difference would read as none without a word why."""
    runs = pd.DataFrame([run(1, 10, 0), run(2, 10, 1), run(3, 10, 0, SCRATCH), run(4, 10, 1, SCRATCH)])
    few = compare(runs, [10], predictions=predictions, n_boot=50)  # 2 tests: 2 * 2 / 51 = 0.078
    assert few.paired[["accuracy_p", "f1_p"]].min().min() == pytest.approx(2 / 51)
    assert few.resolution == ("No difference can be called with n_boot=50: the smallest p it gives, 0.0392, times "
                              "the 2 tests Holm adjusts is 0.0784, not below 0.05; rerun with n_boot=80 or more")
    assert few.resolution in report.to_markdown(few, "t")
    assert compare(runs, [10], predictions=predictions, n_boot=80).resolution == ""  # 2 * 2 / 81 < 0.05
