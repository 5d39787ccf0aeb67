import numpy as np
import pytest
from sklearn import metrics as skm

from simclr_s2.metrics import binary_metrics, pr_curve, save_plots


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


def test_undefined_metrics_are_zero_or_nan():
    m = binary_metrics(np.zeros(4), np.zeros(4))
    assert m["precision"] == 0 and m["recall"] == 0 and m["f1"] == 0
    assert np.isnan(m["auc"])


def test_plots_are_written(tmp_path):
    paths = save_plots(np.array([0, 1, 1, 0]), np.array([0.2, 0.7, 0.4, 0.1]), tmp_path)
    assert [p.name for p in paths] == ["confusion_matrix.png", "roc.png", "pr.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
