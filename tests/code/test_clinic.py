"""melanoma.ml.clinic: paired intervals of melanoma-AUC changes, one run and several."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import clinic, evaluate


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


def test_two_versions_are_paired_case_by_case_whatever_order_or_cases_they_were_measured_on():
    """The site gate's intervals pair each case with itself: measured in other orders, and with a case
    only the new version could score, they are the intervals of the aligned pairs."""
    from melanoma.lifecycle.sites import Measured, paired_intervals

    rng = np.random.default_rng(5)
    diagnoses = ["melanoma"] * 15 + ["nevus"] * 30 + ["basal cell carcinoma"] * 10 + ["other"] * 3
    n = len(diagnoses)
    is_mel = np.asarray([d == "melanoma" for d in diagnoses])
    old_p = np.clip(0.3 * is_mel + rng.normal(0.3, 0.15, n), 0, 1)
    new_p = np.clip(old_p + rng.normal(0, 0.05, n), 0, 1)
    truth = np.asarray([CLASS_NAMES.index(d) if d in CLASS_NAMES else 0 for d in diagnoses])
    nevus = CLASS_NAMES.index("nevus")
    new_c = np.where(np.arange(n) % 4 == 0, nevus, truth)  # a quarter of the cases called nevus
    # The new version measured in a shuffled order plus one case of its own; the old one reversed.
    order = [int(i) for i in rng.permutation(n)]
    new = Measured(
        "new",
        {},
        diagnoses=[diagnoses[i] for i in order] + ["melanoma"],
        p_melanoma=np.append(new_p[order], 0.99),
        sha256=[f"{i:04x}" for i in order] + ["ffff"],
        classes=np.append(new_c[order], 0),
    )
    back = list(range(n))[::-1]
    old = Measured(
        "old", {}, diagnoses=[diagnoses[i] for i in back], p_melanoma=old_p[back],
        sha256=[f"{i:04x}" for i in back], classes=truth[back],
    )  # fmt: skip
    got = paired_intervals(new, old)

    y, mine, theirs = truth[order], new_c[order], truth[order]
    nine = np.asarray([diagnoses[i] in CLASS_NAMES for i in order])
    expected_bacc = clinic.bootstrap_interval(
        lambda idx: (
            evaluate.balanced_accuracy(y[nine][idx], mine[nine][idx])
            - evaluate.balanced_accuracy(y[nine][idx], theirs[nine][idx])
        ),
        int(nine.sum()),
    )
    assert got["melanoma_auc"] == clinic.auc_difference_interval(is_mel[order], new_p[order], old_p[order])
    assert got["balanced_accuracy"] == expected_bacc
    assert expected_bacc is not None and expected_bacc[1] < 0
    assert clinic.change_reading(-0.2, expected_bacc).endswith(
        "worse beyond what another draw of these cases would explain"
    )


def test_a_stratified_bootstrap_resamples_each_stratum_within_itself() -> None:
    """Each resample keeps every stratum's size and draws only its own cases; without strata the draws
    are the plain bootstrap's, as before strata existed."""
    strata = ["a"] * 7 + ["b"] * 30 + ["c"] * 3
    labels = np.asarray(strata)
    seen: list[np.ndarray] = []

    def stat(idx: np.ndarray) -> float:
        seen.append(idx)
        return float(len(idx))

    assert clinic.bootstrap_interval(stat, len(strata), strata=strata) == (40.0, 40.0)
    for idx in seen:
        assert [int((labels[idx] == s).sum()) for s in "abc"] == [7, 30, 3]
    assert set(seen[0][:7]) <= set(range(7)) and len({tuple(i) for i in seen}) > 1
    rng = np.random.default_rng(0)
    seen.clear()
    clinic.bootstrap_interval(stat, 40)
    assert all(np.array_equal(idx, rng.integers(0, 40, 40)) for idx in seen)
    seen.clear()
    clinic.bootstrap_interval(stat, 40, strata=["one"] * 40)
    rng = np.random.default_rng(0)
    assert all(np.array_equal(idx, rng.integers(0, 40, 40)) for idx in seen)


def test_a_change_is_read_against_its_interval():
    assert clinic.change_reading(-0.01, (-0.03, 0.01)).endswith("a change these cases cannot tell from none")
    better = clinic.change_reading(0.02, (0.005, 0.04))
    assert better.endswith("better beyond what another draw of these cases would explain")
    assert clinic.change_reading(-0.02, (-0.04, -0.001)).startswith("change -0.0200, paired 95 % interval -0.0400 to")
    assert clinic.change_reading(-0.02, None) == "change -0.0200, too few cases for an interval"
