"""Figures on a clinic's confirmed cases: melanoma sensitivity and specificity at the operating point
(Wilson 95 % intervals), melanoma AUC and balanced accuracy (bootstrap 95 % intervals), with the
counts behind each.

A diagnosis of ``other`` (none of the nine classes) counts as "not melanoma" for the melanoma
figures and is left out of the balanced accuracy, which is over the nine classes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from melanoma.core.decision import predicted_classes
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import evaluate

MELANOMA = CLASS_NAMES.index("melanoma")
BOOTSTRAP = 1000
# Below these counts an interval is wide enough that the figure alone misleads: say so.
FEW_CASES = 100
FEW_IN_CLASS = 30


def wilson(k: int, n: int, z: float = 1.959964) -> tuple[float, float] | None:
    """Wilson score interval (95 %) of the proportion ``k / n``; None when ``n`` is 0."""
    if n == 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def _resampled_aucs(positive: np.ndarray, scores: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """The ROC AUC of each resample (a row of ``idx``), all at once: the Mann-Whitney statistic from
    ranks (ties count half, as in sklearn's); NaN where a resample lacks either class."""
    from scipy.stats import rankdata

    n = idx.shape[1]
    values = []
    for rows in np.array_split(idx, max(1, len(idx) * n // 500_000)):  # bounded memory
        pos = positive[rows]
        n1 = pos.sum(axis=1)
        ranks = rankdata(scores[rows], axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc = (np.where(pos, ranks, 0).sum(axis=1) - n1 * (n1 + 1) / 2) / (n1 * (n - n1))
        values.append(np.where((n1 > 0) & (n1 < n), auc, np.nan))
    return np.concatenate(values)


def percentile_interval(values: np.ndarray) -> tuple[float, float] | None:
    """Percentile 95 % interval of bootstrap ``values`` (undefined resamples, NaN, left out); None when
    fewer than half of BOOTSTRAP resamples are defined."""
    found = values[np.isfinite(values)]
    if len(found) < BOOTSTRAP // 2:
        return None
    lo, hi = np.percentile(found, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_auc(positive: np.ndarray, scores: np.ndarray, seed: int = 0) -> tuple[float, float] | None:
    """Percentile 95 % interval of the ROC AUC over BOOTSTRAP resamples (those without both classes
    skipped)."""
    n = len(positive)
    idx = np.random.default_rng(seed).integers(0, n, (BOOTSTRAP, n))
    return percentile_interval(_resampled_aucs(positive, scores, idx))


def auc_difference_interval(
    positive: np.ndarray, scores: np.ndarray, baseline: np.ndarray, seed: int = 0
) -> tuple[float, float] | None:
    """Paired percentile 95 % interval of AUC(``scores``) − AUC(``baseline``) on the same images: each
    resample scores both, so what the images share (which are hard) cancels out."""
    return mean_auc_difference_interval(positive, [(scores, baseline)], seed)


def mean_auc_difference_interval(
    positive: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]], seed: int = 0
) -> tuple[float, float] | None:
    """Paired percentile 95 % interval of the mean over ``pairs`` of AUC(scores) − AUC(baseline), all on
    the same images and the same resamples: several runs of one change (each against its own baseline)
    read as one. It covers which images were drawn, not which further runs could have been."""
    n = len(positive)
    idx = np.random.default_rng(seed).integers(0, n, (BOOTSTRAP, n))
    changes = [_resampled_aucs(positive, s, idx) - _resampled_aucs(positive, b, idx) for s, b in pairs]
    return percentile_interval(np.mean(changes, axis=0))


def bootstrap_interval(
    stat: Any, n: int, seed: int = 0, strata: Sequence[str] | None = None
) -> tuple[float, float] | None:
    """Percentile 95 % interval of ``stat(indices)`` over BOOTSTRAP resamples (skipping resamples
    where it is undefined); None when fewer than half are defined. With ``strata`` (one label per
    case) each stratum is resampled within itself and keeps its size, so a figure defined per
    stratum (the gate's, per source) is measured on every stratum in every resample."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(strata) if strata is not None else np.zeros(n, dtype=int)
    groups = [np.flatnonzero(labels == s) for s in dict.fromkeys(labels.tolist())]

    def resample() -> np.ndarray:
        if len(groups) == 1:  # the plain bootstrap, the same draws as before strata existed
            return rng.integers(0, n, n)
        return np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])

    values = [np.nan if v is None else v for v in (stat(resample()) for _ in range(BOOTSTRAP))]
    return percentile_interval(np.asarray(values, dtype=float))


def flag_rates(diagnoses: list[str], flags: list[bool | None]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Melanoma sensitivity and specificity of the melanoma ``flags`` (None: no operating point
    applied, left out), each as value, ``k`` of ``n`` and Wilson 95 % interval."""
    flagged = [(f, d == "melanoma") for f, d in zip(flags, diagnoses) if f is not None]
    tp = sum(1 for f, m in flagged if f and m)
    pos = sum(1 for _, m in flagged if m)
    tn = sum(1 for f, m in flagged if not f and not m)
    neg = len(flagged) - pos
    return (
        {"value": tp / pos if pos else None, "k": tp, "n": pos, "ci95": wilson(tp, pos)},
        {"value": tn / neg if neg else None, "k": tn, "n": neg, "ci95": wilson(tn, neg)},
    )


def given_classes(
    probs: np.ndarray, weights: list[float] | None = None, given: list[str | None] | None = None
) -> np.ndarray:
    """The class index each case was given: ``given`` (the rows' class) where known, else decided from
    the probabilities ``(N, 9)`` with the version's decision ``weights`` (melanoma.core.decision)."""
    pred = predicted_classes(np.asarray(probs, dtype=np.float64).reshape(-1, len(CLASS_NAMES)), weights)
    if given is not None:
        pred = np.asarray([p if g is None else CLASS_NAMES.index(g) for p, g in zip(pred, given)], dtype=int)
    return pred


def change_reading(change: float, interval: tuple[float, float] | None) -> str:
    """A change between two versions read against its paired 95 % interval (None: too few cases for
    one): whether the cases can tell it from none."""
    if interval is None:
        return f"change {change:+.4f}, too few cases for an interval"
    lo, hi = interval
    if hi < 0:
        verdict = "worse beyond what another draw of these cases would explain"
    elif lo > 0:
        verdict = "better beyond what another draw of these cases would explain"
    else:
        verdict = "a change these cases cannot tell from none"
    return f"change {change:+.4f}, paired 95 % interval {lo:+.4f} to {hi:+.4f}: {verdict}"


def figures(
    diagnoses: list[str],
    probs: np.ndarray,
    flags: list[bool | None],
    weights: list[float] | None = None,
    given: list[str | None] | None = None,
) -> dict[str, Any]:
    """The figures of cases with these confirmed ``diagnoses`` (class names or ``other``), the
    model's probabilities ``(N, 9)`` and melanoma flags (None where no operating point applied).
    The class each case was given: ``given`` (the rows' class) where known, else decided from the
    probabilities with the version's decision ``weights`` (melanoma.core.decision)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, len(CLASS_NAMES))
    n = len(diagnoses)
    is_mel = np.asarray([d == "melanoma" for d in diagnoses], dtype=bool)
    out: dict[str, Any] = {"cases": n, "melanomas": int(is_mel.sum()), "other": diagnoses.count("other")}
    out["melanoma_sensitivity"], out["melanoma_specificity"] = flag_rates(diagnoses, flags)
    p_mel = probs[:, MELANOMA]

    out["melanoma_auc"] = {
        "value": evaluate.roc_auc(is_mel, p_mel) if n else None,
        "n": n,
        "ci95": bootstrap_auc(is_mel, p_mel) if n and 0 < is_mel.sum() < n else None,
    }
    nine = np.asarray([d in CLASS_NAMES for d in diagnoses], dtype=bool)
    y = np.asarray([CLASS_NAMES.index(d) for d in diagnoses if d in CLASS_NAMES], dtype=int)
    pred = given_classes(probs, weights, given)[nine]

    def bacc(idx: np.ndarray) -> float | None:
        return evaluate.balanced_accuracy(y[idx], pred[idx]) if len(idx) else None

    m = len(y)
    out["balanced_accuracy"] = {
        "value": bacc(np.arange(m)),
        "n": m,
        "classes": len(set(y.tolist())),
        "ci95": bootstrap_interval(bacc, m) if m else None,
    }
    out["caution"] = caution(out)
    return out


def caution(f: dict[str, Any]) -> str | None:
    """A one-line warning when the counts are too small for the figures to stand alone."""
    small = []
    if f["cases"] < FEW_CASES:
        small.append(f"{f['cases']} cases")
    for key, what in (("melanoma_sensitivity", "melanomas"), ("melanoma_specificity", "non-melanomas")):
        n = f[key]["n"]
        if 0 < n < FEW_IN_CLASS:
            small.append(f"{n} {what}")
    if not small:
        return None
    return f"from {', '.join(small)}: the intervals are wide; read the figures with them"


def format_figures(f: dict[str, Any], threshold_note: str = "") -> str:
    """The figures as the command line and the viewer print them, a line each."""

    def ci(d: dict[str, Any]) -> str:
        if d.get("ci95") is None:
            return ""
        lo, hi = d["ci95"]
        return f" (95 % CI {lo:.3f}-{hi:.3f})"

    def val(d: dict[str, Any]) -> str:
        return "n/a" if d["value"] is None else f"{d['value']:.3f}"

    sens, spec = f["melanoma_sensitivity"], f["melanoma_specificity"]
    auc, bacc = f["melanoma_auc"], f["balanced_accuracy"]
    lines = [
        f"confirmed cases: {f['cases']} ({f['melanomas']} melanomas, {f['other']} other)",
        f"melanoma sensitivity{threshold_note}: {val(sens)} = {sens['k']}/{sens['n']}{ci(sens)}",
        f"melanoma specificity{threshold_note}: {val(spec)} = {spec['k']}/{spec['n']}{ci(spec)}",
        f"melanoma AUC: {val(auc)} over {auc['n']} cases{ci(auc)}",
        f"balanced accuracy: {val(bacc)} over {bacc['n']} cases of {bacc['classes']} classes{ci(bacc)}",
    ]
    if f.get("caution"):
        lines.append(f"note: {f['caution']}")
    return "\n".join(lines)
