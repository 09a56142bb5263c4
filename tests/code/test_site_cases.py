"""bench.site_cases: which control each site version is measured against, each stage over its runs,
its operating points, its plot."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from bench.site_cases import draw, operating_points, pair_controls, plot, runs_interval, stage_means
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import clinic
from melanoma.ml.clinic import MELANOMA

NEVUS = CLASS_NAMES.index("nevus")


def _row(role: str, seed: int, epochs: int, trained: int = 0, auc: float = 0.7) -> dict:
    return {
        "role": role,
        "seed": seed,
        "epochs": epochs,
        "site_cases": trained,
        "site_cases_trained": {"train": trained} if trained else {},
        "melanoma_auc": auc,
        "seborrheic_keratosis_auc": auc - 0.1,
    }


def test_a_site_version_is_paired_with_the_control_of_its_seed_and_epochs() -> None:
    rows = {
        "base": _row("base", 123, 6),
        "c4": _row("control", 123, 4),
        "c4b": _row("control", 7, 4),
        "c8": _row("control", 123, 8),
        "s4": _row("site", 123, 4, 593),
        "s4b": _row("site", 7, 4, 593),
        "s8": _row("site", 123, 8, 593),
    }
    assert pair_controls(rows) == {"s4": "c4", "s4b": "c4b", "s8": "c8"}


def test_without_an_exact_control_the_same_length_comes_before_the_same_seed() -> None:
    rows = {
        "base": _row("base", 123, 6),
        "c4": _row("control", 123, 4),
        "c8b": _row("control", 7, 8),
        "s8": _row("site", 123, 8, 593),  # no control with seed 123 and 8 epochs
        "s2": _row("site", 123, 2, 68),  # no control of 2 epochs: the one of its seed
        "s3": _row("site", 99, 3, 68),  # neither: the first control
    }
    assert pair_controls(rows) == {"s8": "c8b", "s2": "c4", "s3": "c4"}


def test_no_controls_pair_nothing() -> None:
    assert pair_controls({"base": _row("base", 1, 6), "s": _row("site", 1, 4, 68)}) == {}


def test_the_plot_draws_stages_of_two_lengths(tmp_path: Path) -> None:
    rows = {
        "base": _row("base", 123, 6, auc=0.68),
        "c4": _row("control", 123, 4, auc=0.72),
        "c8": _row("control", 123, 8, auc=0.70),
        "s4": _row("site", 123, 4, 593, auc=0.78),
        "s8": _row("site", 123, 8, 593, auc=0.81),
    }
    plot(rows, tmp_path / "site.png")
    assert (tmp_path / "site.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_each_length_is_a_line_through_its_stages_means_with_every_run_a_point() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {
        "base": _row("base", 123, 6, auc=0.68),
        "c4": _row("control", 123, 4, auc=0.72),
        "c4b": _row("control", 7, 4, auc=0.68),
        "c8": _row("control", 123, 8, auc=0.70),
        "s4": _row("site", 123, 4, 593, auc=0.78),
        "s4b": _row("site", 7, 4, 593, auc=0.76),
        "s8": _row("site", 123, 8, 593, auc=0.81),
    }
    fig, ax = plt.subplots()
    draw(ax, rows)
    lines = {line.get_label(): line for line in ax.get_lines()}
    four, eight = lines["melanoma AUC, 4 epochs (held-out half)"], lines["melanoma AUC, 8 epochs (held-out half)"]
    assert list(four.get_xdata()) == [0, 593] and list(four.get_ydata()) == pytest.approx([0.70, 0.77])
    assert list(eight.get_ydata()) == pytest.approx([0.70, 0.81])
    assert list(lines["seborrheic keratosis AUC, 4 epochs (held-out half)"].get_ydata()) == pytest.approx([0.60, 0.67])
    points = [line for line in ax.get_lines() if line.get_linestyle() == "None" and line.get_color() == "tab:blue"]
    assert sorted(y for line in points for y in line.get_ydata()) == pytest.approx([0.68, 0.70, 0.72, 0.76, 0.78, 0.81])
    assert lines["melanoma AUC, left-out version as it was"].get_ydata()[0] == pytest.approx(0.68)
    plt.close(fig)


def test_a_clinic_half_without_seborrheic_keratoses_is_summed_up_and_drawn_without_their_auc() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {
        "base": _row("base", 123, 6, auc=0.68),
        "c4": _row("control", 123, 4, auc=0.72),
        "s4": _row("site", 123, 4, 593, auc=0.78),
    }
    for row in rows.values():
        row["seborrheic_keratosis_auc"] = None
    stages = stage_means(rows)
    assert [st["seborrheic_keratosis_auc_mean"] for st in stages] == [None, None]
    assert [st["melanoma_auc_mean"] for st in stages] == pytest.approx([0.72, 0.78])
    fig, ax = plt.subplots()
    draw(ax, rows)
    labels = {line.get_label() for line in ax.get_lines()}
    assert "melanoma AUC, 4 epochs (held-out half)" in labels
    assert not any(label.startswith("seborrheic") for label in labels)
    plt.close(fig)


def _run(role: str, seed: int, epochs: int, cases: int, auc: float, change: tuple[float, float] | None) -> dict:
    trained = round(cases * 0.7)
    row = _row(role, seed, epochs, trained, auc) | {"site_cases": cases}
    return row | ({"melanoma_auc_change_from_control_ci95": change} if change else {})


def test_each_stage_is_summed_up_over_its_runs() -> None:
    rows = {
        "base": _run("base", 123, 6, 0, 0.68, None),
        "c4": _run("control", 123, 4, 0, 0.72, None),
        "c4b": _run("control", 7, 4, 0, 0.68, None),
        "s100": _run("site", 123, 4, 100, 0.75, (-0.0001, 0.06)),
        "s100b": _run("site", 7, 4, 100, 0.73, (0.018, 0.076)),
        "s100-8": _run("site", 123, 8, 100, 0.71, (0.001, 0.05)),
        "s300": _run("site", 123, 4, 300, 0.77, (0.011, 0.082)),
    }
    stages = {(st["epochs"], st["site_cases"]): st for st in stage_means(rows)}
    assert list(stages) == [(4, 0), (4, 100), (4, 300), (8, 100)]  # the base is no stage
    assert stages[4, 0]["runs"] == 2 and stages[4, 0]["runs_above_control"] is None
    assert stages[4, 0]["melanoma_auc_mean"] == pytest.approx(0.70)
    assert stages[4, 100]["melanoma_auc_range"] == (0.73, 0.75)
    assert stages[4, 100]["seborrheic_keratosis_auc_mean"] == pytest.approx(0.64)
    assert stages[4, 100]["trained"] == 70
    # An interval that reaches zero is no gain beyond doubt; one just above it is.
    assert stages[4, 100]["runs_above_control"] == 1
    assert stages[8, 100]["runs_above_control"] == 1 and stages[8, 100]["runs"] == 1


def test_a_site_stage_gets_its_runs_mean_change_from_their_controls() -> None:
    rng = np.random.default_rng(0)
    y = np.where(rng.random(400) < 0.15, MELANOMA, NEVUS)
    base = rng.normal(size=len(y)) + (y == MELANOMA)
    scores = {"c": base, "cb": base + rng.normal(scale=0.3, size=len(y)), "s": base + 1.2 * (y == MELANOMA)}
    scores["sb"] = scores["cb"]  # the second run gains nothing over its control
    probs = {v: _probs(list(1 / (1 + np.exp(-x)))) for v, x in scores.items()}
    auc = {v: _auc(y, p) for v, p in probs.items()}
    rows = {
        "base": _run("base", 123, 6, 0, 0.68, None),
        "c": _run("control", 123, 4, 0, auc["c"], None),
        "cb": _run("control", 7, 4, 0, auc["cb"], None),
        "s": _run("site", 123, 4, 100, auc["s"], None) | {"control_version": "c"},
        "sb": _run("site", 7, 4, 100, auc["sb"], None) | {"control_version": "cb"},
    }
    for v, row in rows.items():
        row["version"] = v
    control, site = stage_means(rows, y == MELANOMA, probs)
    assert "melanoma_auc_change_from_control_mean" not in control
    mean = site["melanoma_auc_change_from_control_mean"]
    assert mean == pytest.approx((auc["s"] - auc["c"]) / 2)
    low, high = site["melanoma_auc_change_from_control_mean_ci95"]
    assert 0 < low < mean < high
    # Without the scores the stage keeps its run counts and no pooled change.
    assert "melanoma_auc_change_from_control_mean" not in stage_means(rows)[1]


def test_a_stage_of_several_runs_gets_the_run_to_run_interval_of_its_mean_change() -> None:
    rows = {"base": _run("base", 123, 6, 0, 0.68, None)}
    for seed, control, site in ((123, 0.70, 0.73), (7, 0.68, 0.73), (11, 0.72, 0.74)):
        rows[f"c{seed}"] = _run("control", seed, 4, 0, control, None) | {"version": f"c{seed}"}
        paired = {"version": f"s{seed}", "control_version": f"c{seed}"}
        rows[f"s{seed}"] = _run("site", seed, 4, 100, site, None) | paired
    rows["s8"] = _run("site", 123, 8, 100, 0.75, None) | {"version": "s8", "control_version": "c123"}
    stages = {(st["epochs"], st["site_cases"]): st for st in stage_means(rows)}
    changes = [0.03, 0.05, 0.02]
    half = 4.302653 * statistics.stdev(changes) / 3**0.5  # t(0.975, 2 degrees of freedom)
    low, high = stages[4, 100]["melanoma_auc_change_from_control_runs_ci95"]
    assert (low, high) == pytest.approx((0.1 / 3 - half, 0.1 / 3 + half), abs=1e-6)
    assert low < 0 < high  # three runs this far apart: another draw might not gain
    # One run has no spread to measure, and a control stage no change.
    assert "melanoma_auc_change_from_control_runs_ci95" not in stages[8, 100]
    assert "melanoma_auc_change_from_control_runs_ci95" not in stages[4, 0]
    assert runs_interval([0.03]) is None
    assert runs_interval([0.02, 0.021, 0.022])[0] > 0


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y == MELANOMA, p[:, MELANOMA]))


def test_a_site_run_without_a_paired_interval_is_not_counted_above_its_control() -> None:
    rows = {"base": _run("base", 123, 6, 0, 0.68, None), "s": _run("site", 123, 4, 100, 0.9, None)}
    (stage,) = stage_means(rows)
    assert stage["runs_above_control"] == 0


def _probs(p_mel: list[float]) -> np.ndarray:
    p = np.zeros((len(p_mel), len(CLASS_NAMES)))
    p[:, MELANOMA] = p_mel
    p[:, NEVUS] = 1 - np.asarray(p_mel)
    return p


def test_operating_points_at_the_own_and_at_the_site_threshold() -> None:
    y = np.array([MELANOMA] * 4 + [NEVUS] * 6)
    p = _probs([0.9, 0.6, 0.3, 0.1, 0.7, 0.2, 0.1, 0.05, 0.05, 0.05])
    # The clinic's cases: 85 % of four melanomas is all four, so the site threshold is the lowest, 0.2;
    # the nevi's P(mel) plays no part in it.
    case_y = np.array([MELANOMA] * 4 + [NEVUS] * 2)
    case_p = _probs([0.8, 0.4, 0.35, 0.2, 0.99, 0.99])
    got = operating_points(y, p, 0.5, case_y, case_p)
    own, site = got["own_threshold"], got["site_threshold"]
    assert {k: own[k] for k in ("threshold", "sensitivity")} == {"threshold": 0.5, "sensitivity": 0.5}
    assert own["specificity"] == pytest.approx(5 / 6)
    assert {k: site[k] for k in ("threshold", "sensitivity", "cases", "melanomas")} == {
        "threshold": 0.2,
        "sensitivity": 0.75,
        "cases": 6,
        "melanomas": 4,
    }
    assert site["specificity"] == pytest.approx(4 / 6)


def test_no_melanoma_among_the_cases_gives_no_site_threshold() -> None:
    y = np.array([MELANOMA, NEVUS])
    got = operating_points(y, _probs([0.6, 0.1]), None, np.array([NEVUS]), _probs([0.3]))
    assert got["own_threshold"]["threshold"] is None
    assert got["site_threshold"] == {
        "threshold": None,
        "sensitivity": None,
        "specificity": None,
        "sensitivity_ci95": None,
        "specificity_ci95": None,
        "cases": 1,
        "melanomas": 0,
    }
    assert got["own_threshold"]["sensitivity_ci95"] is None


def _clinic(rng: np.random.Generator, melanomas: int, nevi: int) -> tuple[np.ndarray, np.ndarray]:
    """Cases whose P(mel) overlaps between the classes, as a real version's does at a new clinic."""
    y = np.array([MELANOMA] * melanomas + [NEVUS] * nevi)
    return y, _probs(list(rng.beta(4, 3, melanomas)) + list(rng.beta(2, 6, nevi)))


