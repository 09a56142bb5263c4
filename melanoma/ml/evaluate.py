"""Metrics a clinician reads (accuracy, balanced accuracy, melanoma sensitivity/specificity) and plots."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from melanoma.core.decision import predicted_classes, prior_weights
from melanoma.core.labels import CLASS_NAMES

MELANOMA = CLASS_NAMES.index("melanoma")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(CLASS_NAMES)) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class (all ``n`` classes)."""
    from sklearn.metrics import confusion_matrix

    return confusion_matrix(np.asarray(y_true), np.asarray(y_pred), labels=list(range(n)))


def roc_auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (ties count half); None without both classes."""
    from sklearn.metrics import roc_auc_score

    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return None
    return float(roc_auc_score(positive, np.asarray(scores, dtype=np.float64)))


def roc_curve(positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False-positive rates, true-positive rates and thresholds, from the highest threshold down."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    fpr, tpr, thresholds = sk_roc_curve(
        np.asarray(positive, dtype=bool), np.asarray(scores, dtype=np.float64), drop_intermediate=False
    )
    return fpr, tpr, thresholds


def threshold_for_sensitivity(positive_scores: np.ndarray, target_sensitivity: float) -> float | None:
    """The highest threshold that at least ``target_sensitivity`` of the positives' scores reach;
    None without a positive."""
    pos = np.sort(np.asarray(positive_scores, dtype=np.float64))[::-1]
    if len(pos) == 0:
        return None
    # 0.56 * 25 is 14.000000000000002 in floating point: without the margin it would ask for 15 of 25.
    k = int(np.ceil(target_sensitivity * len(pos) - 1e-9))
    return float(pos[min(max(k, 1), len(pos)) - 1])


def melanoma_threshold(y_true: np.ndarray, probs: np.ndarray, target_sensitivity: float = 0.85) -> float | None:
    """The highest threshold on P(melanoma) whose sensitivity on these images is at least the target."""
    p_mel = np.asarray(probs)[:, MELANOMA]
    return threshold_for_sensitivity(p_mel[np.asarray(y_true) == MELANOMA], target_sensitivity)


def melanoma_rates(flag: np.ndarray, is_mel: np.ndarray) -> tuple[float | None, float | None]:
    """Sensitivity and specificity of the melanoma ``flag``s against the truth ``is_mel`` (None where
    there are no melanomas, or no other lesions)."""
    tp, fn = int(np.sum(flag & is_mel)), int(np.sum(~flag & is_mel))
    tn, fp = int(np.sum(~flag & ~is_mel)), int(np.sum(flag & ~is_mel))
    return (tp / (tp + fn) if tp + fn else None), (tn / (tn + fp) if tn + fp else None)


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Mean recall over the classes present in ``y_true`` (as sklearn's balanced_accuracy_score; 0
    without images), with bincount: a thousand bootstrap resamples of thousands of cases in
    milliseconds."""
    y_true = np.asarray(y_true)
    total = np.bincount(y_true, minlength=len(CLASS_NAMES))
    hits = np.bincount(y_true, weights=(np.asarray(y_pred) == y_true), minlength=len(CLASS_NAMES))
    present = total > 0
    return float(np.mean(hits[present] / total[present])) if present.any() else 0.0


