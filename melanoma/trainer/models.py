"""``melanoma models list | promote | rollback``: the registry's versions and which is current."""

from __future__ import annotations

from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.trainer.cli import _registry
from melanoma.trainer.options import data_option


@click.group("models")
def models_command():
    """List the model versions, promote one, or roll back."""


@models_command.command("list")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def models_list(model_dir):
    """List model versions, oldest first; * marks the current one."""
    reg = _registry(model_dir)
    current = reg.current()
    for m in reg.versions():
        acc, bal = m.metrics.get("accuracy"), m.metrics.get("balanced_accuracy")
        score = f"val acc {acc:.3f}, balanced {bal:.3f}" if acc is not None and bal is not None else "no metrics"
        click.echo(f"{'*' if m.version == current else ' '} {m.version}  {m.architecture:<7} {m.created_at}  {score}")


@models_command.command("promote")
@click.argument("version")
@click.option("--force", is_flag=True, help="Skip the load-and-predict check.")
@data_option(
    "Folders VERSION was trained from (repeatable): the gate then compares it with the current version "
    "on VERSION's validation images, per source, as `melanoma train` does.",
    required=False,
)
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def models_promote(version, force, data_dirs, model_dir):
    """Make VERSION current after checking that it loads and predicts valid probabilities and, with
    --data, that it is not worse than the current version on its validation images."""
    from melanoma.lifecycle.promotion import gate

    reg = _registry(model_dir)
    meta = reg.meta(version)
    if data_dirs and not force:
        from melanoma.ml import data
        from melanoma.ml.train_data import validation_samples

        try:
            val, recorded = validation_samples(reg, version, tuple(data_dirs))
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if len(val) < recorded:
            # A folder left out or named at another level silently narrows the comparison otherwise.
            click.echo(
                f"note: {len(val)} of {version}'s {recorded} validation images are in the --data folders; "
                "the gate compares the versions on those",
                err=True,
            )
        paths = [s.path for s in val]
        size = (meta.input_size[0], meta.input_size[1])
        x_val, y_val = data.load_arrays(paths, [s.label_index for s in val], "validation images", size)
        result = gate(reg, version, x_val, y_val, val_sources=[s.source for s in val], val_paths=paths)
    else:
        result = gate(reg, version, force=force)
    if not result.promoted:
        raise UserError(f"{version} not promoted: {result.reason} (use --force to promote anyway)")
    click.echo(f"current model version is now {version}: {result.reason}", err=True)


@models_command.command("rollback")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def models_rollback(model_dir):
    """Make the previously current version current again."""
    version = _registry(model_dir).rollback()
    click.echo(f"current model version is now {version}", err=True)