def test_the_own_threshold_carries_wilson_intervals_of_the_half() -> None:
    y, p = _clinic(np.random.default_rng(1), 100, 600)
    got = operating_points(y, p, 0.4, y, p)["own_threshold"]
    flagged = p[:, MELANOMA] >= 0.4
    assert got["sensitivity_ci95"] == clinic.wilson(int(flagged[y == MELANOMA].sum()), 100)
    assert got["specificity_ci95"] == clinic.wilson(int((~flagged[y == NEVUS]).sum()), 600)
    for key in ("sensitivity", "specificity"):
        assert got[f"{key}_ci95"][0] < got[key] < got[f"{key}_ci95"][1]


def test_a_site_threshold_fitted_on_few_melanomas_is_given_a_wider_interval() -> None:
    rng = np.random.default_rng(2)
    y, p = _clinic(rng, 100, 600)
    widths = {}
    for melanomas in (10, 400):
        case_y, case_p = _clinic(rng, melanomas, 50)
        site = operating_points(y, p, None, case_y, case_p)["site_threshold"]
        lo, hi = site["sensitivity_ci95"]
        assert lo <= site["sensitivity"] <= hi
        widths[melanomas] = hi - lo
    # Resampling the half alone would give both about the same width (Wilson's for 100 melanomas, ~0.15).
    assert widths[10] > 1.5 * widths[400]
