"""Old against new, per source: a Markdown table of published versions' own metrics (their
``metrics.json``: the test split per source, and the sources left out of training), for the README and
docs/model.md. Reads files only; nothing is scored again.

    python -m bench.model_table models/robust-… runs/pretrained-all/pretrained-…
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

COLUMNS = (
    ("n", "images", "{:.0f}"),
    ("balanced_accuracy", "balanced accuracy", "{:.3f}"),
    # A version without decision weights gives the most probable class: the same figure.
    ("balanced_accuracy_most_probable", "balanced accuracy, most probable class", "{:.3f}"),
    ("melanoma_auc", "melanoma AUC", "{:.3f}"),
    ("melanoma_specificity_at_85_sensitivity", "specificity at 85 % sensitivity", "{:.3f}"),
    ("seborrheic_keratosis_auc", "SK AUC", "{:.3f}"),
    ("median_p_melanoma_nevi", "median P(mel), nevi", "{:.3f}"),
    ("ece", "ECE", "{:.3f}"),
)


def rows(folder: Path) -> list[tuple[str, dict]]:
    """(where, metrics) for the whole test split, each of its sources and each left-out source."""
    m = json.loads((folder / "metrics.json").read_text())
    out = []
    if "test" in m:
        out.append(("test split, all sources", m["test"]))
    for src, metrics in sorted(m.get("by_source", {}).get("test", {}).items()):
        out.append((f"test split, {src}", metrics))
    for src, metrics in sorted(m.get("external", {}).items()):
        out.append((f"**{src}, left out of training**", metrics))
    return out


def cell(metrics: dict, key: str, fmt: str) -> str:
    value = metrics.get(key)
    if key == "balanced_accuracy_most_probable" and value is None:
        value = metrics.get("balanced_accuracy")
    return "–" if value is None else fmt.format(value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("versions", nargs="+", type=Path, help="published version folders")
    args = ap.parse_args()
    print("| version | images from | " + " | ".join(label for _, label, _ in COLUMNS) + " |")
    print("|---|---|" + "---|" * len(COLUMNS))
    for folder in args.versions:
        for where, metrics in rows(folder):
            cells = " | ".join(cell(metrics, key, fmt) for key, _, fmt in COLUMNS)
            print(f"| `{folder.name}` | {where} | {cells} |")


if __name__ == "__main__":
    main()
