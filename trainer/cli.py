"""``melanoma train``: a thin command over :mod:`melanoma.train`."""

from __future__ import annotations

from pathlib import Path

import click

from melanoma.errors import UserError


@click.command("train")
@click.option("--data", "data_dirs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Folder-per-class image set (repeat to combine sets).")
@click.option("--recipe", type=click.Choice(["origin"]), default="origin", show_default=True)
@click.option("--epochs", default=50, show_default=True, type=click.IntRange(1))
@click.option("--patience", default=5, show_default=True, type=click.IntRange(1))
@click.option("--augment-per-class", default=500, show_default=True, type=click.IntRange(0),
              help="Augmentor samples added per class to the training split.")
@click.option("--limit-per-class", default=None, type=click.IntRange(2), help="Use at most N images per class.")
@click.option("--val-fraction", default=0.2, show_default=True, type=click.FloatRange(0.05, 0.5))
@click.option("--seed", default=123, show_default=True)
@click.option("--model-dir", type=click.Path(path_type=Path), default=None,
              help="Registry folder (default: MELANOMA_MODEL_DIR).")
@click.option("--make-current/--no-make-current", default=False, help="Point workers at the new version.")
def train_command(data_dirs, recipe, epochs, patience, augment_per_class, limit_per_class, val_fraction, seed,
                  model_dir, make_current):
    """Train a model on labelled images and publish it as a new version."""
    from melanoma.registry import Registry
    from melanoma.settings import get_settings

    for d in data_dirs:
        if not d.is_dir():
            raise UserError(f"data folder not found: {d}")
    from melanoma.train import TrainConfig, train

    cfg = TrainConfig(data_dirs=tuple(data_dirs), architecture=recipe, epochs=epochs, patience=patience,
                      augment_per_class=augment_per_class, limit_per_class=limit_per_class,
                      val_fraction=val_fraction, seed=seed)
    registry = Registry(model_dir or get_settings().model_dir)
    meta = train(cfg, registry, make_current=make_current)
    m = meta.metrics
    click.echo(f"published {meta.version} to {registry.root}"
               f"{' (current)' if make_current else ''}: val accuracy {m['accuracy']:.3f}, "
               f"balanced accuracy {m['balanced_accuracy']:.3f}, melanoma sensitivity "
               f"{m['melanoma_sensitivity']:.3f}, specificity {m['melanoma_specificity']:.3f}", err=True)
    click.echo(meta.version)
