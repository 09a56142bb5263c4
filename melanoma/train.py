"""Train a model with the origin recipe and publish it as a registry version.

The recipe: clean the data, split by lesion *before* anything is augmented, add Augmentor
samples per class to the training split only (into a scratch folder), fit with Adam on
sparse categorical cross-entropy from logits, keep the best epoch by validation accuracy,
stop after ``patience`` epochs without validation-loss improvement. Imports TensorFlow.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from melanoma import data, evaluate
from melanoma.labels import CLASS_NAMES, slug
from melanoma.registry import ModelMeta, Registry, new_version_id
from melanoma.settings import REPO_ROOT

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Everything that determines a training run."""

    data_dirs: tuple[Path, ...]
    architecture: str = "origin"
    epochs: int = 50
    patience: int = 5
    batch_size: int = 32
    val_fraction: float = 0.2
    augment_per_class: int = 500
    limit_per_class: int | None = None
    seed: int = 123


def git_commit() -> str | None:
    """The commit of the code that trains, for the version's metadata."""
    try:
        out = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def augment(train: list[data.Sample], per_class: int, scratch: Path, seed: int) -> list[data.Sample]:
    """Generate ``per_class`` extra images per class with Augmentor, from training images only.

    Augmentor reads a copy of the training split in ``scratch`` and writes there too, so the
    data set itself is never written to and no validation image can leak into the output.
    """
    import Augmentor

    out: list[data.Sample] = []
    by_class: dict[str, list[data.Sample]] = {}
    for s in train:
        by_class.setdefault(s.label, []).append(s)
    for label, members in sorted(by_class.items()):
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
        with contextlib.redirect_stdout(sys.stderr):
            pipeline.sample(per_class, multi_threaded=False)
        for f in sorted(dst.iterdir()):
            out.append(data.Sample(path=f, label=label, image_id=f.stem, source="augmentor"))
    return out


def prepare(cfg: TrainConfig) -> tuple[list[data.Sample], list[data.Sample], dict]:
    """Read, clean and split the data; return training and validation samples and a data report."""
    samples: list[data.Sample] = []
    for d in cfg.data_dirs:
        samples.extend(data.read_dataset(d))
    kept, report = data.clean(samples)
    if cfg.limit_per_class:
        kept = data.limit_per_class(kept, cfg.limit_per_class, cfg.seed)
    train, val = data.split_by_lesion(kept, cfg.val_fraction, cfg.seed)
    info = {
        "sources": [str(d) for d in cfg.data_dirs],
        "cleaning": report.as_dict(),
        "split": "by lesion, stratified by class",
        "val_fraction": cfg.val_fraction,
        "train_images": len(train),
        "val_images": len(val),
        "train_counts": data.class_counts(train),
        "val_counts": data.class_counts(val),
    }
    return train, val, info


def train(cfg: TrainConfig, registry: Registry, make_current: bool = False, workdir: Path | None = None) -> ModelMeta:
    """Run the recipe end to end and publish the result; returns the new version's metadata."""
    import keras
    import tensorflow as tf

    from melanoma import model as model_lib

    keras.utils.set_random_seed(cfg.seed)
    train_s, val_s, info = prepare(cfg)
    if not train_s or not val_s:
        raise ValueError("not enough images to split into training and validation")
    scratch = Path(tempfile.mkdtemp(prefix="melanoma-train-", dir=workdir))
    try:
        extra = augment(train_s, cfg.augment_per_class, scratch, cfg.seed) if cfg.augment_per_class else []
        info["augmented_images"] = len(extra)
        info["train_counts_after_augmentation"] = data.class_counts(train_s + extra)
        fit_s = train_s + extra
        x_train, y_train = data.load_arrays([s.path for s in fit_s], [s.label_index for s in fit_s], "training images")
        x_val, y_val = data.load_arrays([s.path for s in val_s], [s.label_index for s in val_s], "validation images")

        train_ds = (tf.data.Dataset.from_tensor_slices((x_train, y_train))
                    .shuffle(len(x_train), seed=cfg.seed, reshuffle_each_iteration=True)
                    .batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE))
        val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).batch(cfg.batch_size).prefetch(tf.data.AUTOTUNE)

        net = model_lib.build(cfg.architecture, seed=cfg.seed)
        best = scratch / "best.keras"
        callbacks = [
            keras.callbacks.ModelCheckpoint(best, monitor="val_accuracy", save_best_only=True, mode="max"),
            keras.callbacks.EarlyStopping(patience=cfg.patience),
        ]
        # The dataset reshuffles itself every epoch; Keras must not try to.
        history = net.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks, shuffle=False,
                          verbose=1 if sys.stderr.isatty() else 2)
        # Reload the best epoch without its optimizer state: a third of the size, same predictions.
        net = keras.saving.load_model(best, compile=False)
        final = scratch / "model.keras"
        net.save(final)
        logits = net.predict(val_ds, verbose=0)
        probs = tf.nn.softmax(logits).numpy()
        scores = evaluate.metrics(y_val, probs)
        scores["epochs_run"] = len(history.history["loss"])
        scores["best_epoch"] = int(np.argmax(history.history["val_accuracy"])) + 1

        plots = {}
        evaluate.plot_history(history.history, scratch / "training_curves.png")
        plots["training_curves.png"] = scratch / "training_curves.png"
        evaluate.plot_confusion(scores["confusion_matrix"], scratch / "confusion_matrix.png",
                                "Validation confusion matrix (held-out lesions)")
        plots["confusion_matrix.png"] = scratch / "confusion_matrix.png"
        (scratch / "history.json").write_text(json.dumps(history.history))
        plots["history.json"] = scratch / "history.json"

        meta = ModelMeta(
            version=new_version_id(cfg.architecture),
            architecture=cfg.architecture,
            classes=list(CLASS_NAMES),
            recipe=f"{cfg.architecture}: Augmentor +{cfg.augment_per_class}/class on the training split, "
                   f"Adam, up to {cfg.epochs} epochs, best val_accuracy, EarlyStopping(patience={cfg.patience})",
            seed=cfg.seed,
            git_commit=git_commit(),
            data=info,
            metrics=scores,
        )
        registry.publish(final, meta, extra_files=plots, make_current=make_current)
        return meta
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
