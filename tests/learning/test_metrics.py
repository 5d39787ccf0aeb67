import subprocess
import sys
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from simclr_s2.learning.metrics import (
    accuracy,
    binary_metrics,
    f1,
    near_constant,
    pr_curve,
    pr_figure,
    reliability,
    roc_auc,
    roc_curve,
    save_confusion_matrix,
    save_curves,
)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    p = np.round(np.clip(y * 0.3 + rng.random(200) * 0.7, 0, 1), 2)  # rounded: ties on purpose
    m = binary_metrics(y, p)
    predicted = p >= 0.5
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, predicted))
    assert m["precision"] == pytest.approx(skm.precision_score(y, predicted, zero_division=0))
    assert m["recall"] == pytest.approx(skm.recall_score(y, predicted))
    assert m["f1"] == pytest.approx(skm.f1_score(y, predicted))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(skm.average_precision_score(y, p))
    tn, fp, fn, tp = skm.confusion_matrix(y, predicted).ravel()
    assert (m["tn"], m["fp"], m["fn"], m["tp"]) == (tn, fp, fn, tp)


def test_pr_curve_matches_scikit_learn():
    y = np.array([0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.4, 0.4, 0.8, 0.2, 0.4])
    precision, recall, _ = pr_curve(y, p)
    sk_p, sk_r, _ = skm.precision_recall_curve(y, p)
    np.testing.assert_allclose(precision, sk_p)
    np.testing.assert_allclose(recall, sk_r)


def test_roc_curve_keeps_every_threshold_of_scikit_learn():
    y = np.array([0, 1, 1, 0, 1, 0, 1])
    p = np.array([0.1, 0.9, 0.4, 0.4, 0.8, 0.2, 0.4])
    fpr, tpr = roc_curve(y, p)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_a_stack_of_sets_is_scored_row_by_row():
    rng = np.random.default_rng(4)
    y = rng.random((6, 50)) < 0.4
    y[0] = False  # one class only: AUC undefined
    p = np.round(rng.random((6, 50)), 1)
    rows = [binary_metrics(a, b) for a, b in zip(y, p, strict=True)]
    np.testing.assert_allclose(accuracy(y, p), [m["accuracy"] for m in rows])
    np.testing.assert_allclose(f1(y, p), [m["f1"] for m in rows])
    np.testing.assert_allclose(roc_auc(y, p), [m["auc"] for m in rows])
    assert np.isnan(roc_auc(y, p)[0])


@pytest.mark.parametrize("label", [0, 1])
def test_one_class_sets_keep_their_values_without_warnings(label):
    y, p = np.full(5, label), np.array([0.1, 0.2, 0.2, 0.7, 0.9])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = binary_metrics(y, p)
        fpr, tpr = roc_curve(y, p)
        _, recall, _ = pr_curve(y, p)
    assert np.isnan(m["auc"])
    assert m["pr_auc"] == 1.0 if label else np.isnan(m["pr_auc"])  # no positive: recall undefined
    np.testing.assert_array_equal(fpr if label else tpr, np.zeros(5))  # the absent class's rate: 0, not NaN
    np.testing.assert_array_equal(fpr if not label else tpr, [0, 0.2, 0.4, 0.8, 1])
    np.testing.assert_array_equal(recall, [1, 0.8, 0.4, 0.2, 0] if label else np.zeros(5))


def test_undefined_metrics_are_zero_or_nan():
    m = binary_metrics(np.zeros(4), np.zeros(4))
    assert m["precision"] == 0 and m["recall"] == 0 and m["f1"] == 0
    assert np.isnan(m["auc"])


