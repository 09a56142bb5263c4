"""``melanoma ensemble``: publish the mean of published versions as a version of its own."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.trainer.cli import _published, _registry
from melanoma.trainer.options import data_option


@click.command("ensemble")
@click.argument("versions", nargs=-1, required=True)
@data_option("The data folders the versions were trained from (repeat).")
@click.option("--promote/--no-promote", default=True, show_default=True, help="Make it current if it passes the gate.")
@click.option("--force", is_flag=True, help="Promote even if the gate refuses.")
@click.option("--model-dir", type=click.Path(path_type=Path), default=None)
def ensemble_command(versions, data_dirs, promote, force, model_dir):
    """Combine published VERSIONS (two or more, one split; the first leads: its split, features and
    heat-map layer) into one network whose probabilities are the mean of theirs; calibrate and
    evaluate it on that split like a trained version, publish it, and promote it through the gate.
    Scoring costs the sum of the members' time."""
    registry = _registry(model_dir)
    for version in versions:
        registry.meta(version)  # one line for an unknown version, before TensorFlow loads
    from melanoma.ml.ensemble import publish_ensemble
    from melanoma.ml.recipes import TrainConfig

    scratch = Path(tempfile.mkdtemp(prefix="melanoma-ensemble-"))
    try:
        cfg = TrainConfig(data_dirs=tuple(data_dirs), recipe="pretrained")
        meta, prepared, val = publish_ensemble(cfg, registry, versions, scratch)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _published(registry, meta, prepared, val, promote, force)
