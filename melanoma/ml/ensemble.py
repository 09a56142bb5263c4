"""Ensembles: published versions combined into one network whose probabilities are the mean of
theirs, published as a version of its own. The worker loads it like any version (one file, one
graph: batch normalisation folds into every member's convolutions); it is calibrated, given its
operating point and decision weights, evaluated per source and gated like a trained one.

Two backbones err differently: Lite0's and Lite1's fifth stages averaged ranked the test melanomas
better than either (docs/model.md), where averaged runs of one backbone gained nothing. Importing
this module does not import TensorFlow; combining and publishing do.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import data
from melanoma.ml.backbones.layout import saved_variant
from melanoma.ml.finish import finish
from melanoma.ml.recipes import Recipe, TrainConfig
from melanoma.ml.train_data import Prepared, git_commit, inherited_split, prepare
from melanoma.versions.registry import MODEL_FILE, ModelMeta, Registry

ARCHITECTURE = "ensemble"

RECIPE = Recipe(
    name=ARCHITECTURE,
    architecture=ARCHITECTURE,
    description="the mean of published versions' probabilities (each at its own temperature), as one "
    "network; nothing trained: temperature, operating point and decision weights (from the members' "
    "training draws summed) fitted on the first version's validation split, which the others did not "
    "train on",
    epochs=0,
    calibrate=True,
)


def combine(members: Sequence[Any], temperatures: Sequence[float]) -> Any:
    """One Keras model giving the mean of ``members``' probabilities (their logits divided by
    ``temperatures``) as logits (:class:`melanoma.ml.layers.MeanProbabilities`).

    The members' layers become the model's own, in one flat graph on one input: the first member's
    keep their names (the familiarity features, its middle block and Grad-CAM's feature map are
    found by them), the others' are prefixed ``m1_``, ``m2_``, ...
    """
    import keras

    from melanoma.ml.layers import MeanProbabilities, member_prefix

    if len(members) < 2 or len(members) != len(temperatures):
        raise ValueError("an ensemble needs two or more members, each with its temperature")
    shapes = {tuple(m.input_shape[1:]) for m in members}
    if len(shapes) != 1:
        raise ValueError(f"the members take different inputs {sorted(shapes)}: an ensemble needs one size")
    inputs = keras.Input(shape=members[0].input_shape[1:], name="image")
    logits = []
    for i, member in enumerate(members):
        prefix = member_prefix(i)

        def renamed(layer: Any, prefix: str = prefix) -> Any:
            return layer.__class__.from_config({**layer.get_config(), "name": prefix + layer.name})

        clone = keras.models.clone_model(member, input_tensors=inputs, clone_function=renamed)
        for layer in member.layers:
            if layer.weights:
                clone.get_layer(prefix + layer.name).set_weights(layer.get_weights())
        logits.append(clone.outputs[0])
    out = MeanProbabilities(list(temperatures), name="mean_probabilities", dtype="float32")(logits)
    return keras.Model(inputs, out, name=ARCHITECTURE)


def _check_members(registry: Registry, versions: Sequence[str], data_dirs: tuple[Path, ...]) -> list[ModelMeta]:
    """The members' metadata; ValueError (one line) when they cannot form an ensemble: fewer than two,
    repeated, an ensemble among them, other classes, or one trained on the first's validation or
    test images (its figures would then be flattered by what it had seen)."""
    if len(versions) < 2 or len(set(versions)) != len(versions):
        raise ValueError("an ensemble needs two or more different versions")
    metas = [registry.meta(v) for v in versions]
    for meta in metas:
        if meta.architecture == ARCHITECTURE:
            raise ValueError(f"{meta.version} is an ensemble itself: name its members instead")
        if list(meta.classes) != list(CLASS_NAMES):
            raise ValueError(f"{meta.version} scores other classes than this code")
    lead = inherited_split(registry, versions[0], data_dirs)
    held_out = {image for image, side in lead.items() if side != "train"}
    for version in versions[1:]:
        seen = held_out & {
            image for image, side in inherited_split(registry, version, data_dirs).items() if side == "train"
        }
        if seen:
            raise ValueError(
                f"{version} trained on {len(seen)} of the images {versions[0]} holds out for validation and "
                "test: the members must share one split"
            )
    return metas


def publish_ensemble(
    cfg: TrainConfig, registry: Registry, versions: Sequence[str], scratch: Path
) -> tuple[ModelMeta, Prepared, tuple[Any, Any]]:
    """Combine ``versions`` (the first leads: its split is the ensemble's), calibrate and evaluate the
    result on that split, and publish it (not current); returns its metadata, data and validation
    arrays (for the gate)."""
    metas = _check_members(registry, versions, cfg.data_dirs)
    lead = metas[0].data
    cfg = replace(
        cfg,
        split_of=versions[0],
        val_fraction=lead.get("val_fraction", cfg.val_fraction),
        test_fraction=lead.get("test_fraction", cfg.test_fraction),
        seed=metas[0].seed or cfg.seed,
        # the sources it left out stay external, its clinics' confirmed cases on their sides
        exclude_sources=tuple(lead.get("excluded_sources", [])),
        review_sites=tuple(lead.get("review_sites", [])),
    )
    prepared = prepare(cfg, registry)
    prepared.info["git_commit"] = git_commit()
    prepared.info["members"] = [
        {"version": m.version, "backbone": m.backbone, "temperature": m.temperature} for m in metas
    ]
    # The decision weights start from what training drew per class: here what any member drew
    # (a class none of them drew is never given).
    prepared.info["train_counts_after_rebalancing"] = {
        c: sum(int(m.data.get("train_counts_after_rebalancing", {}).get(c, 0)) for m in metas) for c in CLASS_NAMES
    }
    networks = [registry.load(v) for v in versions]
    model = combine(networks, [m.temperature for m in metas])
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    val = data.load_arrays(
        [s.path for s in prepared.val], [s.label_index for s in prepared.val], "validation images", size
    )
    # Versions recorded before backbones were (2026-12-06) tell theirs by their saved network.
    kinds = [m.backbone or saved_variant(registry.path(m.version) / MODEL_FILE) or m.architecture for m in metas]
    backbones = "+".join(kinds)
    recipe = replace(
        RECIPE,
        description=RECIPE.description
        + "; members: "
        + ", ".join(f"{m.version} ({kind})" for m, kind in zip(metas, kinds, strict=True)),
        backbone=backbones,
    )
    meta = finish(model, {}, prepared, recipe, cfg, registry, scratch, val)
    return meta, prepared, val
