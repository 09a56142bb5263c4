"""Train a model with a named recipe, evaluate it, and publish it as a registry version.

Every recipe: clean the data, split by lesion *before* anything is augmented, add Augmentor
samples to the training split only (in a scratch folder), fit, keep the best epoch, choose the
melanoma operating point on validation, evaluate, plot, write a model card, publish, and
(optionally) promote through the gate. Imports TensorFlow.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from melanoma.core.labels import CLASS_NAMES
from melanoma.core.settings import REPO_ROOT
from melanoma.ml import data, evaluate, plots
from melanoma.ml.assess import evaluate_sources, predict_logits, predict_probs
from melanoma.ml.rebalance import augment, class_weights, rebalance_counts
from melanoma.ml.recipes import Recipe, TrainConfig
from melanoma.versions import modelcard
from melanoma.versions.registry import SPLIT_FILE, ModelMeta, Registry, new_version_id

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The cleaned, split data of a run."""

    train: list[data.Sample]
    val: list[data.Sample]
    test: list[data.Sample]
    info: dict = field(default_factory=dict)
    external: list[data.Sample] = field(default_factory=list)
    report: data.CleanReport | None = None


def git_commit() -> str | None:
    """The commit of the code that trains, for the version's metadata."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def inherited_split(registry: Registry, version: str, data_dirs: tuple[Path, ...]) -> dict[str, str]:
    """Image id -> ``train``/``val``/``test`` as ``version`` was split, recomputed from its metadata.

    Raises ValueError when the data it was trained on cannot be found among ``data_dirs`` or no
    longer gives the same images (its fingerprint).
    """
    meta = registry.meta(version)
    recorded = registry.path(version) / SPLIT_FILE
    if recorded.is_file():
        sides = json.loads(recorded.read_text())
        # External images were never trained on, but they are the excluded source's: keep them out of training.
        return {i: side if side != "external" else "test" for side, ids in sides.items() for i in ids}
    d = meta.data
    dirs = []
    for name in d.get("sources", []):
        match = [p for p in data_dirs if str(Path(p).resolve()).endswith("/" + name)]
        if not match:
            raise ValueError(f"cannot reproduce the split of {version}: its source {name!r} is not among --data")
        dirs.append(match[0])
    kept, _ = data.read_clean(tuple(dirs))
    if d.get("limit_per_class"):
        kept = data.limit_per_class(kept, d["limit_per_class"], meta.seed or 123)
    if data.fingerprint(kept) != d.get("fingerprint"):
        raise ValueError(f"cannot reproduce the split of {version}: its training data changed")
    train, val, test = data.split_three(kept, d.get("val_fraction", 0.2), d.get("test_fraction", 0.0), meta.seed or 123)
    return {
        **{s.image_id: "train" for s in train},
        **{s.image_id: "val" for s in val},
        **{s.image_id: "test" for s in test},
    }


def prepare(cfg: TrainConfig, registry: Registry | None = None) -> Prepared:
    """Read, clean and split the data (by lesion, before any augmentation).

    Images of an excluded source (and their copies in other sources) are kept out of all three
    splits and returned as the external test. With ``cfg.init_from`` the split of that version is
    kept for the images it knew.
    """
    kept, report = data.read_clean(cfg.data_dirs)
    if cfg.limit_per_class:
        kept = data.limit_per_class(kept, cfg.limit_per_class, cfg.seed)
    unknown = set(cfg.exclude_sources) - {s for k in kept for s in data.sources_of(k)}
    if unknown:
        raise ValueError(f"--exclude-source {', '.join(sorted(unknown))}: no such source among the data folders")
    kept, external = data.separate_sources(kept, set(cfg.exclude_sources))
    if cfg.init_from:
        if registry is None:
            raise ValueError("init_from needs the registry")
        assigned = inherited_split(registry, cfg.init_from, cfg.data_dirs)
        train, val, test = data.split_inherited(kept, assigned, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    else:
        train, val, test = data.split_three(kept, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    info = {
        "sources": [
            Path(d).name if Path(d).name not in ("Train", "train") else f"{Path(d).parent.name}/{Path(d).name}"
            for d in cfg.data_dirs
        ],
        "excluded_sources": list(cfg.exclude_sources),
        "initialised_from": cfg.init_from,
        "cleaning": report.as_dict(),
        "fingerprint": data.fingerprint(kept),
        "listing_fingerprint": data.listing_fingerprint(list(cfg.data_dirs)),
        "split": "by lesion (HAM10000 lesion id where known, else image), stratified by class, before augmentation"
        + (f"; images {cfg.init_from} was trained, validated or tested on keep their side" if cfg.init_from else ""),
        "val_fraction": cfg.val_fraction,
        "test_fraction": cfg.test_fraction,
        "limit_per_class": cfg.limit_per_class,
        "train_images": len(train),
        "val_images": len(val),
        "test_images": len(test),
        "external_images": len(external),
        "train_counts": data.class_counts(train),
        "val_counts": data.class_counts(val),
        "test_counts": data.class_counts(test),
        "source_counts": {
            "train": data.source_class_counts(train),
            "val": data.source_class_counts(val),
            "test": data.source_class_counts(test),
            "external": data.source_class_counts(external),
        },
    }
    return Prepared(train, val, test, info, external=external, report=report)


def print_data_report(info: dict, file: TextIO = sys.stderr) -> None:
    """What cleaning dropped and the class distribution before and after rebalancing, as a table."""
    c = info["cleaning"]
    print(
        f"data: read {c['read']}, kept {c['kept']}; dropped {c['dropped_duplicates']} duplicates and "
        f"{c['dropped_ambiguous']} ambiguous; relabelled {c['relabelled']}",
        file=file,
    )
    fit_label = "/epoch" if "sampling" in info else "= fit"
    print(f"{'class':<28} {'train':>6} {fit_label:>6} {'val':>6} {'test':>6} {'extern':>6}", file=file)
    external = info.get("source_counts", {}).get("external", {})
    for name in CLASS_NAMES:
        print(
            f"{name:<28} {info['train_counts'][name]:>6} {info['train_counts_after_rebalancing'][name]:>6} "
            f"{info['val_counts'][name]:>6} {info['test_counts'][name]:>6} "
            f"{sum(counts.get(name, 0) for counts in external.values()):>6}",
            file=file,
        )


def _balanced_accuracy_callback(x_val: np.ndarray, y_val: np.ndarray, batch_size: int) -> Any:
    import keras

    class BalancedAccuracy(keras.callbacks.Callback):
        """Adds ``val_balanced_accuracy`` to the epoch logs (before checkpoint and early stopping read them)."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            probs = self.model.predict(x_val, batch_size=batch_size * 2, verbose=0)
            if logs is not None:
                logs["val_balanced_accuracy"] = evaluate.metrics(y_val, probs)["balanced_accuracy"]

    return BalancedAccuracy()


