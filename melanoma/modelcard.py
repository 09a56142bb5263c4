"""A Markdown model card per version: data, cleaning, split, metrics and plots."""

from __future__ import annotations

from pathlib import Path

from melanoma.registry import ModelMeta


def _f(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _metric_rows(m: dict) -> list[str]:
    rows = [
        ("images", str(m["n"])),
        ("accuracy", _f(m["accuracy"])),
        ("balanced accuracy", _f(m["balanced_accuracy"])),
        ("melanoma ROC AUC", _f(m.get("melanoma_auc"))),
        ("macro ROC AUC (one-vs-rest)", _f(m.get("macro_auc"))),
        ("melanoma sensitivity / specificity, predicted class", f"{_f(m['melanoma_sensitivity'])} / "
                                                                f"{_f(m['melanoma_specificity'])}"),
    ]
    if m.get("melanoma_threshold") is not None:
        rows.append((f"melanoma sensitivity / specificity at P ≥ {m['melanoma_threshold']:.4f}",
                     f"{_f(m.get('melanoma_sensitivity_at_threshold'))} / "
                     f"{_f(m.get('melanoma_specificity_at_threshold'))}"))
    return [f"| {k} | {v} |" for k, v in rows]


def _per_class(m: dict) -> list[str]:
    lines = ["| class | images | precision | recall | F1 | AUC |", "|---|---|---|---|---|---|"]
    for name, c in m["per_class"].items():
        lines.append(f"| {name} | {c['support']} | {_f(c['precision'])} | {_f(c['recall'])} | {_f(c['f1'])} | "
                     f"{_f(c.get('auc'))} |")
    return lines


def render(meta: ModelMeta) -> str:
    """The model card's Markdown text."""
    d, m = meta.data, meta.metrics
    clean = d.get("cleaning", {})
    lines = [
        f"# Model card: `{meta.version}`",
        "",
        f"* architecture: `{meta.architecture}`; input {meta.input_size[0]}×{meta.input_size[1]} RGB; "
        f"{len(meta.classes)} classes ({', '.join(meta.classes)})",
        f"* recipe: {meta.recipe}",
        f"* seed {meta.seed}; code commit `{meta.git_commit or 'unknown'}`; created {meta.created_at or 'now'}",
        f"* melanoma operating point: P(melanoma) ≥ {_f(meta.melanoma_threshold)}, chosen on validation for "
        f"sensitivity ≥ {_f(meta.target_sensitivity)}",
        "",
        "## Data",
        f"* sources: {', '.join(d.get('sources', []))}; fingerprint `{str(d.get('fingerprint', ''))[:16]}`",
        f"* read {clean.get('read')} files, kept {clean.get('kept')}: dropped {clean.get('dropped_duplicates')} "
        f"duplicates (same id or bytes) and {clean.get('dropped_ambiguous')} images with conflicting labels that "
        f"no ground truth settles; relabelled {clean.get('relabelled')} that contradict HAM10000 or ISIC-2017 "
        "ground truth (lists in `data_report.json`)",
        f"* split: {d.get('split')}: {d.get('train_images')} training, {d.get('val_images')} validation, "
        f"{d.get('test_images', 0)} test images; no lesion is on two sides",
        f"* rebalancing: {d.get('augmented_images', 0)} Augmentor images added to the training split only",
        "",
        "| class | training | after rebalancing | validation | test |",
        "|---|---|---|---|---|",
    ]
    for name in meta.classes:
        lines.append(f"| {name} | {d.get('train_counts', {}).get(name, 0)} | "
                     f"{d.get('train_counts_after_rebalancing', {}).get(name, 0)} | "
                     f"{d.get('val_counts', {}).get(name, 0)} | {d.get('test_counts', {}).get(name, 0)} |")
    lines += ["", "## Validation (held-out lesions)", "", "| metric | value |", "|---|---|", *_metric_rows(m), "",
              *_per_class(m)]
    if m.get("test"):
        lines += ["", "## Test (held-out lesions, operating point fixed on validation)", "", "| metric | value |",
                  "|---|---|", *_metric_rows(m["test"]), "", *_per_class(m["test"])]
    lines += ["", "## Plots", "", "![training curves](training_curves.png)", "",
              "![class distribution](class_distribution.png)", "", "![confusion matrix](confusion_matrix.png)", "",
              "![melanoma ROC](roc_melanoma.png)", "",
              "## Limits", "",
              "Trained on dermoscopic images of the ISIC Archive only; not validated on other cameras, skin types "
              "or populations. A research and triage aid, not a diagnosis. Classes with no training images "
              "are never predicted.", ""]
    return "\n".join(lines)


def write(meta: ModelMeta, path: Path) -> None:
    """Write the model card for ``meta`` to ``path``."""
    path.write_text(render(meta))