def metrics(
    y_true: np.ndarray, probs: np.ndarray, threshold: float | None = None, weights: Sequence[float] | None = None
) -> dict:
    """Metrics of predicted probabilities ``(N, 9)`` against integer labels ``(N,)``.

    The predicted class is the one the worker gives (melanoma.core.decision): with the version's
    decision ``weights`` the highest weighted probability, else the most probable class; with
    weights, ``balanced_accuracy_most_probable`` is the figure the most probable class would give.
    Balanced accuracy is the mean recall over the classes present in ``y_true``.
    ``melanoma_sensitivity``/``_specificity`` count "predicted class is melanoma" as positive;
    with ``threshold``, ``*_at_threshold`` count "P(melanoma) >= threshold" (the operating point).
    AUCs are one-vs-rest; the macro AUC averages the classes that have positives and negatives.
    """
    y_true = np.asarray(y_true)
    probs = np.asarray(probs)
    y_pred = predicted_classes(probs, weights)
    cm = confusion(y_true, y_pred)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    is_mel = y_true == MELANOMA
    sens, spec = melanoma_rates(y_pred == MELANOMA, is_mel)
    aucs = {name: roc_auc(y_true == i, probs[:, i]) for i, name in enumerate(CLASS_NAMES)}
    present = [a for a in aucs.values() if a is not None]
    out = {
        "n": int(len(y_true)),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "melanoma_sensitivity": sens,
        "melanoma_specificity": spec,
        "melanoma_auc": aucs["melanoma"],
        "macro_auc": float(np.mean(present)) if present else None,
        "per_class": {
            name: {
                "support": int(support[i]),
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "auc": aucs[name],
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": cm.tolist(),
    }
    p_mel = probs[:, MELANOMA]
    nevi = y_true == CLASS_NAMES.index("nevus")
    out.update(
        {
            "seborrheic_keratosis_auc": aucs["seborrheic keratosis"],
            # HAM10000 files seborrheic keratoses under "bkl" (pigmented benign keratosis): a model that
            # learnt them only from there says so through the sum of the two keratosis outputs.
            "keratosis_auc": roc_auc(
                y_true == CLASS_NAMES.index("seborrheic keratosis"),
                probs[:, CLASS_NAMES.index("seborrheic keratosis")]
                + probs[:, CLASS_NAMES.index("pigmented benign keratosis")],
            ),
            "melanoma_specificity_at_85_sensitivity": specificity_at_sensitivity(y_true, probs, 0.85),
            "ece": expected_calibration_error(y_true, probs) if len(y_true) else None,
            "median_p_melanoma_melanomas": float(np.median(p_mel[is_mel])) if is_mel.any() else None,
            "median_p_melanoma_nevi": float(np.median(p_mel[nevi])) if nevi.any() else None,
        }
    )
    if weights is not None:
        out["balanced_accuracy_most_probable"] = balanced_accuracy(y_true, predicted_classes(probs))
    if threshold is not None:
        s_t, p_t = melanoma_rates(probs[:, MELANOMA] >= threshold, is_mel)
        out.update(
            {
                "melanoma_threshold": threshold,
                "melanoma_sensitivity_at_threshold": s_t,
                "melanoma_specificity_at_threshold": p_t,
            }
        )
    return out


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Row-wise softmax of ``logits / temperature`` in float64."""
    z = np.asarray(logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# Powers tried for the decision weights: 0 is the most probable class, 1 divides by the training
# share of each class (the decision that maximises balanced accuracy for calibrated probabilities).
DECISION_POWERS = tuple(np.round(np.arange(0.0, 1.51, 0.125), 3))


# A source needs this many validation images to count in a per-source figure (the gate's).
MIN_SOURCE_IMAGES = 50


def balanced_accuracy_by_source(y_true: np.ndarray, predicted: np.ndarray, sources: Sequence[str]) -> dict[str, float]:
    """Balanced accuracy of each source with at least MIN_SOURCE_IMAGES images."""
    src = np.asarray(sources)
    out = {}
    for name in sorted(set(sources)):
        mask = src == name
        if mask.sum() >= MIN_SOURCE_IMAGES:
            out[name] = balanced_accuracy(np.asarray(y_true)[mask], np.asarray(predicted)[mask])
    return out


def gate_figure(y_true: np.ndarray, predicted: np.ndarray, sources: Sequence[str] | None) -> tuple[float, dict]:
    """The figure the promotion gate compares: the mean over sources of per-source balanced accuracy
    when two or more sources are large enough (every source, like every clinic, counts the same), else
    the balanced accuracy of all images; and the per-source figures behind it."""
    per = balanced_accuracy_by_source(y_true, predicted, sources) if sources else {}
    if len(per) >= 2:
        return float(np.mean(list(per.values()))), per
    return balanced_accuracy(y_true, predicted), {}


def fit_decision(
    y_true: np.ndarray,
    probs: np.ndarray,
    drawn: Mapping[str, int],
    sources: Sequence[str] | None = None,
    min_images: int = 2,
) -> tuple[float, list[float]] | None:
    """The decision weights (melanoma.core.decision) that give the highest gate figure (the mean
    per-source balanced accuracy with ``sources``, see :func:`gate_figure`) on validation labels
    ``y_true`` and calibrated probabilities ``probs``, from ``drawn`` (images training drew per
    class); ties go to the smaller power. None (the most probable class) when the validation set has
    a class with fewer than ``min_images`` images: too few to fit on."""
    counts = np.bincount(np.asarray(y_true), minlength=len(CLASS_NAMES))
    present = counts[counts > 0]
    if len(present) < 2 or present.min() < min_images:
        return None
    best: tuple[float, float, list[float]] | None = None
    for power in DECISION_POWERS:
        weights = prior_weights(drawn, float(power))
        score, _ = gate_figure(y_true, predicted_classes(probs, weights), sources)
        if best is None or score > best[0] + 1e-12:
            best = (score, float(power), weights)
    assert best is not None
    return best[1], best[2]


def fit_temperature(logits: np.ndarray, y_true: np.ndarray) -> float:
    """The temperature that minimises the negative log-likelihood of ``y_true`` (Guo et al., 2017).

    One scalar fitted on validation logits: it changes confidence, never the ranking or the
    predicted class.
    """
    from scipy.optimize import minimize_scalar

    y = np.asarray(y_true)

    def nll(log_t: float) -> float:
        p = softmax(logits, float(np.exp(log_t)))
        return float(-np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None))))

    res = minimize_scalar(nll, bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(res.x))


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the top-class confidence over ``bins`` equal-width bins."""
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        members = which == b
        if members.any():
            ece += members.mean() * abs(correct[members].mean() - conf[members].mean())
    return float(ece)


def specificity_at_sensitivity(y_true: np.ndarray, probs: np.ndarray, sensitivity: float = 0.85) -> float | None:
    """Melanoma specificity at the highest threshold reaching ``sensitivity`` on these images."""
    from sklearn.metrics import roc_curve as sk_roc_curve

    is_mel = np.asarray(y_true) == MELANOMA
    if is_mel.all() or not is_mel.any():
        return None
    fpr, tpr, _ = sk_roc_curve(is_mel, np.asarray(probs)[:, MELANOMA])
    return float(1.0 - fpr[np.argmax(tpr >= sensitivity)])


def format_report(m: dict, title: str = "") -> str:
    """The metrics as a plain-text report for the terminal."""

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = [title] if title else []
    lines += [
        f"images                 {m['n']}",
        f"accuracy               {f(m['accuracy'])}",
        f"balanced accuracy      {f(m['balanced_accuracy'])}",
        f"melanoma ROC AUC       {f(m.get('melanoma_auc'))}",
        f"macro ROC AUC          {f(m.get('macro_auc'))}",
        f"melanoma sensitivity   {f(m['melanoma_sensitivity'])}  (predicted class = melanoma)",
        f"melanoma specificity   {f(m['melanoma_specificity'])}",
    ]
    if m.get("melanoma_threshold") is not None:
        lines += [
            f"operating point        P(melanoma) >= {m['melanoma_threshold']:.4f}",
            f"  sensitivity          {f(m.get('melanoma_sensitivity_at_threshold'))}",
            f"  specificity          {f(m.get('melanoma_specificity_at_threshold'))}",
        ]
    lines.append(f"{'class':<28} {'n':>5} {'prec':>6} {'recall':>6} {'f1':>6} {'auc':>6}")
    for name, c in m["per_class"].items():
        lines.append(
            f"{name:<28} {c['support']:>5} {c['precision']:>6.3f} {c['recall']:>6.3f} {c['f1']:>6.3f} "
            f"{f(c.get('auc')):>6}"
        )
    return "\n".join(lines)
