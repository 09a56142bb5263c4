"""After fitting: calibrate, choose the melanoma operating point, evaluate per source, plot, write the
run's files and model card, and publish the version (not yet current)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import callbacks, data, evaluate, familiarity_fit, plots
from melanoma.ml.assess import evaluate_sources, input_size, predict_logits, predict_probs
from melanoma.ml.recipes import RECIPES, Recipe, TrainConfig, overrides
from melanoma.ml.train_data import Prepared, git_commit
from melanoma.versions import modelcard
from melanoma.versions.registry import FAMILIARITY_FILE, SPLIT_FILE, ModelMeta, Registry, new_version_id


@dataclass
class Calibration:
    """What validation chose: temperature, melanoma threshold, decision power and weights."""

    temperature: float
    threshold: float | None
    power: float | None = None
    weights: list[float] | None = None


def calibrate(
    model: Any,
    history: dict,
    recipe: Recipe,
    cfg: TrainConfig,
    val: tuple[np.ndarray, np.ndarray],
    drawn: dict[str, int],
    sources: list[str] | None = None,
) -> tuple[dict, Calibration, np.ndarray]:
    """Temperature scaling, the melanoma operating point and the decision weights, all chosen on
    validation (``drawn``: images training drew per class; ``sources``: each validation image's, for
    the decision weights to serve the gate's per-source figure); returns the validation metrics, the
    calibration and the calibrated validation probabilities."""
    x_val, y_val = val
    val_logits = predict_logits(model, x_val)
    temperature = evaluate.fit_temperature(val_logits, y_val) if recipe.calibrate else 1.0
    val_probs = evaluate.softmax(val_logits, temperature)
    threshold = evaluate.melanoma_threshold(y_val, val_probs, cfg.target_sensitivity)
    decision = evaluate.fit_decision(y_val, val_probs, drawn, sources) if recipe.decision else None
    cal = Calibration(temperature, threshold, *(decision or (None, None)))
    scores = evaluate.metrics(y_val, val_probs, threshold, cal.weights)
    scores["temperature"] = temperature
    scores["decision_power"] = cal.power
    scores["ece_uncalibrated"] = evaluate.expected_calibration_error(y_val, evaluate.softmax(val_logits))
    scores["epochs_run"] = len(history.get("loss", []))
    if scores["epochs_run"]:  # an ensemble trains nothing
        key = recipe.checkpoint_on if history.get(recipe.checkpoint_on) else "val_accuracy"
        best = np.argmin if callbacks.lower_is_better(key) else np.argmax
        scores["best_epoch"] = int(best(history.get(key) or [0.0])) + 1
    return scores, cal, val_probs


class _RunFiles:
    """The files a run publishes beside its model, by name."""

    def __init__(self, scratch: Path) -> None:
        self.scratch = scratch
        self.files: dict[str, Path] = {}

    def __call__(self, name: str) -> Path:
        self.files[name] = self.scratch / name
        return self.files[name]


def evaluate_and_plot(
    model: Any,
    history: dict,
    prepared: Prepared,
    scores: dict,
    cal: Calibration,
    val: tuple[np.ndarray, np.ndarray],
    out: _RunFiles,
) -> None:
    """Score the test split and the left-out sources, per source too, into ``scores``, and draw the
    run's plots (curves, confusion matrices, ROC, reliability, per source)."""
    temperature, threshold, weights = cal.temperature, cal.threshold, cal.weights
    y_val, val_probs = val
    if history.get("loss"):
        plots.plot_history(history, out("training_curves.png"))
    plots.plot_confusion(
        scores["confusion_matrix"], out("confusion_matrix.png"), "Validation confusion matrix (held-out lesions)"
    )
    plots.plot_roc(y_val, val_probs, threshold, out("roc_melanoma.png"), "Melanoma ROC, validation")
    plots.plot_class_distribution(
        {
            "training split": prepared.info["train_counts"],
            "after rebalancing": prepared.info["train_counts_after_rebalancing"],
            "validation": prepared.info["val_counts"],
        },
        out("class_distribution.png"),
        "Images per class",
    )
    scores["by_source"] = {}
    scores["by_source"]["val"], _ = evaluate_sources(
        model, prepared.val, temperature, threshold, "validation", weights, known=val_probs
    )
    if prepared.test:
        x_test, y_test = data.load_arrays(
            [s.path for s in prepared.test], [s.label_index for s in prepared.test], "test images", input_size(model)
        )
        test_probs = predict_probs(model, x_test, temperature=temperature)
        scores["test"] = evaluate.metrics(y_test, test_probs, threshold, weights)
        plots.plot_confusion(
            scores["test"]["confusion_matrix"],
            out("confusion_matrix_test.png"),
            "Test confusion matrix (held-out lesions)",
        )
        plots.plot_roc(y_test, test_probs, threshold, out("roc_melanoma_test.png"), "Melanoma ROC, test")
        plots.plot_reliability(y_test, test_probs, out("reliability_test.png"), "Reliability, test split")
        scores["by_source"]["test"], _ = evaluate_sources(
            model, prepared.test, temperature, threshold, "test", weights, known=test_probs
        )
        plots.plot_sources(scores["by_source"]["test"], out("sources_test.png"), "Test split, per source")
    plots.plot_reliability(y_val, val_probs, out("reliability.png"), "Reliability, validation")
    if prepared.external:
        scores["external"], ext = evaluate_sources(
            model, prepared.external, temperature, threshold, "external", weights
        )
        plots.plot_sources(
            scores["external"], out("sources_external.png"), "Sources left out of training (external test)"
        )
        for src, (y_ext, p_ext) in ext.items():
            plots.plot_roc(
                y_ext,
                p_ext,
                threshold,
                out(f"roc_melanoma_external_{src}.png"),
                f"Melanoma ROC, {src} (left out of training)",
            )


def write_run_files(history: dict, prepared: Prepared, out: _RunFiles) -> None:
    """The epoch history, which image went where (so that later runs and tests can tell seen from
    unseen images) and what cleaning the data did."""
    out("history.json").write_text(json.dumps(history))
    splits = {
        # The whole training side, drawn or not: a stage continuing this version keeps it on that side.
        "train": prepared.train + prepared.unused,
        "val": prepared.val,
        "test": prepared.test,
        "external": prepared.external,
    }
    if prepared.unused:
        splits["unused"] = prepared.unused
    out(SPLIT_FILE).write_text(json.dumps({k: sorted(s.image_id for s in v) for k, v in splits.items()}))
    if prepared.report is not None:
        r = prepared.report
        report = {
            "dropped_duplicates": r.dropped_duplicates,
            "dropped_ambiguous": r.dropped_ambiguous,
            "relabelled": r.relabelled,
            "resolved_conflicts": r.resolved_conflicts,
        }
        out("data_report.json").write_text(json.dumps(report, indent=1))


def _run_settings(recipe: Recipe) -> str:
    """What this run changed from its recipe (the description says what the recipe does)."""
    changed = overrides(recipe) if recipe.name in RECIPES else {}
    if not changed:
        return ""
    return "; this run: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in changed.items())


def finish(
    model: Any,
    history: dict,
    prepared: Prepared,
    recipe: Recipe,
    cfg: TrainConfig,
    registry: Registry,
    scratch: Path,
    val_arrays: tuple[np.ndarray, np.ndarray],
) -> ModelMeta:
    """Calibrate, choose the operating point, evaluate (per source too), plot, write the card and
    publish (not yet current)."""
    drawn = prepared.info["train_counts_after_rebalancing"]
    scores, cal, val_probs = calibrate(model, history, recipe, cfg, val_arrays, drawn, [s.source for s in prepared.val])
    out = _RunFiles(scratch)
    evaluate_and_plot(model, history, prepared, scores, cal, (val_arrays[1], val_probs), out)
    write_run_files(history, prepared, out)
    stats = familiarity_fit.fit_samples(model, prepared.train, val_arrays[0], info={"fitted_by": "training"})
    out(FAMILIARITY_FILE).write_bytes(stats.to_bytes())
    model.save(scratch / "model.keras")
    meta = ModelMeta(
        version=new_version_id(recipe.architecture),
        architecture=recipe.architecture,
        classes=list(CLASS_NAMES),
        # Set here, not at publish, so that the model card written next carries it.
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        recipe=f"{recipe.name}: {recipe.description}" + _run_settings(recipe),
        seed=cfg.seed,
        git_commit=prepared.info.pop("git_commit", None) or git_commit(),
        data=prepared.info,
        metrics=scores,
        melanoma_threshold=cal.threshold,
        target_sensitivity=cfg.target_sensitivity,
        temperature=cal.temperature,
        decision_weights=cal.weights,
        decision_power=cal.power,
        input_size=[*input_size(model), 3],
        backbone=recipe.backbone,
    )
    modelcard.write(meta, out("MODEL_CARD.md"))
    registry.publish(scratch / "model.keras", meta, extra_files=out.files)
    return meta
