"""A Markdown model card per version: data, cleaning, split, metrics and plots."""

from __future__ import annotations

from pathlib import Path

from melanoma.versions.registry import ModelMeta


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _metric_rows(m: dict) -> list[str]:
    rows = [
        ("images", str(m["n"])),
        ("accuracy", _f(m["accuracy"])),
        ("balanced accuracy", _f(m["balanced_accuracy"])),
        ("melanoma ROC AUC", _f(m.get("melanoma_auc"))),
        ("macro ROC AUC (one-vs-rest)", _f(m.get("macro_auc"))),
        (
            "melanoma sensitivity / specificity, predicted class",
            f"{_f(m['melanoma_sensitivity'])} / {_f(m['melanoma_specificity'])}",
        ),
    ]
    if m.get("melanoma_specificity_at_85_sensitivity") is not None:
        rows.append(
            (
                "melanoma specificity at 85 % sensitivity (threshold chosen on these images)",
                _f(m.get("melanoma_specificity_at_85_sensitivity")),
            )
        )
    if m.get("seborrheic_keratosis_auc") is not None:
        rows.append(("seborrheic keratosis ROC AUC", _f(m.get("seborrheic_keratosis_auc"))))
    if m.get("ece") is not None:
        rows.append(("expected calibration error (15 bins)", _f(m.get("ece"))))
    if m.get("temperature") is not None:
        rows.append(
            (
                "temperature (fitted on validation) / ECE before it",
                f"{m['temperature']:.3f} / {_f(m.get('ece_uncalibrated'))}",
            )
        )
    if m.get("balanced_accuracy_most_probable") is not None:
        rows.append(("balanced accuracy of the most probable class", _f(m.get("balanced_accuracy_most_probable"))))
    if m.get("melanoma_threshold") is not None:
        rows.append(
            (
                f"melanoma sensitivity / specificity at P ≥ {m['melanoma_threshold']:.4f}",
                f"{_f(m.get('melanoma_sensitivity_at_threshold'))} / {_f(m.get('melanoma_specificity_at_threshold'))}",
            )
        )
    return [f"| {k} | {v} |" for k, v in rows]


def _decision_line(meta: ModelMeta) -> list[str]:
    """The decision weights' line; none for versions without them (the most probable class)."""
    if meta.decision_weights is None:
        return []
    weights = ", ".join(f"{n} {w:.3g}" for n, w in zip(meta.classes, meta.decision_weights))
    return [
        "* class given: the highest of the probabilities times decision weights (the share of each class in "
        f"training's draws to the power −{meta.decision_power}, fitted on validation by `evaluate.fit_decision`; "
        f"`melanoma/core/decision.py`): {weights}. Probabilities and the melanoma flag are unchanged by it"
    ]


def _per_class(m: dict) -> list[str]:
    lines = ["| class | images | precision | recall | F1 | AUC |", "|---|---|---|---|---|---|"]
    for name, c in m["per_class"].items():
        lines.append(
            f"| {name} | {c['support']} | {_f(c['precision'])} | {_f(c['recall'])} | {_f(c['f1'])} | "
            f"{_f(c.get('auc'))} |"
        )
    return lines


SOURCE_COLUMNS = (
    "| source | images | balanced acc. | melanoma AUC | SK AUC (SK+BKL) | sens. / spec. at operating "
    "point | spec. at 85 % sens. | median P(mel) melanomas / nevi | ECE |"
)


def source_rows(per_source: dict[str, dict]) -> list[str]:
    """Markdown table rows (header included) of metrics per source."""
    lines = [SOURCE_COLUMNS, "|---|---|---|---|---|---|---|---|---|"]
    for src, m in per_source.items():
        lines.append(
            f"| {src} | {m['n']} | {_f(m['balanced_accuracy'])} | {_f(m.get('melanoma_auc'))} | "
            f"{_f(m.get('seborrheic_keratosis_auc'))} ({_f(m.get('keratosis_auc'))}) | "
            f"{_f(m.get('melanoma_sensitivity_at_threshold'))} / "
            f"{_f(m.get('melanoma_specificity_at_threshold'))} | "
            f"{_f(m.get('melanoma_specificity_at_85_sensitivity'))} | "
            f"{_f(m.get('median_p_melanoma_melanomas'))} / {_f(m.get('median_p_melanoma_nevi'))} | "
            f"{_f(m.get('ece'))} |"
        )
    return lines


