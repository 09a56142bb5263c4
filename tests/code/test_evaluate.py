"""Evaluation arithmetic, checked by hand."""

import numpy as np
import pytest

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import evaluate

MEL = CLASS_NAMES.index("melanoma")


def test_auc_by_hand():
    pos = np.array([1, 1, 1, 0, 0, 0], bool)
    scores = np.array([0.9, 0.8, 0.3, 0.8, 0.1, 0.2])
    # 9 positive-negative pairs: 3 + (2 + half a tie) + 2 = 7.5 won
    assert evaluate.roc_auc(pos, scores) == pytest.approx(7.5 / 9)
    assert evaluate.roc_auc(pos, pos.astype(float)) == 1.0
    assert evaluate.roc_auc(np.ones(3, bool), np.ones(3)) is None


def test_roc_curve_ends_at_corners():
    pos = np.array([1, 0, 1, 0], bool)
    fpr, tpr, thr = evaluate.roc_curve(pos, np.array([0.9, 0.8, 0.7, 0.1]))
    assert (fpr[0], tpr[0]) == (0, 0) and (fpr[-1], tpr[-1]) == (1, 1)
    assert list(tpr) == [0, 0.5, 0.5, 1, 1]


def test_threshold_reaches_target_sensitivity():
    y = np.array([MEL] * 10 + [0] * 10)
    probs = np.zeros((20, 9))
    probs[:10, MEL] = np.linspace(0.95, 0.05, 10)  # melanomas: 0.95 ... 0.05
    probs[10:, MEL] = 0.5
    t = evaluate.melanoma_threshold(y, probs, 0.85)
    # 9 of 10 melanomas (0.85 rounded up) must be at or above the threshold
    assert t == pytest.approx(probs[8, MEL])
    m = evaluate.metrics(y, probs, t)
    assert m["melanoma_sensitivity_at_threshold"] == pytest.approx(0.9)
    assert m["melanoma_specificity_at_threshold"] == 0.0  # all non-melanomas sit at 0.5 > t
    assert evaluate.melanoma_threshold(np.zeros(3, int), probs[:3]) is None


def test_metrics_by_hand():
    y = np.array([3, 3, 3, 4, 4, 0])
    pred = np.array([3, 3, 4, 4, 3, 0])
    m = evaluate.metrics(y, np.eye(9)[pred])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)
    assert m["melanoma_sensitivity"] == pytest.approx(2 / 3)
    assert m["melanoma_specificity"] == pytest.approx(2 / 3)
    assert m["per_class"]["melanoma"]["precision"] == pytest.approx(2 / 3)
    assert m["confusion_matrix"][3][4] == 1
    present = [c["auc"] for c in m["per_class"].values() if c["auc"] is not None]
    assert m["per_class"]["nevus"]["auc"] is not None and m["macro_auc"] == pytest.approx(np.mean(present))


def test_class_weights_favour_small_classes():
    from melanoma.ml.rebalance import class_weights

    w = class_weights({"melanoma": 400, "nevus": 100, "dermatofibroma": 0})
    assert w[CLASS_NAMES.index("dermatofibroma")] == 0
    assert w[CLASS_NAMES.index("nevus")] == pytest.approx(2 * w[MEL])
    assert w[w > 0].mean() == pytest.approx(1.0)


def test_threshold_for_sensitivity_is_not_fooled_by_floating_point():
    """14 of 25 positives: 0.56 * 25 is 14.000000000000002 in floats, which must not ask for 15."""
    scores = np.arange(25)[::-1] / 100  # 0.24, 0.23, ..., 0.00
    assert evaluate.threshold_for_sensitivity(scores, 0.56) == 0.11  # the 14th highest
    assert evaluate.threshold_for_sensitivity(scores, 0.57) == 0.10
    assert evaluate.threshold_for_sensitivity(scores, 1.0) == 0.0
    assert evaluate.threshold_for_sensitivity(np.zeros(0), 0.9) is None
