"""``melanoma calibrate-familiarity``: fit a published version's familiarity statistics from its own
split, for versions trained before they existed (training fits them for new versions)."""

from __future__ import annotations

from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.ml.familiarity import DEFAULT_METHOD, METHODS  # numpy only: no TensorFlow at start-up
from melanoma.trainer.cli import _version
from melanoma.trainer.options import data_option


@click.command("calibrate-familiarity")
@click.argument("model")
@data_option("The data folders MODEL was trained from (repeat).")
@click.option(
    "--method",
    type=click.Choice(METHODS),
    default=DEFAULT_METHOD,
    show_default=True,
    help="The scores the worker applies (all are fitted and kept; see docs/model.md).",
)
@click.option("--per-class", default=300, show_default=True, type=click.IntRange(10), help="Training images per class.")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def calibrate_familiarity_command(model, data_dirs, method, per_class, model_dir):
    """Fit MODEL's familiarity statistics (class means and covariance of its training images' features,
    percentiles of its validation images) and store them beside it; workers apply them when they
    next load the version."""
    from melanoma.ml.familiarity import FamiliarityError
    from melanoma.ml.familiarity_fit import fit_version  # the fit itself imports TensorFlow
    from melanoma.versions.registry import FAMILIARITY_FILE

    registry, version = _version(model, model_dir)
    try:
        stats = fit_version(registry, version, tuple(data_dirs), method, per_class)
    except FamiliarityError as exc:
        raise UserError(str(exc)) from None
    path = registry.add_file(version, FAMILIARITY_FILE, stats.to_bytes())
    click.echo(
        f"{version}: {method} familiarity from {stats.info['train_images']} training and "
        f"{stats.info['val_images']} validation images -> {path}"
    )
