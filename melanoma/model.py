"""Model definitions. Importing this module imports Keras/TensorFlow."""

from __future__ import annotations

import keras
from keras import layers

from melanoma.images import IMAGE_SIZE
from melanoma.labels import CLASS_NAMES

ORIGIN = "origin"


def build_origin(num_classes: int = len(CLASS_NAMES), seed: int | None = None) -> keras.Model:
    """The project's origin CNN: augmentation, rescaling, three conv blocks, dense head, logits.

    The augmentation layers are active only in training; at inference they pass images through.
    """
    h, w = IMAGE_SIZE
    augmentation = keras.Sequential(
        [
            layers.RandomFlip("horizontal", seed=seed),
            layers.RandomRotation(0.1, seed=seed),
            layers.RandomZoom(0.1, seed=seed),
        ],
        name="augmentation",
    )
    model = keras.Sequential(
        [
            keras.Input(shape=(h, w, 3), name="image"),
            augmentation,
            layers.Rescaling(1.0 / 255),
            layers.Conv2D(16, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(32, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Conv2D(64, 3, padding="same", activation="relu"),
            layers.MaxPooling2D(),
            layers.Dropout(0.2),
            layers.Flatten(),
            layers.Dense(128, activation="relu"),
            layers.Dense(num_classes, name="logits"),
        ],
        name=ORIGIN,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


ARCHITECTURES = {ORIGIN: build_origin}


def build(architecture: str, seed: int | None = None) -> keras.Model:
    """Build a compiled, untrained model by architecture name."""
    try:
        return ARCHITECTURES[architecture](seed=seed)
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}") from None