def _source_counts(d: dict) -> list[str]:
    counts = d.get("source_counts")
    if not counts:
        return []
    lines = [
        "",
        "Images per source and class (training / validation / test / external):",
        "",
        "| source | class | train | val | test | external |",
        "|---|---|---|---|---|---|",
    ]
    sources = sorted({src for split in counts.values() for src in split})
    for src in sources:
        classes = sorted({c for split in counts.values() for c, n in split.get(src, {}).items() if n})
        for c in classes:
            row = [counts.get(k, {}).get(src, {}).get(c, 0) for k in ("train", "val", "test", "external")]
            lines.append(f"| {src} | {c} | " + " | ".join(str(n) for n in row) + " |")
    return lines


def _sampling_line(d: dict) -> str:
    sampling = d.get("sampling")
    if not sampling:
        return f"* rebalancing: {d.get('augmented_images', 0)} Augmentor images added to the training split only"
    if sampling.get("mode") == "class_prior":
        return (
            f"* sampling: {sampling['samples_per_epoch']} images drawn per epoch with class prior "
            f"n^{sampling['class_power']} over all sources pooled (not conditioned on the source); "
            "'after rebalancing' is the expected draw per epoch"
        )
    return (
        f"* sampling: {sampling['samples_per_epoch']} images drawn per epoch so that within every source the "
        f"classes have the same proportions (class prior n^{sampling['class_power']}, source share "
        f"N^{sampling['source_power']}); 'after rebalancing' is the expected draw per epoch"
    )


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
        *_decision_line(meta),
        "",
        "## Data",
        f"* sources: {', '.join(d.get('sources', []))}; fingerprint `{str(d.get('fingerprint', ''))[:16]}`",
        f"* read {clean.get('read')} files, kept {clean.get('kept')}: dropped {clean.get('dropped_duplicates')} "
        f"duplicates (same id or bytes) and {clean.get('dropped_ambiguous')} images with conflicting labels that "
        f"no ground truth settles; relabelled {clean.get('relabelled')} that contradict HAM10000 or ISIC-2017 "
        "ground truth (lists in `data_report.json`)",
        f"* split: {d.get('split')}: {d.get('train_images')} training, {d.get('val_images')} validation, "
        f"{d.get('test_images', 0)} test images; no lesion is on two sides",
        _sampling_line(d),
        *(
            [
                f"* left out of training (external test): {', '.join(d['excluded_sources'])}; "
                f"{d.get('external_images', 0)} images"
            ]
            if d.get("excluded_sources")
            else []
        ),
        *([f"* fine-tuned from `{d['initialised_from']}`"] if d.get("initialised_from") else []),
        "",
        "| class | training | after rebalancing | validation | test |",
        "|---|---|---|---|---|",
    ]
    for name in meta.classes:
        lines.append(
            f"| {name} | {d.get('train_counts', {}).get(name, 0)} | "
            f"{d.get('train_counts_after_rebalancing', {}).get(name, 0)} | "
            f"{d.get('val_counts', {}).get(name, 0)} | {d.get('test_counts', {}).get(name, 0)} |"
        )
    lines += _source_counts(d)
    if m.get("external"):
        lines += [
            "",
            "## External test: sources left out of training",
            "",
            "How the model does on a source it never saw, the best predictor of a new clinic "
            "(operating point and temperature from validation):",
            "",
            *source_rows(m["external"]),
            "",
            "![external sources](sources_external.png)",
        ]
    lines += [
        "",
        "## Validation (held-out lesions)",
        "",
        "| metric | value |",
        "|---|---|",
        *_metric_rows(m),
        "",
        *_per_class(m),
    ]
    if m.get("by_source", {}).get("val"):
        lines += ["", "Per source:", "", *source_rows(m["by_source"]["val"])]
    if m.get("test"):
        lines += [
            "",
            "## Test (held-out lesions, operating point fixed on validation)",
            "",
            "| metric | value |",
            "|---|---|",
            *_metric_rows(m["test"]),
            "",
            *_per_class(m["test"]),
        ]
    if m.get("by_source", {}).get("test"):
        lines += [
            "",
            "Per source (an image two sources hold is scored from each source's own file):",
            "",
            *source_rows(m["by_source"]["test"]),
            "",
            "![test per source](sources_test.png)",
        ]
    lines += [
        "",
        "## Plots",
        "",
        "![training curves](training_curves.png)",
        "",
        "![class distribution](class_distribution.png)",
        "",
        "![confusion matrix](confusion_matrix.png)",
        "",
        "![melanoma ROC](roc_melanoma.png)",
        "",
        # Versions from before calibration have no reliability diagram.
        *(["![reliability](reliability.png)", ""] if m.get("ece") is not None else []),
        "## Limits",
        "",
        "Trained on dermoscopic images of the ISIC Archive only; not validated on other cameras, skin types "
        "or populations. A research and triage aid, not a diagnosis. Classes with no training images "
        "are never predicted.",
        "",
    ]
    return "\n".join(lines)


