"""compare over cross-validation folds, label rules and countries, on synthetic runs: folds of one
condition pool into one cell scored on the out-of-fold predictions (a seed missing a fold is left out),
the per-fold and per-country tables reach the report, label rules are labelled conditions, and fold
runs never mix with runs of another split."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text

from simclr_s2.errors import UserError
from simclr_s2.learning.metrics import binary_metrics, threshold_source
from simclr_s2.study import report, stats
from simclr_s2.study.comparison import compare, country_metrics
from simclr_s2.study.report import write_report

PER_FOLD = 40
FOLDS = {"0": "Portugal", "1": "Serbia"}  # leave one country out
BASE = {"stage": "finetune", "pretrained": "ben", "encoder_version": "simclr-s2-encoder/1",
        "arch": "resnet18", "trainable": "head2", "epochs": 5, "settings": "lr=0.001", "tuned": False,
        "split_kind": "country", "pretraining_overlap": "0"}
SCRATCH = {**BASE, "stage": "baseline", "pretrained": "scratch", "encoder_version": ""}


def fold_names(fold: str) -> list[str]:
    return [f"{FOLDS[fold]}_{i:03d}" for i in range(PER_FOLD)]


def predictions(run_id: str) -> pd.DataFrame:
    """A run's test predictions on its fold's patches (the fold is the run id's last part); 'ben' runs are
    right more often."""
    fold = run_id.rsplit("-", 1)[1]
    rng = np.random.default_rng(zlib.crc32(run_id.encode()))
    labels = np.arange(PER_FOLD) % 2
    right = rng.random(PER_FOLD) < (0.8 if run_id.startswith("ben") else 0.6)
    p = np.where(right == labels.astype(bool), 0.5 + 0.5 * rng.random(PER_FOLD), 0.5 * rng.random(PER_FOLD))
    return pd.DataFrame({"name": fold_names(fold), "label": labels, "probability": p,
                         "group": [f"{fold}/{i // 10}" for i in range(PER_FOLD)]})


def run(version: int, seed: int, fold: str, base: dict = BASE, **changes) -> dict:
    row = {**base, **changes, "version": version, "fraction": 10, "seed": seed, "fold": fold,
           "held_out": FOLDS[fold], "test_digest": f"{fold}" * 64}
    row["run_id"] = f"{row['pretrained']}-{version}-{fold}"
    frame = predictions(row["run_id"])
    m = binary_metrics(frame["label"].to_numpy(), frame["probability"].to_numpy())
    index = pd.DataFrame({"name": frame["name"], "country": FOLDS[fold]})
    return {**row, "test_accuracy": m["accuracy"], "test_f1": m["f1"], "test_auc": m["auc"],
            **country_metrics(index, frame["name"], frame["label"].to_numpy(),
                              frame["probability"].to_numpy())}


def folded() -> pd.DataFrame:
    """ben and scratch, seeds 0 and 1, both folds; ben seed 2 has fold 0 only."""
    return pd.DataFrame([run(v, seed, fold, base) for v, (base, seed, fold) in enumerate(
        (b, s, f) for b in (BASE, SCRATCH) for s in (0, 1) for f in FOLDS)] + [run(20, 2, "0")])


@pytest.fixture(scope="module")
def result():
    return compare(folded(), [10], predictions=predictions, n_boot=200)


def cell(result, condition: str) -> dict:
    [row] = result.cells[result.cells["condition"] == condition].to_dict("records")
    return row


def pooled(pretrained: str, seeds: list[int]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Labels, probabilities (k, n) and groups of the seeds' out-of-fold predictions, in name order."""
    runs = folded()
    frames = [pd.concat(map(predictions,
                            runs["run_id"][(runs["pretrained"] == pretrained) & (runs["seed"] == s)]))
              .sort_values("name") for s in seeds]
    return (frames[0]["label"].to_numpy(), np.stack([f["probability"].to_numpy() for f in frames]),
            frames[0]["group"].tolist())


def test_folds_pool_into_one_condition_scored_out_of_fold(result) -> None:
    assert result.conditions == ("ben", "scratch")
    ben = cell(result, "ben")
    assert (ben["n_runs"], ben["seeds"], ben["interval"]) == (2, "0,1", "2 seeds x 8 groups")
    labels, probabilities, groups = pooled("ben", [0, 1])
    expected = stats.interval(labels, probabilities, "f1", groups, n_boot=200)
    assert (ben["test_f1_low"], ben["test_f1_high"]) == pytest.approx((expected.low, expected.high),
                                                                       abs=1e-12)
    assert ben["test_f1_mean"] == pytest.approx(
        np.mean([stats.metric("f1", labels, p) for p in probabilities]))
    assert "folds pooled" in result.method and "8 spatial groups (12 km blocks) of 80 test patches" in result.method
    assert result.test_digest == f"0:{'0' * 12} 1:{'1' * 12}"
    [pair] = result.paired.to_dict("records")
    assert (pair["condition"], pair["baseline"], pair["pairs"], pair["groups"]) == ("ben", "scratch", 2, 8)


def test_a_seed_missing_a_fold_is_left_out(result) -> None:
    assert "2" not in cell(result, "ben")["seeds"].split(",")
    ben = result.folds[result.folds["condition"] == "ben"]
    assert ben[["fold", "held_out", "seeds"]].values.tolist() == [["0", "Portugal", "0,1,2"],
                                                                   ["1", "Serbia", "0,1"]]


def test_a_seed_with_a_fold_at_the_default_threshold_counts_once() -> None:
    """A pooled seed counts as kept at the default threshold when any of its folds' natural validation sets
    could not choose one, and once however many could not: seed 0 both folds, seed 1 its second."""
    runs = folded()
    kept = runs["run_id"].isin(["ben-0-0", "ben-1-1", "ben-3-1"])
    runs["val_threshold_source"] = np.where(kept, threshold_source(np.zeros(1)), "")
    ben = cell(compare(runs, [10]), "ben")
    assert (ben["default_threshold_runs"], ben["n_runs"]) == (2, 2)


def test_per_fold_and_per_country_tables(result, tmp_path: Path) -> None:
    runs = folded()
    fold_1 = runs[(runs["pretrained"] == "scratch") & (runs["fold"] == "1")]
    [row] = result.folds[(result.folds["condition"] == "scratch")
                         & (result.folds["fold"] == "1")].to_dict("records")
    assert row["test_accuracy_mean"] == pytest.approx(fold_1["test_accuracy"].mean())
    [serbia] = result.countries[(result.countries["condition"] == "scratch")
                                & (result.countries["country"] == "Serbia")].to_dict("records")
    assert (serbia["n_runs"], serbia["patches"]) == (2, PER_FOLD)
    assert serbia["f1_mean"] == pytest.approx(fold_1["test_f1"].mean())
    files = {p.name for p in write_report(result, tmp_path, "folds")}
    assert {"folds.csv", "countries.csv"} <= files
    page = (tmp_path / "report.html").read_text()
    assert "<h2>Folds</h2>" in page and "<h2>Countries</h2>" in page and "Portugal" in page


def test_every_caption_fits_its_figure(result, tmp_path: Path, monkeypatch) -> None:
    """The pooled folds' interval method is the longest caption: every line of every figure's text stays
    inside the figure it is drawn on (it ran past the right edge of bars_f1.png)."""
    saved: list[Figure] = []
    save = report._save
    monkeypatch.setattr(report, "_save", lambda fig, path: saved.append(fig) or save(fig, path))
    write_report(result, tmp_path, "scheme basic")
    assert len(saved) == 4 and any("folds pooled" in t.get_text() for f in saved for t in f.findobj(Text))
    for fig in saved:
        renderer = FigureCanvasAgg(fig).get_renderer()
        for text in (t for t in fig.findobj(Text) if t.get_visible() and t.get_text()):
            box = text.get_window_extent(renderer)
            assert fig.bbox.x0 <= box.x0 and box.x1 <= fig.bbox.x1, text.get_text()
            assert fig.bbox.y0 <= box.y0 and box.y1 <= fig.bbox.y1, text.get_text()


def test_without_predictions_a_seed_is_the_mean_over_its_folds() -> None:
    result = compare(folded(), [10])
    runs = folded()
    ben = runs[(runs["pretrained"] == "ben") & (runs["seed"] < 2)]
    assert cell(result, "ben")["test_accuracy_mean"] == pytest.approx(ben["test_accuracy"].mean())
    assert result.method.endswith("each seed the mean over its folds")


def test_label_rules_are_labelled_conditions() -> None:
    rows = [run(1, 0, "0", min_fraction="0.05", ambiguous="exclude"),
            run(2, 0, "0", min_fraction="0.5", ambiguous="exclude"),
            run(3, 0, "0", SCRATCH, min_fraction="0.05", ambiguous="exclude")]
    result = compare(pd.DataFrame(rows), [10], predictions=predictions, n_boot=50)
    assert result.conditions == ("ben min_fraction 0.05", "ben min_fraction 0.5", "scratch")
    assert set(result.cells["min_fraction"]) == {"0.05", "0.5"}


def test_each_label_rule_has_its_own_test_set_and_pairs_within_it() -> None:
    """Rule 0.5 is scored on fold 1's patches and digest: a test set of its own, paired with its own
    baseline."""
    loose, strict = {"min_fraction": "0.5", "ambiguous": "negative"}, {"min_fraction": "0.05", "ambiguous": "negative"}
    rows = [run(1 + 4 * seed + i, seed, fold, base, **rule) for seed in (0, 1)  # two seed pairs: a paired test
            for i, (fold, base, rule) in enumerate([("0", BASE, strict), ("1", BASE, loose), ("0", SCRATCH, strict),
                                                    ("1", SCRATCH, loose)])]
    result = compare(pd.DataFrame(rows).assign(fold=""), [10], predictions=predictions, n_boot=50)
    assert result.test_digest == (f"[min_fraction 0.05 ambiguous negative] {'0' * 64} "
                                  f"[min_fraction 0.5 ambiguous negative] {'1' * 64}")
    assert result.paired[["condition", "baseline"]].values.tolist() == [
        ["ben min_fraction 0.05", "scratch min_fraction 0.05"],
        ["ben min_fraction 0.5", "scratch min_fraction 0.5"]]
    assert result.paired["f1_p_holm"].notna().all()


def test_fold_runs_do_not_mix_with_other_splits() -> None:
    other = {**run(30, 0, "0"), "fold": "", "held_out": ""}
    for row in (other, {**other, "min_fraction": "0.5"}):  # under another label rule too
        with pytest.raises(UserError, match="folds and runs without a fold.*test_set=folds"):
            compare(pd.DataFrame([*folded().to_dict("records"), row]), [10])
    with pytest.raises(UserError, match=r"runs: fold \['x'\]: expected a fold number"):
        compare(folded().assign(fold="x"), [10])


def test_country_metrics_need_a_country_column() -> None:
    names = ["a", "b", "c"]
    index = pd.DataFrame({"name": names, "country": ["Austria", "Austria", None]})
    found = country_metrics(index, names, np.array([1, 0, 1]), np.array([0.9, 0.2, 0.1]))
    assert found == {"test_country_Austria_accuracy": 1.0, "test_country_Austria_f1": 1.0,
                     "test_country_Austria_patches": 2.0, "test_country_unknown_accuracy": 0.0,
                     "test_country_unknown_f1": 0.0, "test_country_unknown_patches": 1.0}
    assert country_metrics(index.drop(columns="country"), names, np.array([1, 0, 1]),
                           np.array([0.9, 0.2, 0.1])) == {}