def test_plots_are_written(tmp_path):
    y, p = np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.4, 0.1])
    paths = [save_confusion_matrix(y, p, tmp_path, 0.3), *save_curves(y, p, tmp_path)]
    assert [p.name for p in paths] == ["confusion_matrix.png", "roc.png", "pr.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_the_pr_plot_draws_the_prevalence_a_predictor_without_skill_scores():
    y = np.arange(200) % 20 == 0  # 5 % positive, as at natural prevalence
    p = np.linspace(0, 1, 200)
    [ax] = pr_figure(y, p).axes
    flat = [line for line in ax.get_lines() if len(set(line.get_ydata())) == 1]
    assert [float(line.get_ydata()[0]) for line in flat] == [0.05]
    assert "prevalence 0.050" in flat[0].get_label()


def test_a_diverged_models_scores_give_nan_ranking_metrics_not_an_error():
    m = binary_metrics(np.array([0, 1, 1, 0]), np.array([0.1, np.nan, 0.8, 0.3]))
    assert np.isnan(m["pr_auc"]) and np.isfinite(m["accuracy"])


@pytest.mark.parametrize("seed", [0, 1])
def test_mcc_balanced_accuracy_and_brier_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = rng.random(300) < 0.1  # natural prevalence: the classes far apart in size
    p = np.clip(0.6 * y + rng.random(300) * 0.6, 0, 1)
    m = binary_metrics(y, p)
    assert m["mcc"] == pytest.approx(skm.matthews_corrcoef(y, p >= 0.5))
    assert m["balanced_accuracy"] == pytest.approx(skm.balanced_accuracy_score(y, p >= 0.5))
    assert m["brier"] == pytest.approx(skm.brier_score_loss(y, p))


@pytest.mark.parametrize("label", [0, 1])
def test_balanced_accuracy_of_a_set_of_one_class_is_scikit_learns(label):
    """A small natural-prevalence set can hold no positive: its balanced accuracy is the one rate it has."""
    y, p = np.full(50, label), np.linspace(0, 1, 50)
    with warnings.catch_warnings(action="ignore", category=UserWarning):  # scikit-learn: a class is absent
        expected = skm.balanced_accuracy_score(y, p >= 0.5)
    assert binary_metrics(y, p)["balanced_accuracy"] == pytest.approx(expected) == 0.5


def test_calibration_error_and_reliability_by_hand():
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.15, 0.15, 0.95, 0.95])  # bins 0, 1, 1, 9, 9
    mean, observed, counts = reliability(y, p)
    assert counts.tolist() == [1, 2, 0, 0, 0, 0, 0, 0, 0, 2]
    assert mean[[0, 1, 9]] == pytest.approx([0.05, 0.15, 0.95]) and np.isnan(mean[2])
    assert observed[[0, 1, 9]] == pytest.approx([0, 0.5, 1])
    # (1 x 0.05 + 2 x 0.35 + 2 x 0.05) / 5
    assert binary_metrics(y, p)["ece"] == pytest.approx(0.17)


def test_a_constant_or_near_constant_predictor_is_flagged():
    y = np.arange(200) % 2
    assert near_constant(np.full(200, 0.9)) and near_constant(np.r_[np.full(198, 0.9), 0.1, 0.2])
    assert near_constant(np.linspace(0.501, 0.509, 200))  # every patch positive
    assert not near_constant(np.where(y == 1, 0.8, 0.2))
    assert not near_constant(np.where(y == 1, 0.505, 0.495))  # close together, yet two classes at 0.5
    assert binary_metrics(y, np.full(200, 0.9))["near_constant"] == 1.0


def test_tied_ranks_are_scipys_rankdata_without_loading_it():
    from scipy.stats import rankdata

    from simclr_s2.learning.metrics import tied_ranks

    rng = np.random.default_rng(0)
    stacks = [rng.integers(0, 4, size=(50, 9)).astype(np.float64), rng.random((3, 20)), np.array([[0.5]]),
              np.array([[1.0, np.nan, 0.0], [2.0, 2.0, 1.0]])]
    for x in stacks:
        np.testing.assert_array_equal(tied_ranks(x), rankdata(x, axis=-1))
    code = ("import sys, simclr_s2.learning.metrics, simclr_s2.study.stats; "
            "print(sorted({'scipy.stats', 'sklearn', 'matplotlib'} & set(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"  # a training's start pays for none of them


def test_a_trainings_epoch_metrics_leave_out_pr_auc_and_only_it():
    y, p = np.array([0, 1, 1, 0, 1]), np.array([0.2, 0.7, 0.4, 0.4, 0.9])
    full = binary_metrics(y, p)
    assert binary_metrics(y, p, with_pr_auc=False) == {k: v for k, v in full.items() if k != "pr_auc"}
