"""The fit loop's callbacks: validation balanced accuracy each epoch, the best-epoch checkpoint,
early stopping, a backup that lets a stopped run resume, and the epoch log with progress."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.ml import evaluate
from melanoma.ml.recipes import Recipe


def balanced_accuracy_callback(x_val: np.ndarray, y_val: np.ndarray, batch_size: int, fill_in: bool = False) -> Any:
    """Adds ``val_balanced_accuracy`` and ``val_melanoma_auc`` to the epoch logs; with ``fill_in``
    (when Keras runs no validation pass of its own) also ``val_accuracy`` and ``val_loss``
    (cross-entropy of the logits, without label smoothing), from the same single pass."""
    import keras

    class BalancedAccuracy(keras.callbacks.Callback):
        """Adds the validation figures to the epoch logs (before checkpoint and early stopping read them)."""

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logits = np.asarray(self.model.predict(x_val, batch_size=batch_size * 2, verbose=0), np.float64)
            if logs is None:
                return
            shifted = logits - logits.max(axis=1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
            figures = evaluate.metrics(y_val, np.exp(log_probs))
            logs["val_balanced_accuracy"] = figures["balanced_accuracy"]
            if figures["melanoma_auc"] is not None:
                logs["val_melanoma_auc"] = figures["melanoma_auc"]
            if fill_in:
                logs["val_loss"] = float(-log_probs[np.arange(len(y_val)), y_val].mean())
                logs["val_accuracy"] = float((logits.argmax(axis=1) == y_val).mean())

    return BalancedAccuracy()


def lower_is_better(monitor: str) -> bool:
    """Whether the epoch figure ``monitor`` (``val_loss``, ``val_balanced_accuracy``, ...) is better low."""
    return monitor.endswith("loss")


def progress_callback(epochs: int, log_file: Path, start_epoch: int) -> Any:
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


def resume_state(log_file: Path, monitor: str) -> tuple[int, dict[str, list[float]]]:
    if not log_file.is_file():
        return 0, {}
    history: dict[str, list[float]] = {}
    entries = [json.loads(line) for line in log_file.read_text().splitlines() if line.strip()]
    for e in entries:
        for k, v in e.items():
            if k != "epoch":
                history.setdefault(k, []).append(v)
    return len(entries), history


def callbacks(
    recipe: Recipe, scratch: Path, val: tuple[np.ndarray, np.ndarray], old_history: dict, start_epoch: int
) -> list:
    """Best-epoch checkpoint, early stopping, a backup for resuming, and the epoch log."""
    import keras

    best = scratch / "best.keras"
    lower = lower_is_better(recipe.checkpoint_on)
    checkpoint = keras.callbacks.ModelCheckpoint(
        best, monitor=recipe.checkpoint_on, save_best_only=True, mode="min" if lower else "max"
    )
    stopping = keras.callbacks.EarlyStopping(
        monitor=recipe.early_stopping_on,
        patience=recipe.patience,
        mode="min" if lower_is_better(recipe.early_stopping_on) else "max",
    )
    if old_history.get(recipe.checkpoint_on) and best.is_file():
        # Resumed: the checkpoint and early stopping carry on from the epochs already run.
        checkpoint.best = (min if lower else max)(old_history[recipe.checkpoint_on])
    return [
        balanced_accuracy_callback(val[0], val[1], recipe.batch_size, fill_in=not recipe.keras_validation),
        checkpoint,
        stopping,
        # Kept after the run too, so that a finished run can also be extended (--resume, more --epochs).
        keras.callbacks.BackupAndRestore(str(scratch / "backup"), delete_checkpoint=False),
        progress_callback(recipe.epochs, scratch / "epochs.jsonl", start_epoch),
    ]
