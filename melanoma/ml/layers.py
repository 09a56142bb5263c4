"""Keras layers that are part of a saved model (registered, so a version loads without extra code)."""

from __future__ import annotations

import re
from typing import Any

import keras
import numpy as np
from keras import ops


def _power(x: Any, p: float) -> Any:
    """``x ** p``; by repeated multiplication for whole ``p`` (a general pow over every pixel cost
    more than half of the whole model's time on a CPU)."""
    if p != int(p) or p < 1:
        return x**p
    n, result, base = int(p), None, x
    while n:
        if n & 1:
            result = base if result is None else result * base
        n >>= 1
        if n:
            base = base * base
    return result


@keras.saving.register_keras_serializable(package="melanoma")
class ShadesOfGray(keras.layers.Layer):
    """Colour constancy (Finlayson & Trezzi's Shades of Gray): divide each image by its illuminant.

    The illuminant is the per-channel Minkowski ``p``-mean of the pixels; channels are scaled so
    that it becomes neutral grey at the image's mean level. Dermatoscopes and clinic cameras differ
    most in white balance, which a model otherwise learns as a cue for where an image came from.
    Being a layer of the model, it runs identically in training, evaluation and the worker. Input
    and output are RGB in the 0..255 range.
    """

    def __init__(self, power: float = 6.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.power = float(power)

    def call(self, x: Any) -> Any:
        x = ops.cast(x, "float32")
        scaled = ops.maximum(x, 1.0) / 255.0
        illuminant = ops.mean(_power(scaled, self.power), axis=(1, 2), keepdims=True) ** (1.0 / self.power)
        grey = ops.mean(illuminant, axis=-1, keepdims=True)
        out = x * grey / ops.maximum(illuminant, 1e-3)
        return ops.clip(out, 0.0, 255.0)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "power": self.power}


def member_prefix(i: int) -> str:
    """What the names of an ensemble's ``i``-th member's layers begin with (the first's: nothing, so
    that its features and feature maps are found by their usual names)."""
    return f"m{i}_" if i else ""


def is_later_member(name: str) -> bool:
    """Whether a layer of that name belongs to an ensemble's second or later member."""
    return re.match(r"m\d+_", name) is not None


@keras.saving.register_keras_serializable(package="melanoma")
class MeanProbabilities(keras.layers.Layer):
    """An ensemble's output: the mean of its members' calibrated probabilities, given as logits.

    Each member's logits are divided by its own temperature (fitted when it was trained); the output
    is the log of the mean of their softmaxes, shifted per image by the mean of the members'
    log-sum-exps. Softmax ignores that shift, so ``softmax(output)`` is exactly the mean probability,
    while ``-logsumexp(output)`` is the mean of the members' energies (the familiarity score reads it;
    a bare log-probability would make it 0 for every image).
    """

    def __init__(self, temperatures: list[float], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.temperatures = [float(t) for t in temperatures]

    def call(self, logits: list[Any]) -> Any:
        scaled = [ops.cast(z, "float32") / t for z, t in zip(logits, self.temperatures, strict=True)]
        log_probs = ops.stack([ops.log_softmax(z, axis=-1) for z in scaled], axis=0)
        mean_log_prob = ops.logsumexp(log_probs, axis=0) - float(np.log(len(scaled)))
        energy = ops.mean(ops.stack([ops.logsumexp(z, axis=-1, keepdims=True) for z in scaled], axis=0), axis=0)
        return mean_log_prob + energy

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "temperatures": self.temperatures}


@keras.saving.register_keras_serializable(package="melanoma")
class RandomResolution(keras.layers.Layer):
    """Training augmentation: each batch shrunk to a random fraction (``factor``) of its height and
    width (area averaging, as a lower-resolution camera or a downsized export does) and enlarged back
    (bilinear, as the scorer's decode does), so detail finer than a lesser device resolves is lost.
    Inactive at inference."""

    def __init__(self, factor: tuple[float, float] = (0.35, 1.0), seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = (float(factor[0]), float(factor[1]))
        self.seed = seed
        self._generator = keras.random.SeedGenerator(seed)

    def call(self, x: Any, training: bool = False) -> Any:
        if not training:
            return x
        import tensorflow as tf  # resizing to a size drawn at run time: TensorFlow's own op

        size = tf.shape(x)[1:3]
        scale = keras.random.uniform((), self.factor[0], self.factor[1], seed=self._generator)
        small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * scale), tf.int32), 1)
        out = tf.image.resize(tf.image.resize(x, small, method="area"), size, method="bilinear")
        return ops.cast(out, x.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": list(self.factor), "seed": self.seed}
