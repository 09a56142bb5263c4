"""Metrics a clinician reads (accuracy, balanced accuracy, melanoma sensitivity/specificity) and plots."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from melanoma.labels import CLASS_NAMES

MELANOMA = CLASS_NAMES.index("melanoma")


def confusion(y_true: np.ndarray, y_pred: np.ndarray, n: int = len(CLASS_NAMES)) -> np.ndarray:
    """Confusion matrix, rows = true class, columns = predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def metrics(y_true: np.ndarray, probs: np.ndarray) -> dict:
    """Metrics of predicted probabilities ``(N, 9)`` against integer labels ``(N,)``.

    Balanced accuracy is the mean recall over the classes present in ``y_true``. Melanoma
    sensitivity and specificity treat "predicted class is melanoma" as a positive call.
    """
    y_true = np.asarray(y_true)
    y_pred = np.asarray(probs).argmax(axis=1)
    cm = confusion(y_true, y_pred)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    tp = np.diag(cm).astype(float)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros_like(tp), where=(precision + recall) > 0)
    is_mel, said_mel = y_true == MELANOMA, y_pred == MELANOMA
    mel_tp = int(np.sum(is_mel & said_mel))
    mel_fn = int(np.sum(is_mel & ~said_mel))
    mel_tn = int(np.sum(~is_mel & ~said_mel))
    mel_fp = int(np.sum(~is_mel & said_mel))
    return {
        "n": int(len(y_true)),
        "accuracy": float(tp.sum() / max(len(y_true), 1)),
        "balanced_accuracy": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
        "melanoma_sensitivity": mel_tp / (mel_tp + mel_fn) if (mel_tp + mel_fn) else None,
        "melanoma_specificity": mel_tn / (mel_tn + mel_fp) if (mel_tn + mel_fp) else None,
        "per_class": {
            name: {"support": int(support[i]), "precision": float(precision[i]), "recall": float(recall[i]),
                   "f1": float(f1[i])}
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": cm.tolist(),
    }


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Training and validation accuracy and loss per epoch, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("accuracy", "loss")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(range(1, len(history[prefix + key]) + 1), history[prefix + key], style,
                        label=("validation " if prefix else "training ") + key)
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: list[list[int]] | np.ndarray, path: Path, title: str = "Confusion matrix") -> None:
    """Confusion matrix with counts in each cell, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(8, 7))
    ax.imshow(cm, cmap="Blues")
    ticks = range(len(CLASS_NAMES))
    ax.set_xticks(ticks, CLASS_NAMES, rotation=45, ha="right")
    ax.set_yticks(ticks, CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = cm.max() if cm.size else 0
    for i in ticks:
        for j in ticks:
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color="white" if cm[i, j] > top / 2 else "black")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
