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

from melanoma.ml.backbones.layout import saved_variant
from melanoma.ml.finish import finish
from melanoma.ml.fit import fit
from melanoma.ml.recipes import RECIPES, TrainConfig
from melanoma.ml.train_data import Prepared, git_commit, prepare
from melanoma.versions.registry import MODEL_FILE, ModelMeta, Registry

__all__ = ["Prepared", "continue_backbone", "fit", "finish", "prepare", "train"]


def continue_backbone(cfg: TrainConfig, parent: ModelMeta, model_file: Path | None = None) -> TrainConfig:
    """A stage builds its parent's backbone (recorded, else read from its saved network
    ``model_file``): taken when not given, refused (ValueError, before any image is read) when another
    is; the recipe's when the parent's cannot be told."""
    if parent.architecture == "ensemble":
        raise ValueError(f"{parent.version} is an ensemble: a stage continues one of its members")
    if RECIPES[cfg.recipe].backbone is None:
        return cfg
    theirs = parent.backbone or (saved_variant(model_file) if model_file is not None else None)
    if cfg.backbone is None:
        return replace(cfg, backbone=theirs or RECIPES[cfg.recipe].backbone)
    if theirs is not None and cfg.backbone != theirs:
        raise ValueError(
            f"--backbone {cfg.backbone}: {parent.version} is a {theirs} network, and a stage that "
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
        parent = source_registry.meta(cfg.init_from)
        cfg = continue_backbone(cfg, parent, source_registry.path(cfg.init_from) / MODEL_FILE)
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
