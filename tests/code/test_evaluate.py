"""Evaluation arithmetic, checked by hand."""

import numpy as np
import pytest

from melanoma.core.decision import predicted_classes
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


def test_decision_weights_divide_by_the_training_share():
    from melanoma.core.decision import predicted_classes, prior_weights

    nev, df = CLASS_NAMES.index("nevus"), CLASS_NAMES.index("dermatofibroma")
    drawn = {name: 9 for name in CLASS_NAMES} | {"nevus": 99}
    w = prior_weights(drawn, 1.0)
    assert max(w) == 1.0 and w[nev] == pytest.approx(0.1)  # (9 + 1) / (99 + 1)
    assert prior_weights(drawn, 0.0) == [1.0] * 9
    # A class training never drew is never given, whatever the power (it had the largest weight).
    once = prior_weights({"nevus": 5, "melanoma": 1}, 1.0)
    assert once[df] == 0.0 and once[CLASS_NAMES.index("melanoma")] == 1.0 and once[nev] == pytest.approx(2 / 6)
    assert prior_weights({"nevus": 5}, 0.0)[df] == 0.0 and prior_weights({}, 1.0) == [1.0] * 9
    undrawn = np.full((1, 9), 0.01)
    undrawn[0, [nev, df]] = 0.5, 0.42
    assert list(predicted_classes(undrawn, once)) == [nev]
    probs = np.zeros((2, 9))
    probs[0, [nev, df]] = 0.7, 0.3  # a nevus ten times as often drawn as a dermatofibroma: the latter wins
    probs[1, [nev, df]] = 0.97, 0.03
    assert list(predicted_classes(probs)) == [nev, nev]
    assert list(predicted_classes(probs, w)) == [df, nev]


def test_fitted_decision_finds_the_rare_class_that_the_most_probable_class_misses():
    """Calibrated posteriors of a 9:1 two-class problem (one-dimensional Gaussian evidence): the most
    probable class almost never names the rare class; dividing by the training shares (power 1) is
    the balanced-accuracy optimum, and the fit finds it on these images."""
    rng = np.random.default_rng(0)
    nev, df = CLASS_NAMES.index("nevus"), CLASS_NAMES.index("dermatofibroma")
    y = np.array([nev] * 1800 + [df] * 200)
    x = rng.normal(np.where(y == df, 1.5, 0.0), 1.0)
    odds = (0.1 / 0.9) * np.exp(1.5 * x - 1.125)  # prior odds times the likelihood ratio
    probs = np.zeros((len(y), 9))
    probs[:, df] = odds / (1 + odds)
    probs[:, nev] = 1 - probs[:, df]
    drawn = {"nevus": 1800, "dermatofibroma": 200}
    power, weights = evaluate.fit_decision(y, probs, drawn)
    m = evaluate.metrics(y, probs, weights=weights)
    assert 0.75 <= power <= 1.25
    assert m["balanced_accuracy_most_probable"] == evaluate.metrics(y, probs)["balanced_accuracy"]
    assert m["balanced_accuracy"] > m["balanced_accuracy_most_probable"] + 0.1
    assert m["per_class"]["dermatofibroma"]["recall"] > 0.6
    assert evaluate.fit_decision(y[:1801], probs[:1801], drawn) is None  # one dermatofibroma: nothing to fit on


def test_decision_is_fitted_on_the_gates_per_source_figure():
    """The gate scores the mean of per-source balanced accuracies; a power fitted on the pooled figure
    serves the largest source and lost the gate for a version whose pooled figure was higher (power
    1.125 there). Here source b's dermatofibromas are overcalled: the pooled fit follows source a
    (power 0.75), the per-source fit (0.5) gives the higher gate figure."""
    rng = np.random.default_rng(0)
    nev, df = CLASS_NAMES.index("nevus"), CLASS_NAMES.index("dermatofibroma")

    def source(n_nev: int, n_df: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
        y = np.array([nev] * n_nev + [df] * n_df)
        odds = (0.1 / 0.9) * np.exp(1.5 * rng.normal(np.where(y == df, 1.5, 0.0), 1.0) - 1.125 + shift)
        p = np.zeros((len(y), 9))
        p[:, df] = odds / (1 + odds)
        p[:, nev] = 1 - p[:, df]
        return y, p

    (ya, pa), (yb, pb) = source(1800, 200, 0.0), source(100, 100, 2.0)
    y, probs, sources = np.concatenate([ya, yb]), np.concatenate([pa, pb]), ["a"] * 2000 + ["b"] * 200
    drawn = {"nevus": 1800, "dermatofibroma": 200}
    pooled_power, pooled = evaluate.fit_decision(y, probs, drawn)
    power, weights = evaluate.fit_decision(y, probs, drawn, sources)
    assert (pooled_power, power) == (0.75, 0.5)
    ours, theirs = (evaluate.gate_figure(y, predicted_classes(probs, w), sources)[0] for w in (weights, pooled))
    assert ours > theirs + 0.01
    # a source below MIN_SOURCE_IMAGES does not count; with one source left the figure is the pooled one
    n = 2000 + evaluate.MIN_SOURCE_IMAGES - 1
    assert evaluate.fit_decision(y[:n], probs[:n], drawn, sources[:n]) == evaluate.fit_decision(y[:n], probs[:n], drawn)


def test_melanoma_rates_by_hand():
    flag = np.array([True, True, False, False, True, False])
    is_mel = np.array([True, False, True, True, False, False])
    # 1 of 3 melanomas flagged; 1 of 3 others left unflagged.
    assert evaluate.melanoma_rates(flag, is_mel) == pytest.approx((1 / 3, 1 / 3))
    assert evaluate.melanoma_rates(flag[is_mel], is_mel[is_mel]) == (pytest.approx(1 / 3), None)
    assert evaluate.melanoma_rates(flag[~is_mel], is_mel[~is_mel]) == (None, pytest.approx(1 / 3))