def _progress_callback(epochs: int, log_file: Path, start_epoch: int) -> Any:
    import keras

    class Progress(keras.callbacks.Callback):
        """One line per epoch with the time it took and the ETA; appends the epoch's logs to ``log_file``
        (read back by ``--resume``)."""

        def on_train_begin(self, logs: dict | None = None) -> None:
            self.t0 = time.monotonic()
            self.done = 0

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.done += 1
            per = (time.monotonic() - self.t0) / self.done
            left = per * (epochs - epoch - 1)
            shown = ", ".join(f"{k} {v:.4f}" for k, v in sorted((logs or {}).items()) if isinstance(v, float))
            print(
                f"epoch {epoch + 1}/{epochs}: {per:.0f} s/epoch, ETA {left / 60:.0f} min (at most); {shown}",
                file=sys.stderr,
                flush=True,
            )
            with open(log_file, "a") as fh:
                fh.write(json.dumps({"epoch": epoch, **{k: float(v) for k, v in (logs or {}).items()}}) + "\n")

    return Progress()


def _cached_arrays(samples: list[data.Sample], workdir: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Decoded images of ``samples``, cached in ``workdir`` under a hash of their paths and labels."""
    import hashlib

    key = hashlib.sha256("\n".join(f"{s.path}\t{s.label}" for s in samples).encode()).hexdigest()[:16]
    xf, yf = workdir / f"{name}-{key}-x.npy", workdir / f"{name}-{key}-y.npy"
    if xf.is_file() and yf.is_file():
        return np.load(xf, mmap_mode="r"), np.load(yf)
    x, y = data.load_arrays([s.path for s in samples], [s.label_index for s in samples], f"{name} images")
    np.save(xf.with_suffix(".tmp.npy"), x)
    np.save(yf, y)
    os.replace(xf.with_suffix(".tmp.npy"), xf)
    return x, y


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
        rng = np.random.default_rng(seed * 1000 + epoch[0])
        epoch[0] += 1
        idx = rng.choice(len(x), size=steps * recipe.batch_size, replace=True, p=probs)
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


def _resume_state(log_file: Path, monitor: str) -> tuple[int, dict[str, list[float]]]:
    if not log_file.is_file():
        return 0, {}
    history: dict[str, list[float]] = {}
    entries = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    for e in entries:
        for k, v in e.items():
            if k != "epoch":
                history.setdefault(k, []).append(v)
    return len(entries), history


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
    import tensorflow as tf

    from melanoma.ml import model as model_lib

    cfg = cfg or TrainConfig(data_dirs=())
    keras.utils.set_random_seed(seed)
    extra_counts = rebalance_counts(recipe, prepared.train) if recipe.rebalance != "none" else {}
    shutil.rmtree(scratch / "augmentor", ignore_errors=True)
    extra = augment(prepared.train, extra_counts, scratch / "augmentor", seed) if extra_counts else []
    fit_s = prepared.train + extra
    prepared.info["augmented_images"] = len(extra)
    prepared.info["train_counts_after_rebalancing"] = data.class_counts(fit_s)
    n_classes = len(CLASS_NAMES)
    probs = None
    if recipe.sampling in ("source_class", "class_prior"):
        if recipe.sampling == "source_class":
            probs = data.sampling_weights(fit_s, recipe.class_power, recipe.source_power)
        else:
            probs = data.class_sampling_weights(fit_s, recipe.class_power)
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
    print_data_report(prepared.info, file=sys.stderr)
    if extra:
        x_train, y_train = data.load_arrays([s.path for s in fit_s], [s.label_index for s in fit_s], "training images")
    else:
        x_train, y_train = _cached_arrays(fit_s, scratch, "train")
    x_val, y_val = _cached_arrays(prepared.val, scratch, "val")

    weights = class_weights(data.class_counts(fit_s)) if recipe.class_weights else np.ones(n_classes)
    prepared.info["class_weights"] = {c: round(float(w), 4) for c, w in zip(CLASS_NAMES, weights)}
    one_hot = recipe.label_smoothing > 0 or recipe.mixup > 0

    log_file = scratch / "epochs.jsonl"
    start_epoch, old_history = _resume_state(log_file, recipe.checkpoint_on) if cfg.resume else (0, {})
    if not cfg.resume:
        log_file.unlink(missing_ok=True)
        shutil.rmtree(scratch / "backup", ignore_errors=True)

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

    keras.mixed_precision.set_global_policy(cfg.precision)
    try:
        net = model_lib.build(recipe.architecture, seed=seed)
        if cfg.init_from and registry is not None:
            copied = model_lib.transfer_weights(registry.load(cfg.init_from), net)
            log.info("initialised %d layers from %s", copied, cfg.init_from)
        if recipe.architecture != "origin":
            warmup = min(2 * steps, steps * recipe.epochs // 4)
            schedule = keras.optimizers.schedules.CosineDecay(
                recipe.learning_rate / 20,
                decay_steps=max(steps * recipe.epochs - warmup, 1),
                alpha=0.01,
                warmup_target=recipe.learning_rate,
                warmup_steps=warmup,
            )
            loss = (
                keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=recipe.label_smoothing)
                if one_hot
                else keras.losses.SparseCategoricalCrossentropy(from_logits=True)
            )
            net.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=1e-4), loss=loss, metrics=["accuracy"])
        best = scratch / "best.keras"
        checkpoint = keras.callbacks.ModelCheckpoint(
            best, monitor=recipe.checkpoint_on, save_best_only=True, mode="max"
        )
        stopping = keras.callbacks.EarlyStopping(
            monitor=recipe.early_stopping_on,
            patience=recipe.patience,
            mode="min" if recipe.early_stopping_on.endswith("loss") else "max",
        )
        if old_history.get(recipe.checkpoint_on) and best.is_file():
            # Resumed: the checkpoint and early stopping carry on from the epochs already run.
            checkpoint.best = max(old_history[recipe.checkpoint_on])
        callbacks = [
            _balanced_accuracy_callback(x_val, y_val, recipe.batch_size),
            checkpoint,
            stopping,
            # Kept after the run too, so that a finished run can also be extended (--resume, more --epochs).
            keras.callbacks.BackupAndRestore(str(scratch / "backup"), delete_checkpoint=False),
            _progress_callback(recipe.epochs, log_file, start_epoch),
        ]
        # The dataset reshuffles itself every epoch; Keras must not try to.
        history = net.fit(
            train_ds,
            validation_data=val_ds,
            epochs=recipe.epochs,
            callbacks=callbacks,
            steps_per_epoch=steps if probs is not None else None,
            shuffle=False,
            verbose=1 if sys.stderr.isatty() else 0,
        )
    finally:
        keras.mixed_precision.set_global_policy("float32")
    merged = {k: old_history.get(k, []) + list(v) for k, v in history.history.items()}
    # Reload the best epoch without its optimizer state (a third of the size, same predictions),
    # as a float32 model whatever the training precision.
    trained = keras.saving.load_model(best, compile=False)
    best_model = model_lib.build(recipe.architecture, seed=seed)
    best_model.set_weights(trained.get_weights())
    return best_model, merged, (np.asarray(x_val), y_val)


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
    x_val, y_val = val_arrays
    val_logits = predict_logits(model, x_val)
    temperature = evaluate.fit_temperature(val_logits, y_val) if recipe.calibrate else 1.0
    val_probs = evaluate.softmax(val_logits, temperature)
    threshold = evaluate.melanoma_threshold(y_val, val_probs, cfg.target_sensitivity)
    scores = evaluate.metrics(y_val, val_probs, threshold)
    scores["temperature"] = temperature
    scores["ece_uncalibrated"] = evaluate.expected_calibration_error(y_val, evaluate.softmax(val_logits))
    monitored = history.get(recipe.checkpoint_on) or history.get("val_accuracy") or [0.0]
    scores["epochs_run"] = len(history["loss"])
    scores["best_epoch"] = int(np.argmax(monitored)) + 1
    files: dict[str, Path] = {}

    def out(name: str) -> Path:
        files[name] = scratch / name
        return files[name]

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
    scores["by_source"]["val"], _ = evaluate_sources(model, prepared.val, temperature, threshold, "validation")
    if prepared.test:
        x_test, y_test = data.load_arrays(
            [s.path for s in prepared.test], [s.label_index for s in prepared.test], "test images"
        )
        test_probs = predict_probs(model, x_test, temperature=temperature)
        scores["test"] = evaluate.metrics(y_test, test_probs, threshold)
        plots.plot_confusion(
            scores["test"]["confusion_matrix"],
            out("confusion_matrix_test.png"),
            "Test confusion matrix (held-out lesions)",
        )
        plots.plot_roc(y_test, test_probs, threshold, out("roc_melanoma_test.png"), "Melanoma ROC, test")
        plots.plot_reliability(y_test, test_probs, out("reliability_test.png"), "Reliability, test split")
        scores["by_source"]["test"], _ = evaluate_sources(model, prepared.test, temperature, threshold, "test")
        plots.plot_sources(scores["by_source"]["test"], out("sources_test.png"), "Test split, per source")
    plots.plot_reliability(y_val, val_probs, out("reliability.png"), "Reliability, validation")
    if prepared.external:
        scores["external"], ext = evaluate_sources(model, prepared.external, temperature, threshold, "external")
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
    out("history.json").write_text(json.dumps(history))
    # Which image went where, so that later runs and tests can tell seen from unseen images.
    out(SPLIT_FILE).write_text(
        json.dumps(
            {
                "train": sorted(s.image_id for s in prepared.train),
                "val": sorted(s.image_id for s in prepared.val),
                "test": sorted(s.image_id for s in prepared.test),
                "external": sorted(s.image_id for s in prepared.external),
            }
        )
    )
    if prepared.report is not None:
        out("data_report.json").write_text(
            json.dumps(
                {
                    "dropped_duplicates": prepared.report.dropped_duplicates,
                    "dropped_ambiguous": prepared.report.dropped_ambiguous,
                    "relabelled": prepared.report.relabelled,
                    "resolved_conflicts": prepared.report.resolved_conflicts,
                },
                indent=1,
            )
        )
    model.save(out("model.keras"))
    files.pop("model.keras")

    meta = ModelMeta(
        version=new_version_id(recipe.architecture),
        architecture=recipe.architecture,
        classes=list(CLASS_NAMES),
        # Set here, not at publish, so that the model card written next carries it.
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        recipe=f"{recipe.name}: {recipe.description}",
        seed=cfg.seed,
        git_commit=prepared.info.pop("git_commit", None) or git_commit(),
        data=prepared.info,
        metrics=scores,
        melanoma_threshold=threshold,
        target_sensitivity=cfg.target_sensitivity,
        temperature=temperature,
    )
    modelcard.write(meta, out("MODEL_CARD.md"))
    registry.publish(scratch / "model.keras", meta, extra_files=files)
    return meta


def train(cfg: TrainConfig, registry: Registry, workdir: Path | None = None) -> tuple[ModelMeta, Prepared, tuple]:
    """Run the recipe end to end and publish the result (not current); returns its metadata, data and val arrays.

    With ``cfg.workdir`` the run's files (decoded arrays, checkpoints, epoch log) stay there, and
    ``cfg.resume`` continues a run that was stopped; otherwise a temporary folder is used and removed.
    """
    recipe = cfg.resolved()
    source_registry = registry
    if cfg.init_from and Path(cfg.init_from).is_dir():
        # A version folder given by path (for example the shipped models/<version>).
        folder = Path(cfg.init_from).resolve()
        source_registry, cfg = Registry(folder.parent), replace(cfg, init_from=folder.name)
    prepared = prepare(cfg, source_registry)
    # The code that trains is the code at the start: the checkout may move on during a long run.
    prepared.info["git_commit"] = git_commit()
    if not prepared.train or not prepared.val:
        raise ValueError("not enough images to split into training and validation")
    if cfg.workdir is not None:
        scratch = Path(cfg.workdir)
        scratch.mkdir(parents=True, exist_ok=True)
    else:
        scratch = Path(tempfile.mkdtemp(prefix="melanoma-train-", dir=workdir))
    try:
        model, history, val_arrays = fit(recipe, prepared, scratch, cfg.seed, cfg, source_registry)
        meta = finish(model, history, prepared, recipe, cfg, registry, scratch, val_arrays)
        return meta, prepared, val_arrays
    finally:
        if cfg.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