def write(meta: ModelMeta, path: Path) -> None:
    """Write the model card for ``meta`` to ``path``."""
    path.write_text(render(meta))


def familiarity_section(report: dict) -> list[str]:
    """The model card's "Familiarity" section from a ``bench.familiarity`` report."""

    def pct(v: float | None) -> str:
        return "–" if v is None else f"{100 * v:.1f} %"

    method, f, t = report["method"], report["foreign"], report["threshold_percentile"]
    lines = [
        "## Familiarity (is the image like what the model learned from?)",
        "",
        f"Score `{method}` (docs/model.md#familiarity); an image is `unfamiliar` above percentile {t:g} of the "
        f"validation images. Test split flagged: {pct(f['test_flagged'][method])} "
        f"({', '.join(f'{s} {pct(v)}' for s, v in f['test_flagged_by_source'][method].items())}).",
        "",
        "| images | n | AUROC against the test split | flagged |",
        "|---|---|---|---|",
    ]
    for kind, k in [("clearly foreign (all below but the hostile files)", f["clearly_foreign"]), *f["kinds"].items()]:
        lines.append(f"| {kind} | {k['images']} | {_f(k[method]['auroc'])} | {pct(k[method]['flagged'])} |")
    others = [m for m in f["test_flagged"] if m != method]
    if others:
        lines += [
            "",
            "Every score the statistics hold, on the same images (the first is the one applied):",
            "",
            "| score | clearly foreign: AUROC | flagged | test split flagged |",
            "|---|---|---|---|",
        ]
        for m in [method, *others]:
            c = f["clearly_foreign"][m]
            lines.append(f"| `{m}` | {_f(c['auroc'])} | {pct(c['flagged'])} | {pct(f['test_flagged'][m])} |")
    loso = report.get("loso")
    if loso:
        lines += [
            "",
            f"A source left out of training (`{loso['version']}`, trained without {', '.join(loso['excluded'])}), "
            f"against its own test split ({pct(loso[method]['test_flagged'])} of which flagged):",
            "",
            "| left-out source | n | AUROC | flagged | melanoma AUC, familiar / unfamiliar | "
            "below / above median familiarity |",
            "|---|---|---|---|---|---|",
        ]
        for src, r in loso[method]["left_out"].items():
            lines.append(
                f"| {src} | {r['images']} | {_f(r['auroc_vs_test'])} | {pct(r['flagged'])} | "
                f"{_f(r['familiar']['melanoma_auc'])} ({r['familiar']['images']}) / "
                f"{_f(r['unfamiliar']['melanoma_auc'])} ({r['unfamiliar']['images']}) | "
                f"{_f(r['below_median']['melanoma_auc'])} / {_f(r['above_median']['melanoma_auc'])} |"
            )
    c = report["cost"]["images_per_s"]
    lines += ["", f"Cost: {c['with']:.1f} against {c['without']:.1f} images/s without it (same compiled call).", ""]
    return lines


def with_familiarity(card: str, report: dict) -> str:
    """``card`` with its familiarity section replaced by (or, without one, added before "## Plots")
    the section of ``report``."""
    section = "\n".join(familiarity_section(report)) + "\n"
    head = "## Familiarity"
    if head in card:
        start = card.index(head)
        end = card.find("\n## ", start + 1)
        return card[:start] + section + (card[end:] if end != -1 else "")  # the blank line before the next
    at = card.find("## Plots")
    return card + "\n" + section if at == -1 else card[:at] + section + "\n" + card[at:]
