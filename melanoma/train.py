"""Train a model with a named recipe, evaluate it, and publish it as a registry version.

Every recipe: clean the data, split by lesion *before* anything is augmented, add Augmentor
samples to the training split only (in a scratch folder), fit, keep the best epoch, choose the
melanoma operating point on validation, evaluate, plot, write a model card, publish, and
(optionally) promote through the gate. Imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from melanoma import data, evaluate, modelcard
from melanoma.labels import CLASS_NAMES, slug
from melanoma.registry import ModelMeta, Registry, new_version_id
from melanoma.settings import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """How a model is trained."""

    name: str
    architecture: str
    description: str
    epochs: int
    patience: int
    rebalance: str  # "add": N Augmentor samples per class; "topup": classes below N filled up to N
    rebalance_n: int
    class_weights: bool
    label_smoothing: float
    learning_rate: float
    checkpoint_on: str
    early_stopping_on: str
    batch_size: int = 32


RECIPES = {
    "origin": Recipe(
        name="origin", architecture="origin",
        description="origin project: 3-conv CNN, Augmentor +500/class on the training split, Adam, sparse "
                    "categorical cross-entropy, best val_accuracy, EarlyStopping(patience=5) on val_loss",
        epochs=50, patience=5, rebalance="add", rebalance_n=500, class_weights=False, label_smoothing=0.0,
        learning_rate=1e-3, checkpoint_on="val_accuracy", early_stopping_on="val_loss"),
    "resnet": Recipe(
        name="resnet", architecture="resnet",
        description="small residual CNN with batch norm and global average pooling; Augmentor tops small "
                    "classes up to 500 on the training split; square-root class weights; flips, free rotation, "
                    "zoom, contrast and brightness augmentation; label smoothing 0.1; AdamW with warm-up and "
                    "cosine decay; best and early stopping on validation balanced accuracy",
        epochs=40, patience=8, rebalance="topup", rebalance_n=500, class_weights=True, label_smoothing=0.1,
        learning_rate=2e-3, checkpoint_on="val_balanced_accuracy", early_stopping_on="val_balanced_accuracy"),
}
DEFAULT_RECIPE = "resnet"


@dataclass
class TrainConfig:
    """Everything that determines a training run; ``None`` fields take the recipe's value."""

    data_dirs: tuple[Path, ...]
    recipe: str = DEFAULT_RECIPE
    epochs: int | None = None
    patience: int | None = None
    augment_per_class: int | None = None
    limit_per_class: int | None = None
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    seed: int = 123
    target_sensitivity: float = 0.85

    def resolved(self) -> Recipe:
        r = RECIPES[self.recipe]
        return replace(r, epochs=self.epochs or r.epochs, patience=self.patience or r.patience,
                       rebalance_n=r.rebalance_n if self.augment_per_class is None else self.augment_per_class)


@dataclass
class Prepared:
    """The cleaned, split data of a run."""

    train: list[data.Sample]
    val: list[data.Sample]
    test: list[data.Sample]
    info: dict = field(default_factory=dict)
    report: data.CleanReport | None = None


