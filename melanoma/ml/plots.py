"""Plots of a model's behaviour (PNG files): training curves, confusion matrix, ROC with the
operating point, reliability diagram, metrics per source, class distribution."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml.evaluate import MELANOMA, expected_calibration_error, melanoma_rates, roc_auc, roc_curve


def plot_history(history: dict[str, list[float]], path: Path) -> None:
    """Training and validation accuracy and loss per epoch, and the validation figures the
    checkpoint can be chosen on (balanced accuracy, melanoma AUC), as a PNG."""
    plt = _pyplot()

    chosen = [k for k in ("val_balanced_accuracy", "val_melanoma_auc") if history.get(k)]
    fig, axes = plt.subplots(1, 3 if chosen else 2, figsize=(15 if chosen else 10, 4))
    if chosen:
        for key in chosen:
            axes[2].plot(range(1, len(history[key]) + 1), history[key], "o-", label=key.removeprefix("val_"))
        axes[2].set_xlabel("epoch")
        axes[2].set_title("validation")
        axes[2].legend()
    for ax, key in zip(axes, ("accuracy", "loss")):
        for prefix, style in (("", "-"), ("val_", "--")):
            if prefix + key in history:
                ax.plot(
                    range(1, len(history[prefix + key]) + 1),
                    history[prefix + key],
                    style,
                    label=("validation " if prefix else "training ") + key,
                )
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(cm: list[list[int]] | np.ndarray, path: Path, title: str = "Confusion matrix") -> None:
    """Confusion matrix with counts in each cell, as a PNG."""
    plt = _pyplot()

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


def plot_reliability(y_true: np.ndarray, probs: np.ndarray, path: Path, title: str, bins: int = 15) -> None:
    """Reliability diagram of the top-class confidence (accuracy per confidence bin), as a PNG."""
    plt = _pyplot()
    probs = np.asarray(probs)
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == np.asarray(y_true)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    centres = (edges[:-1] + edges[1:]) / 2
    acc = np.array([correct[which == b].mean() if (which == b).any() else np.nan for b in range(bins)])
    counts = np.bincount(which, minlength=bins)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.bar(centres, np.nan_to_num(acc), width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy in bin")
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfect calibration")
    for c, n, a in zip(centres, counts, acc):
        if n:
            ax.text(c, min(np.nan_to_num(a) + 0.02, 0.97), str(n), ha="center", fontsize=6)
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title}\nECE (15 bins) {expected_calibration_error(y_true, probs, bins):.3f}")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_sources(per_source: dict[str, dict], path: Path, title: str) -> None:
    """Per-source bars of balanced accuracy, melanoma AUC, seborrheic keratosis AUC and melanoma
    sensitivity/specificity at the operating point, as a PNG."""
    plt = _pyplot()
    keys = [
        ("balanced_accuracy", "balanced acc."),
        ("melanoma_auc", "melanoma AUC"),
        ("seborrheic_keratosis_auc", "SK AUC"),
        ("melanoma_sensitivity_at_threshold", "mel. sens. @op"),
        ("melanoma_specificity_at_threshold", "mel. spec. @op"),
    ]
    names = list(per_source)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.8 * len(names) + 2), 4.5))
    width = 0.8 / len(keys)
    xs = np.arange(len(names))
    for k, (key, label) in enumerate(keys):
        vals = [per_source[n].get(key) for n in names]
        ax.bar(xs + k * width, [v if v is not None else 0 for v in vals], width, label=label)
    ax.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xticks(xs + width * (len(keys) - 1) / 2, [f"{n}\n({per_source[n]['n']} img)" for n in names])
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=8, ncol=3, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_roc(y_true: np.ndarray, probs: np.ndarray, threshold: float | None, path: Path, title: str) -> None:
    """Melanoma-vs-rest ROC curve with the operating point marked, as a PNG."""
    plt = _pyplot()
    is_mel = np.asarray(y_true) == MELANOMA
    p_mel = np.asarray(probs)[:, MELANOMA]
    fpr, tpr, _ = roc_curve(is_mel, p_mel)
    auc = roc_auc(is_mel, p_mel)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot(fpr, tpr, label=f"melanoma vs rest (AUC {auc:.3f})" if auc is not None else "melanoma vs rest")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    if threshold is not None:
        sens, spec = melanoma_rates(p_mel >= threshold, is_mel)
        if sens is not None and spec is not None:
            ax.plot(
                [1 - spec],
                [sens],
                "o",
                color="red",
                label=f"operating point P≥{threshold:.3f}: sens {sens:.2f}, spec {spec:.2f}",
            )
    ax.set_xlabel("1 − specificity")
    ax.set_ylabel("sensitivity")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_class_distribution(counts: dict[str, dict[str, int]], path: Path, title: str) -> None:
    """Grouped bars of images per class, one group per named distribution (before/after rebalancing)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / max(len(counts), 1)
    xs = np.arange(len(CLASS_NAMES))
    for k, (label, c) in enumerate(counts.items()):
        ax.bar(xs + k * width, [c.get(name, 0) for name in CLASS_NAMES], width, label=label)
    ax.set_xticks(xs + width * (len(counts) - 1) / 2, CLASS_NAMES, rotation=30, ha="right")
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
