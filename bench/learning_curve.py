"""A learning curve from published versions trained on parts of one training side (``--train-fraction``):
their validation and test melanoma figures against the number of training images, as a Markdown table, a
JSON file and a plot, with the gain per doubling of the data fitted on the test melanoma AUC (least squares
on log2 of the images) and the number of images at which that gain would reach a target. Reads the
versions' ``metadata.json`` and ``metrics.json`` only; nothing is scored again.

    python -m bench.learning_curve docs/models/<full run> runs/…/<half> runs/…/<quarter> --out docs/bench/learning-curve
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

FIGURES = (
    ("val_melanoma_auc", "validation melanoma AUC"),
    ("melanoma_auc", "test melanoma AUC"),
    ("melanoma_specificity_at_85_sensitivity", "test specificity at 85 % sensitivity"),
    ("balanced_accuracy", "test balanced accuracy"),
)


def point(folder: Path) -> dict:
    """One version's training images and figures (test split pooled, and its melanoma AUC per source)."""
    meta = json.loads((folder / "metadata.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    test = metrics["test"]
    return {
        "version": meta["version"],
        "train_images": meta["data"]["train_images"],
        "train_fraction": meta["data"].get("train_fraction", 1.0),
        "val_melanoma_auc": metrics["melanoma_auc"],
        **{key: test[key] for key, _ in FIGURES[1:]},
        "melanoma_auc_by_source": {
            src: m.get("melanoma_auc") for src, m in sorted(metrics.get("by_source", {}).get("test", {}).items())
        },
    }


def fit(points: list[dict], key: str = "melanoma_auc") -> tuple[float, float]:
    """(intercept, gain per doubling) of ``key`` against log2 of the training images."""
    x = np.log2([p["train_images"] for p in points])
    slope, intercept = np.polyfit(x, [p[key] for p in points], 1)
    return float(intercept), float(slope)


def images_for(target: float, intercept: float, slope: float) -> float | None:
    """Training images at which the fitted line reaches ``target`` (None if it never rises)."""
    return float(2 ** ((target - intercept) / slope)) if slope > 0 else None


def table(points: list[dict]) -> str:
    """The Markdown table, fewest images first."""
    sources = sorted({s for p in points for s in p["melanoma_auc_by_source"]})
    head = ["version", "training images", *(label for _, label in FIGURES), *(f"{s} melanoma AUC" for s in sources)]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for p in points:
        by_source = [p["melanoma_auc_by_source"].get(s) for s in sources]
        cells = [
            f"`{p['version'][-4:]}`",
            f"{p['train_images']} ({p['train_fraction']:.0%})",
            *(f"{p[key]:.3f}" for key, _ in FIGURES),
            *("–" if v is None else f"{v:.3f}" for v in by_source),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(points: list[dict], intercept: float, slope: float, target: float, reach: float | None, path: Path) -> None:
    """Melanoma AUC (validation and test) against training images, the fitted line carried to the target
    (``reach``: where it gets there, :func:`images_for`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = np.array([p["train_images"] for p in points], float)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(n, [p["val_melanoma_auc"] for p in points], "o-", label="validation melanoma AUC")
    ax.plot(n, [p["melanoma_auc"] for p in points], "s-", label="test melanoma AUC")
    end = max(n.max() * 2, min(reach or 0, n.max() * 64))
    xs = np.geomspace(n.min(), end, 50)
    ax.plot(xs, intercept + slope * np.log2(xs), "--", color="grey", label=f"test fit: {slope:+.3f} per doubling")
    ax.axhline(target, color="red", lw=0.8, label=f"target {target:.2f}")
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_xlabel("training images (log scale)")
    ax.set_ylabel("melanoma ROC AUC")
    ax.set_title("Learning curve (one run per point; runs of one stage differ by about 0.014)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("versions", nargs="+", type=Path, help="published version folders")
    ap.add_argument("--target", type=float, default=0.90, help="test melanoma AUC to carry the fit to")
    ap.add_argument("--out", type=Path, required=True, help="path prefix for .md, .json and .png")
    args = ap.parse_args()
    points = sorted((point(v) for v in args.versions), key=lambda p: p["train_images"])
    if len({p["train_images"] for p in points}) < 2:
        raise SystemExit("bench.learning_curve: the versions must differ in their number of training images")
    intercept, slope = fit(points)
    reach = images_for(args.target, intercept, slope)
    summary = (
        f"test melanoma AUC {slope:+.3f} per doubling of the training images (least squares over "
        f"{len(points)} runs); at that rate {args.target:.2f} would need "
        + (f"about {reach:,.0f} training images" if reach else "more data than any number (no gain)")
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table(points) + "\n\n" + summary + "\n")
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "points": points,
                "gain_per_doubling": slope,
                "intercept": intercept,
                "target": args.target,
                "images_for_target": reach,
            },
            indent=1,
        )
    )
    plot(points, intercept, slope, args.target, reach, args.out.with_suffix(".png"))
    print(table(points) + "\n\n" + summary)


if __name__ == "__main__":
    main()