def git_commit() -> str | None:
    """The commit of the code that trains, for the version's metadata."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def prepare(cfg: TrainConfig) -> Prepared:
    """Read, clean and split the data (by lesion, before any augmentation)."""
    samples: list[data.Sample] = []
    for d in cfg.data_dirs:
        samples.extend(data.read_dataset(d))
    kept, report = data.clean(samples)
    if cfg.limit_per_class:
        kept = data.limit_per_class(kept, cfg.limit_per_class, cfg.seed)
    train, val, test = data.split_three(kept, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    info = {
        "sources": [Path(d).name if Path(d).name not in ("Train", "train") else f"{Path(d).parent.name}/{Path(d).name}"
                    for d in cfg.data_dirs],
        "cleaning": report.as_dict(),
        "fingerprint": data.fingerprint(kept),
        "listing_fingerprint": data.listing_fingerprint(list(cfg.data_dirs)),
        "split": "by lesion (HAM10000 lesion id where known, else image), stratified by class, before augmentation",
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "limit_per_class": cfg.limit_per_class,
        "train_images": len(train),
        "val_images": len(val),
        "test_images": len(test),
        "train_counts": data.class_counts(train),
        "val_counts": data.class_counts(val),
        "test_counts": data.class_counts(test),
    }
    return Prepared(train, val, test, info, report)


def augment(train: list[data.Sample], counts: dict[str, int], scratch: Path, seed: int) -> list[data.Sample]:
    """Generate ``counts[label]`` extra images per class with Augmentor, from training images only.

    Augmentor reads symlinks to the training split in ``scratch`` and writes there too, so the
    data set itself is never written to and no validation image can leak into the output.
    The origin recipe's operation: rotate up to 10° either way with probability 0.7.
    """
    import Augmentor

    out: list[data.Sample] = []
    by_class: dict[str, list[data.Sample]] = {}
    for s in train:
        by_class.setdefault(s.label, []).append(s)
    for label, members in sorted(by_class.items()):
        n = counts.get(label, 0)
        if n <= 0:
            continue
        src = scratch / "source" / slug(label)
        dst = scratch / "augmented" / slug(label)
        src.mkdir(parents=True)
        for i, s in enumerate(members):
            os.symlink(s.path.resolve(), src / f"{i:05d}{s.path.suffix.lower()}")
        random.seed(seed)
        np.random.seed(seed)
        with contextlib.redirect_stdout(sys.stderr):
            pipeline = Augmentor.Pipeline(source_directory=str(src), output_directory=str(dst.resolve()))
            pipeline.set_seed(seed)
            pipeline.rotate(probability=0.7, max_left_rotation=10, max_right_rotation=10)
            pipeline.sample(n, multi_threaded=False)
        for f in sorted(dst.iterdir()):
            out.append(data.Sample(path=f, label=label, image_id=f.stem, source="augmentor"))
    return out


def rebalance_counts(recipe: Recipe, train: list[data.Sample]) -> dict[str, int]:
    """How many Augmentor samples each class of the training split gets under ``recipe``."""
    have = data.class_counts(train)
    if recipe.rebalance == "add":
        return {c: recipe.rebalance_n for c, n in have.items() if n > 0}
    return {c: max(recipe.rebalance_n - n, 0) for c, n in have.items() if n > 0}


def class_weights(counts: dict[str, int]) -> np.ndarray:
    """Square-root inverse-frequency weights per class (mean 1 over the classes present)."""
    n = np.array([counts.get(c, 0) for c in CLASS_NAMES], dtype=np.float64)
    w = np.zeros_like(n)
    present = n > 0
    w[present] = 1.0 / np.sqrt(n[present])
    w[present] /= w[present].mean()
    return w


def print_data_report(info: dict, file=sys.stderr) -> None:
    """What cleaning dropped and the class distribution before and after rebalancing, as a table."""
    c = info["cleaning"]
    print(f"data: read {c['read']}, kept {c['kept']}; dropped {c['dropped_duplicates']} duplicates and "
          f"{c['dropped_ambiguous']} ambiguous; relabelled {c['relabelled']}", file=file)
    print(f"{'class':<28} {'train':>6} {'+aug':>6} {'= fit':>6} {'val':>6} {'test':>6}", file=file)
    for name in CLASS_NAMES:
        before = info["train_counts"][name]
        after = info["train_counts_after_rebalancing"][name]
        print(f"{name:<28} {before:>6} {after - before:>6} {after:>6} {info['val_counts'][name]:>6} "
              f"{info['test_counts'][name]:>6}", file=file)


def _balanced_accuracy_callback(x_val, y_val, batch_size):
    import keras

    class BalancedAccuracy(keras.callbacks.Callback):
        """Adds ``val_balanced_accuracy`` to the epoch logs (before checkpoint and early stopping read them)."""

        def on_epoch_end(self, epoch, logs=None):
            probs = self.model.predict(x_val, batch_size=batch_size * 2, verbose=0)
            logs["val_balanced_accuracy"] = evaluate.metrics(y_val, probs)["balanced_accuracy"]

    return BalancedAccuracy()


def fit(recipe: Recipe, prepared: Prepared, scratch: Path, seed: int):
    """Rebalance, decode and fit; returns the best model (uncompiled), the history and the run's arrays."""
    import keras
    import tensorflow as tf

    from melanoma import model as model_lib

    keras.utils.set_random_seed(seed)
    extra_counts = rebalance_counts(recipe, prepared.train)
    extra = augment(prepared.train, extra_counts, scratch, seed)
    fit_s = prepared.train + extra
    prepared.info["augmented_images"] = len(extra)
    prepared.info["train_counts_after_rebalancing"] = data.class_counts(fit_s)
    print_data_report(prepared.info, file=sys.stderr)
    x_train, y_train = data.load_arrays([s.path for s in fit_s], [s.label_index for s in fit_s], "training images")
    x_val, y_val = data.load_arrays([s.path for s in prepared.val], [s.label_index for s in prepared.val],
                                    "validation images")

    n_classes = len(CLASS_NAMES)
    weights = class_weights(data.class_counts(fit_s)) if recipe.class_weights else np.ones(n_classes)
    prepared.info["class_weights"] = {c: round(float(w), 4) for c, w in zip(CLASS_NAMES, weights)}
    one_hot = recipe.label_smoothing > 0

    def to_target(x, y):
        target = tf.one_hot(y, n_classes) if one_hot else y
        return x, target, tf.gather(tf.constant(weights, tf.float32), y)

    train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
                .map(to_target).batch(recipe.batch_size).prefetch(tf.data.AUTOTUNE))
    val_ds = (tf.data.Dataset.from_tensor_slices((x_val, y_val))
              .map(lambda x, y: to_target(x, y)[:2]).batch(recipe.batch_size).prefetch(tf.data.AUTOTUNE))

    net = model_lib.build(recipe.architecture, seed=seed)
    if recipe.architecture != "origin":
        steps = math.ceil(len(x_train) / recipe.batch_size)
        warmup = min(2 * steps, steps * recipe.epochs // 4)
        schedule = keras.optimizers.schedules.CosineDecay(
            recipe.learning_rate / 20, decay_steps=max(steps * recipe.epochs - warmup, 1), alpha=0.01,
            warmup_target=recipe.learning_rate, warmup_steps=warmup)
        net.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4),
                    loss=keras.losses.CategoricalCrossentropy(from_logits=True,
                                                              label_smoothing=recipe.label_smoothing),
                    metrics=["accuracy"])
    best = scratch / "best.keras"
    callbacks = [
        _balanced_accuracy_callback(x_val, y_val, recipe.batch_size),
        keras.callbacks.ModelCheckpoint(best, monitor=recipe.checkpoint_on, save_best_only=True, mode="max"),
        keras.callbacks.EarlyStopping(monitor=recipe.early_stopping_on, patience=recipe.patience,
                                      mode="min" if recipe.early_stopping_on.endswith("loss") else "max"),
    ]
    # The dataset reshuffles itself every epoch; Keras must not try to.
    history = net.fit(train_ds, validation_data=val_ds, epochs=recipe.epochs, callbacks=callbacks, shuffle=False,
                      verbose=1 if sys.stderr.isatty() else 2)
    # Reload the best epoch without its optimizer state: a third of the size, same predictions.
    best_model = keras.saving.load_model(best, compile=False)
    return best_model, history.history, (x_val, y_val)


