"""melanoma.ml.clinic: paired intervals of melanoma-AUC changes, one run and several."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.ml import clinic


def _scores(rng: np.random.Generator, positive: np.ndarray, separation: float) -> np.ndarray:
    return rng.normal(size=len(positive)) + separation * positive


def test_one_pair_is_the_paired_interval() -> None:
    rng = np.random.default_rng(1)
    positive = rng.random(300) < 0.2
    s, b = _scores(rng, positive, 1.5), _scores(rng, positive, 1.0)
    assert clinic.mean_auc_difference_interval(positive, [(s, b)]) == clinic.auc_difference_interval(positive, s, b)


def test_the_mean_change_of_several_runs_is_bracketed_around_their_mean() -> None:
    rng = np.random.default_rng(2)
    positive = rng.random(400) < 0.2
    base = _scores(rng, positive, 1.0)
    better, same = base + 1.5 * positive, base.copy()
    gain = roc_auc_score(positive, better) - roc_auc_score(positive, base)
    low, high = clinic.mean_auc_difference_interval(positive, [(better, base), (same, base)])
    # One run gains, one changes nothing: the pooled interval sits around half the gain, above zero
    # and below the gaining run's own interval.
    assert low < gain / 2 < high
    assert 0 < low
    alone = clinic.auc_difference_interval(positive, better, base)
    assert alone is not None and high < alone[1]


def test_every_pair_is_scored_on_the_same_resamples() -> None:
    rng = np.random.default_rng(3)
    positive = rng.random(400) < 0.2
    base = _scores(rng, positive, 1.0)
    better = base + positive
    # A gain and the same change reversed cancel on every resample only if both pairs share them.
    assert clinic.mean_auc_difference_interval(positive, [(better, base), (base, better)]) == (0.0, 0.0)


def test_without_both_classes_there_is_no_interval() -> None:
    positive = np.zeros(50, dtype=bool)
    s = np.linspace(0, 1, 50)
    assert clinic.mean_auc_difference_interval(positive, [(s, s[::-1])]) is None


def test_a_percentile_interval_leaves_out_undefined_resamples_and_needs_half_of_them() -> None:
    values = np.concatenate([np.linspace(0, 1, clinic.BOOTSTRAP // 2), np.full(clinic.BOOTSTRAP // 2, np.nan)])
    assert clinic.percentile_interval(values) == pytest.approx((0.025, 0.975))
    assert clinic.percentile_interval(values[1:]) is None  # one defined resample short of half
