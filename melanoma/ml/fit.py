"""Fit a recipe's network on prepared data: rebalance, decode, batch, compile and run Keras's fit loop
with checkpoints that let a stopped run resume. Imports TensorFlow."""

from __future__ import annotations

import hashlib
import logging
import math
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import callbacks, data, splits
from melanoma.ml.rebalance import augment, class_weights, rebalance_counts
from melanoma.ml.recipes import DRAWN, Recipe, TrainConfig
from melanoma.ml.train_data import Prepared, print_data_report
from melanoma.versions.registry import Registry

log = logging.getLogger(__name__)


def _cached_arrays(
    samples: list[data.Sample], workdir: Path, name: str, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images of ``samples`` at ``size``, cached in ``workdir`` under a hash of their paths,
    labels and the size."""
    listing = "\n".join(f"{s.path}\t{s.label}" for s in samples) + f"\n{size}"
    key = hashlib.sha256(listing.encode()).hexdigest()[:16]
    xf, yf = workdir / f"{name}-{key}-x.npy", workdir / f"{name}-{key}-y.npy"
    if xf.is_file() and yf.is_file():
        return np.load(xf, mmap_mode="r"), np.load(yf)
    x, y = data.load_arrays([s.path for s in samples], [s.label_index for s in samples], f"{name} images", size)
    np.save(xf.with_suffix(".tmp.npy"), x)
    np.save(yf, y)
    os.replace(xf.with_suffix(".tmp.npy"), xf)
    return x, y


def stream_seed(seed: int, init_from: str | None) -> int:
    """The seed of a run's random streams: the images each epoch draws, their augmentation, dropout.

    A run that continues a version (``init_from``) gets streams of its own. With the split's seed
    alone every stage drew, epoch for epoch, the same images with the same augmentation as the stages
    before it, so a chain of short stages kept re-learning one small set of draws."""
    if not init_from:
        return seed
    digest = hashlib.sha256(f"{seed}:{init_from}".encode()).digest()
    return int.from_bytes(digest[:4], "little") % (2**31 - 1)


def epoch_draws(probs: np.ndarray, size: int, seed: int, epoch: int) -> tuple[np.ndarray, np.random.Generator]:
    """The indices of the images one epoch of a sampling recipe trains on (with replacement), and the
    generator that drew them (mixup continues its stream)."""
    rng = np.random.default_rng(seed * 1000 + epoch)
    return rng.choice(len(probs), size=size, replace=True, p=probs), rng


def _mixup(
    images: np.ndarray, targets: np.ndarray, rng: np.random.Generator, alpha: float
) -> tuple[np.ndarray, np.ndarray]:
    """Blend every image (uint8) and its one-hot target with a random partner of the same batch."""
    lam = rng.beta(alpha, alpha, size=len(images)).astype(np.float32)
    lam = np.maximum(lam, 1 - lam)  # the first image dominates, so each image is still seen
    partner = rng.permutation(len(images))
    mixed = lam[:, None, None, None] * images + (1 - lam[:, None, None, None]) * images[partner]
    return np.rint(mixed).astype(np.uint8), lam[:, None] * targets + (1 - lam[:, None]) * targets[partner]


def _sampled_dataset(
    x: np.ndarray, y: np.ndarray, probs: np.ndarray, recipe: Recipe, n_classes: int, seed: int, start_epoch: int
) -> Any:
    """A tf.data pipeline that draws ``recipe.samples_per_epoch`` images per epoch with ``probs``
    (with replacement; augmentation makes repeats differ)."""
    import tensorflow as tf

    steps = max(recipe.samples_per_epoch // recipe.batch_size, 1)
    epoch = [start_epoch]
    eye = np.eye(n_classes, dtype=np.float32)
    smooth = recipe.label_smoothing > 0

    def batches() -> Any:
        idx, rng = epoch_draws(probs, steps * recipe.batch_size, seed, epoch[0])
        epoch[0] += 1
        for k in range(steps):
            b = np.sort(idx[k * recipe.batch_size : (k + 1) * recipe.batch_size])
            images = np.asarray(x[b])
            target = eye[y[b]] if smooth else y[b].astype(np.int32)
            if recipe.mixup > 0:
                images, target = _mixup(images, eye[y[b]], rng, recipe.mixup)
            yield images, target

    one_hot = smooth or recipe.mixup > 0
    target_spec = tf.TensorSpec([None, n_classes], tf.float32) if one_hot else tf.TensorSpec([None], tf.int32)
    ds = tf.data.Dataset.from_generator(
        batches, output_signature=(tf.TensorSpec([None, *x.shape[1:]], tf.uint8), target_spec)
    )
    # One endless stream of epochs (each a fresh draw); fit() is told how many steps make an epoch.
    return ds.repeat().prefetch(2), steps


def _training_set(recipe: Recipe, prepared: Prepared, scratch: Path, seed: int) -> tuple[list, np.ndarray | None, bool]:
    """The samples to fit on (the training split plus Augmentor's extra images) and, for the sampling
    recipes, each sample's probability of being drawn; records both in ``prepared.info``."""
    extra_counts = rebalance_counts(recipe, prepared.train) if recipe.rebalance != "none" else {}
    shutil.rmtree(scratch / "augmentor", ignore_errors=True)
    extra = augment(prepared.train, extra_counts, scratch / "augmentor", seed) if extra_counts else []
    fit_s = prepared.train + extra
    prepared.info["augmented_images"] = len(extra)
    prepared.info["train_counts_after_rebalancing"] = data.class_counts(fit_s)
    if recipe.sampling not in DRAWN:
        return fit_s, None, bool(extra)
    if recipe.sampling == "source_class":
        probs = splits.sampling_weights(fit_s, recipe.class_power, recipe.source_power)
    else:
        probs = splits.class_sampling_weights(fit_s, recipe.class_power)
    follow_up = np.asarray([s.label == "nevus" and s.confirmed_by == "follow_up" for s in fit_s], dtype=bool)
    follow_up_share = float(probs[follow_up].sum())
    if recipe.follow_up_weight != 1:
        probs = splits.reweighted_within_cells(fit_s, probs, np.where(follow_up, recipe.follow_up_weight, 1.0))
    expected = {c: 0.0 for c in CLASS_NAMES}
    for s_, p_ in zip(fit_s, probs):
        expected[s_.label] += p_ * recipe.samples_per_epoch
    prepared.info["train_counts_after_rebalancing"] = {c: int(round(v)) for c, v in expected.items()}
    prepared.info["sampling"] = {
        "mode": recipe.sampling,
        "samples_per_epoch": recipe.samples_per_epoch,
        "class_power": recipe.class_power,
        "source_power": recipe.source_power,
    }
    if recipe.follow_up_weight != 1:
        # What the weight did: the share of all draws that are follow-up nevi, before and after.
        prepared.info["sampling"] |= {
            "follow_up_weight": recipe.follow_up_weight,
            "follow_up_nevi_share": [follow_up_share, float(probs[follow_up].sum())],
        }
    return fit_s, probs, bool(extra)


def _datasets(
    recipe: Recipe,
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    probs: np.ndarray | None,
    weights: np.ndarray,
    seed: int,
    start_epoch: int,
) -> tuple[Any, Any, int]:
    """The training and validation ``tf.data`` pipelines and the steps per epoch."""
    import tensorflow as tf

    x_train, y_train, x_val, y_val = arrays
    n_classes = len(CLASS_NAMES)
    one_hot = recipe.label_smoothing > 0 or recipe.mixup > 0

    def to_target(x: Any, y: Any) -> Any:
        target = tf.one_hot(y, n_classes) if one_hot else y
        return x, target, tf.gather(tf.constant(weights, tf.float32), y)

    if probs is not None:
        train_ds, steps = _sampled_dataset(x_train, y_train, probs, recipe, n_classes, seed, start_epoch)
    else:
        steps = math.ceil(len(x_train) / recipe.batch_size)
        train_ds = (
            tf.data.Dataset.from_tensor_slices((x_train, y_train))
            .shuffle(len(x_train), seed=seed, reshuffle_each_iteration=True)
            .map(to_target)
            .batch(recipe.batch_size)
            .prefetch(tf.data.AUTOTUNE)
        )
    val_ds = (
        tf.data.Dataset.from_tensor_slices((x_val, y_val))
        .map(lambda x, y: to_target(x, y)[:2])
        .batch(recipe.batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train_ds, val_ds, steps


def _freeze(net: Any, recipe: Recipe) -> None:
    """Freeze a pretrained backbone's stem and first blocks, and all its batch normalisations."""
    if recipe.train_from_block is None:
        return
    import keras

    for layer in net.layers:
        name = layer.name
        below = name.startswith(("_conv_stem", "_bn0")) or (
            name.startswith("_blocks.") and int(name.split(".")[1]) < recipe.train_from_block
        )
        in_backbone = name.startswith(("_conv_stem", "_bn0", "_blocks.", "_conv_head", "_bn1"))
        if below or (in_backbone and isinstance(layer, keras.layers.BatchNormalization)):
            layer.trainable = False


def _compile(net: Any, recipe: Recipe, steps: int) -> None:
    """AdamW with warm-up and cosine decay, and the recipe's loss (the origin recipe compiles itself)."""
    import keras

    if recipe.architecture == "origin":
        return
    warmup = min(2 * steps, steps * recipe.epochs // 4)
    schedule = keras.optimizers.schedules.CosineDecay(
        recipe.learning_rate / 20,
        decay_steps=max(steps * recipe.epochs - warmup, 1),
        alpha=0.01,
        warmup_target=recipe.learning_rate,
        warmup_steps=warmup,
    )
    one_hot = recipe.label_smoothing > 0 or recipe.mixup > 0
    loss = (
        keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
        if one_hot
        else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    net.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss, metrics=["accuracy"])


def fit(
    recipe: Recipe,
    prepared: Prepared,
    scratch: Path,
    seed: int,
    cfg: TrainConfig | None = None,
    registry: Registry | None = None,
) -> tuple[Any, dict, tuple[np.ndarray, np.ndarray]]:
    """Rebalance, decode and fit; returns the best model (uncompiled, float32), the history and the
    validation arrays.

    ``scratch`` keeps the decoded arrays, the best checkpoint, a backup of the last epoch and the
    epoch log: a run stopped part-way continues from there (``cfg.resume``).
    """
    import keras

    from melanoma.ml import model as model_lib

    cfg = cfg or TrainConfig(data_dirs=())
    keras.utils.set_random_seed(seed)
    fit_s, probs, augmented = _training_set(recipe, prepared, scratch, seed)
    stream = stream_seed(seed, cfg.init_from)
    if stream != seed:  # a run from scratch keeps the streams it always had
        keras.utils.set_random_seed(stream)
    seed = prepared.info["stream_seed"] = stream
    size = model_lib.input_size(recipe.architecture, recipe.backbone, recipe.image_size)
    print_data_report(prepared.info, file=sys.stderr)
    if augmented:
        x_train, y_train = data.load_arrays(
            [s.path for s in fit_s], [s.label_index for s in fit_s], "training images", size
        )
    else:
        x_train, y_train = _cached_arrays(fit_s, scratch, "train", size)
    x_val, y_val = _cached_arrays(prepared.val, scratch, "val", size)
    weights = class_weights(data.class_counts(fit_s)) if recipe.class_weights else np.ones(len(CLASS_NAMES))
    prepared.info["class_weights"] = {c: round(float(w), 4) for c, w in zip(CLASS_NAMES, weights)}

    log_file = scratch / "epochs.jsonl"
    start_epoch, old_history = callbacks.resume_state(log_file, recipe.checkpoint_on) if cfg.resume else (0, {})
    if not cfg.resume:
        log_file.unlink(missing_ok=True)
        shutil.rmtree(scratch / "backup", ignore_errors=True)
    train_ds, val_ds, steps = _datasets(recipe, (x_train, y_train, x_val, y_val), probs, weights, seed, start_epoch)

    keras.mixed_precision.set_global_policy(cfg.precision)
    try:
        net = model_lib.build(recipe.architecture, seed, recipe.backbone, recipe.image_size, recipe.augmentation)
        if cfg.init_from and registry is not None:
            copied = model_lib.transfer_weights(registry.load(cfg.init_from), net)
            log.info("initialised %d layers from %s", copied, cfg.init_from)
        _freeze(net, recipe)
        _compile(net, recipe, steps)
        # The dataset reshuffles itself every epoch; Keras must not try to.
        history = net.fit(
            train_ds,
            validation_data=val_ds if recipe.keras_validation else None,
            epochs=recipe.epochs,
            callbacks=callbacks.callbacks(recipe, scratch, (x_val, y_val), old_history, start_epoch),
            steps_per_epoch=steps if probs is not None else None,
            shuffle=False,
            verbose=1 if sys.stderr.isatty() else 0,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # A run resumed after its last epoch (stopped while evaluating) runs none: its history is the log's.
    merged = {k: old_history.get(k, []) + list(history.history.get(k, [])) for k in {*old_history, *history.history}}
    # Reload the best epoch without its optimizer state (a third of the size, same predictions),
    # as a float32 model whatever the training precision.
    trained = keras.saving.load_model(scratch / "best.keras", compile=False)
    best_model = model_lib.build(recipe.architecture, seed, recipe.backbone, recipe.image_size, recipe.augmentation)
    best_model.set_weights(trained.get_weights())
    return best_model, merged, (np.asarray(x_val), y_val)