def predict_probs(model, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Softmax probabilities of a logits model on uint8 images."""
    import tensorflow as tf

    return tf.nn.softmax(model.predict(x, batch_size=batch_size, verbose=0), axis=-1).numpy()


def finish(model, history: dict, prepared: Prepared, recipe: Recipe, cfg: TrainConfig, registry: Registry,
           scratch: Path, val_arrays: tuple[np.ndarray, np.ndarray]) -> ModelMeta:
    """Choose the operating point, evaluate, plot, write the card and publish (not yet current)."""
    x_val, y_val = val_arrays
    val_probs = predict_probs(model, x_val)
    threshold = evaluate.melanoma_threshold(y_val, val_probs, cfg.target_sensitivity)
    scores = evaluate.metrics(y_val, val_probs, threshold)
    monitored = history.get(recipe.checkpoint_on) or history.get("val_accuracy")
    scores["epochs_run"] = len(history["loss"])
    scores["best_epoch"] = int(np.argmax(monitored)) + 1
    files: dict[str, Path] = {}

    def out(name: str) -> Path:
        files[name] = scratch / name
        return files[name]

    evaluate.plot_history(history, out("training_curves.png"))
    evaluate.plot_confusion(scores["confusion_matrix"], out("confusion_matrix.png"),
                            "Validation confusion matrix (held-out lesions)")
    evaluate.plot_roc(y_val, val_probs, threshold, out("roc_melanoma.png"), "Melanoma ROC, validation")
    evaluate.plot_class_distribution(
        {"training split": prepared.info["train_counts"],
         "after rebalancing": prepared.info["train_counts_after_rebalancing"],
         "validation": prepared.info["val_counts"]},
        out("class_distribution.png"), "Images per class")
    if prepared.test:
        x_test, y_test = data.load_arrays([s.path for s in prepared.test], [s.label_index for s in prepared.test],
                                          "test images")
        test_probs = predict_probs(model, x_test)
        scores["test"] = evaluate.metrics(y_test, test_probs, threshold)
        evaluate.plot_confusion(scores["test"]["confusion_matrix"], out("confusion_matrix_test.png"),
                                "Test confusion matrix (held-out lesions)")
        evaluate.plot_roc(y_test, test_probs, threshold, out("roc_melanoma_test.png"), "Melanoma ROC, test")
    out("history.json").write_text(json.dumps(history))
    if prepared.report is not None:
        out("data_report.json").write_text(json.dumps({
            "dropped_duplicates": prepared.report.dropped_duplicates,
            "dropped_ambiguous": prepared.report.dropped_ambiguous,
            "relabelled": prepared.report.relabelled,
            "resolved_conflicts": prepared.report.resolved_conflicts,
        }, indent=1))
    model.save(out("model.keras"))
    files.pop("model.keras")

    meta = ModelMeta(
        version=new_version_id(recipe.architecture),
        architecture=recipe.architecture,
        classes=list(CLASS_NAMES),
        recipe=f"{recipe.name}: {recipe.description}",
        seed=cfg.seed,
        git_commit=git_commit(),
        data=prepared.info,
        metrics=scores,
        melanoma_threshold=threshold,
        target_sensitivity=cfg.target_sensitivity,
    )
    modelcard.write(meta, out("MODEL_CARD.md"))
    registry.publish(scratch / "model.keras", meta, extra_files=files)
    return meta


def train(cfg: TrainConfig, registry: Registry, workdir: Path | None = None) -> tuple[ModelMeta, Prepared, tuple]:
    """Run the recipe end to end and publish the result (not current); returns its metadata, data and val arrays."""
    recipe = cfg.resolved()
    prepared = prepare(cfg)
    if not prepared.train or not prepared.val:
        raise ValueError("not enough images to split into training and validation")
    scratch = Path(tempfile.mkdtemp(prefix="melanoma-train-", dir=workdir))
    try:
        model, history, val_arrays = fit(recipe, prepared, scratch, cfg.seed)
        meta = finish(model, history, prepared, recipe, cfg, registry, scratch, val_arrays)
        return meta, prepared, val_arrays
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
