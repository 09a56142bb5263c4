"""Fitting a version's familiarity statistics (:mod:`melanoma.ml.familiarity`) from its model and
images: the model call that gives the features, the middle block it summarises, the training subset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from melanoma.ml.familiarity import DEFAULT_METHOD, FEATURE_LAYER, Familiarity, FamiliarityError, Outputs, fit


def middle_layer(model: Any) -> str:
    """The layer the ``midlevel`` score summarises: the last residual sum (else the last layer) whose
    output keeps at least a sixteenth of the input's height: past colour and edges, before the
    features narrow to what tells the classes apart."""
    import keras

    height = int(model.input_shape[1])
    candidates = [
        layer
        for layer in model.layers
        if len(layer.output.shape) == 4
        and int(layer.output.shape[1]) >= height / 16
        and not isinstance(layer, (keras.layers.InputLayer, keras.layers.ZeroPadding2D))
        and layer.output.shape[1] != height  # the preprocessing in front, at full size
    ]
    sums = [layer for layer in candidates if isinstance(layer, keras.layers.Add)]
    if not (sums or candidates):
        raise FamiliarityError("the model has no convolutional layer to take middle-block statistics from")
    return (sums or candidates)[-1].name


def feature_model(model: Any, midlevel_layer: str | None = None) -> Any:
    """A Keras model giving ``(features, logits)`` for the same input, and the channel means and
    spreads of ``midlevel_layer`` as a third output when one is named: one call, all of them."""
    import keras

    try:
        head = model.get_layer(FEATURE_LAYER)
    except ValueError:
        raise FamiliarityError(f"the model has no layer named {FEATURE_LAYER!r} to take features from") from None
    out = [head.input, model.outputs[0]]
    if midlevel_layer is not None:
        try:
            block = model.get_layer(midlevel_layer).output
        except ValueError:
            raise FamiliarityError(
                f"familiarity statistics summarise layer {midlevel_layer!r}, which the model lacks"
            ) from None
        block = keras.ops.cast(block, "float32")  # the statistics in float32 whatever the compute precision
        out.append(keras.ops.concatenate([keras.ops.mean(block, axis=(1, 2)), keras.ops.std(block, axis=(1, 2))], -1))
    return keras.Model(model.inputs, out)


def training_subset(labels: np.ndarray, per_class: int = 300, seed: int = 0) -> np.ndarray:
    """Indices of at most ``per_class`` images of each class: enough for the means and the covariance,
    and a fitting pass that takes minutes, not an hour, on a CPU."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(rng.choice(idx, min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def outputs(model: Any, x: np.ndarray, midlevel_layer: str | None = None, batch_size: int = 64) -> Outputs:
    """The familiarity outputs of a Keras logits model on uint8 images, in one pass (``midlevel``
    only when a layer is named)."""
    got = feature_model(model, midlevel_layer).predict(x, batch_size=batch_size, verbose=0)
    return Outputs(*(np.asarray(a, dtype=np.float64) for a in got))


def fit_model(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    val_x: np.ndarray,
    method: str = DEFAULT_METHOD,
    info: dict[str, Any] | None = None,
) -> Familiarity:
    """Fit ``model``'s statistics from training images and labels and validation images (uint8 arrays)."""
    layer = middle_layer(model)
    info = {**(info or {}), "midlevel_layer": layer}
    return fit(outputs(model, train[0], layer), train[1], outputs(model, val_x, layer), method, info)


def fit_samples(
    model: Any,
    train: list[Any],
    val_x: np.ndarray,
    method: str = DEFAULT_METHOD,
    per_class: int = 300,
    info: dict[str, Any] | None = None,
) -> Familiarity:
    """Fit ``model``'s statistics from a class-balanced subset of its training samples (for the class
    means and covariance; :func:`training_subset`) and its decoded validation images (percentiles)."""
    from melanoma.ml import data

    chosen = [train[i] for i in training_subset(np.array([s.label_index for s in train]), per_class)]
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    x, y = data.load_arrays([s.path for s in chosen], [s.label_index for s in chosen], "training images", size)
    return fit_model(model, (x, y), val_x, method, info)


def fit_version(
    registry: Any, version: str, data_dirs: tuple[Path, ...], method: str = DEFAULT_METHOD, per_class: int = 300
) -> Familiarity:
    """Fit a published version's statistics from its own split (training and validation images),
    found among ``data_dirs``: for versions trained before familiarity existed."""
    from melanoma.ml import data
    from melanoma.ml.train_data import inherited_split

    try:
        sides = inherited_split(registry, version, data_dirs)
    except ValueError as exc:
        raise FamiliarityError(str(exc)) from None
    kept, _ = data.read_clean(data_dirs)
    train = [s for s in kept if sides.get(s.image_id) == "train"]
    val = [s for s in kept if sides.get(s.image_id) == "val"]
    wanted = sum(1 for side in sides.values() if side == "val")
    if not train or len(val) < 0.9 * wanted:
        raise FamiliarityError(
            f"the data folders hold {len(val)} of the {wanted} validation images of {version}: give the folders it "
            "was trained from (--data)"
        )
    model = registry.load(version)
    size = (int(model.input_shape[1]), int(model.input_shape[2]))
    xv, _ = data.load_arrays([s.path for s in val], [s.label_index for s in val], "validation images", size)
    return fit_samples(model, train, xv, method, per_class, info={"fitted_by": "calibrate-familiarity"})
