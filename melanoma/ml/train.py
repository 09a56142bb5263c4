"""Train a model with a named recipe, evaluate it, and publish it as a registry version.

Every recipe: clean the data, split by lesion *before* anything is augmented, add Augmentor
samples to the training split only (in a scratch folder), fit, keep the best epoch, choose the
melanoma operating point on validation, evaluate, plot, write a model card, publish, and
(optionally) promote through the gate. Imports TensorFlow.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from melanoma.ml.finish import finish
from melanoma.ml.fit import fit
from melanoma.ml.recipes import RECIPES, TrainConfig
from melanoma.ml.train_data import Prepared, git_commit, prepare
from melanoma.versions.registry import ModelMeta, Registry

__all__ = ["Prepared", "continue_backbone", "fit", "finish", "prepare", "train"]


def continue_backbone(cfg: TrainConfig, parent: ModelMeta) -> TrainConfig:
    """A stage builds its parent's backbone: taken from the parent when not given (the recipe's for a
    parent recorded without one), refused (ValueError, before any image is read) when another is."""
    if RECIPES[cfg.recipe].backbone is None:
        return cfg
    if cfg.backbone is None:
        return replace(cfg, backbone=parent.backbone or RECIPES[cfg.recipe].backbone)
    if parent.backbone is not None and cfg.backbone != parent.backbone:
        raise ValueError(
            f"--backbone {cfg.backbone}: {parent.version} is a {parent.backbone} network, and a stage that "
            "continues it builds the same"
        )
    return cfg
    if cfg.backbone is None:
        return replace(cfg, backbone=parent.backbone)
    if cfg.backbone != parent.backbone:
        raise ValueError(
            f"--backbone {cfg.backbone}: {parent.version} is a {parent.backbone} network, and a stage that "
            "continues it builds the same"
        )
    return cfg


def train(cfg: TrainConfig, registry: Registry, workdir: Path | None = None) -> tuple[ModelMeta, Prepared, tuple]:
    """Run the recipe end to end and publish the result (not current); returns its metadata, data and val arrays.

    With ``cfg.workdir`` the run's files (decoded arrays, checkpoints, epoch log) stay there, and
    ``cfg.resume`` continues a run that was stopped; otherwise a temporary folder is used and removed.
    """
    source_registry = registry
    # A version folder given by path (for example the shipped models/<version>).
    if cfg.init_from and Path(cfg.init_from).is_dir():
        folder = Path(cfg.init_from).resolve()
        source_registry, cfg = Registry(folder.parent), replace(cfg, init_from=folder.name)
    if cfg.init_from:
        cfg = continue_backbone(cfg, source_registry.meta(cfg.init_from))
    recipe = cfg.resolved()
    if cfg.split_of and Path(cfg.split_of).is_dir():
        folder = Path(cfg.split_of).resolve()
        source_registry, cfg = Registry(folder.parent), replace(cfg, split_of=folder.name)
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
