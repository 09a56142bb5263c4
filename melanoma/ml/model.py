"""Model definitions. Importing this module imports Keras/TensorFlow."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers

from melanoma.core.images import IMAGE_SIZE
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml.layers import ShadesOfGray

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


RESNET = "resnet"


def _bn() -> Any:
    # With a few hundred steps per epoch the default momentum (0.99) lets the inference-time
    # statistics lag far behind the weights: validation collapsed to one class in our runs.
    return layers.BatchNormalization(momentum=0.9)


def _residual(x: Any, filters: int, stride: int) -> Any:
    shortcut = x
    y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
    y = _bn()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
    y = _bn()(y)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
        shortcut = _bn()(shortcut)
    return layers.ReLU()(layers.Add()([y, shortcut]))


def build_resnet(
    num_classes: int = len(CLASS_NAMES),
    seed: int | None = None,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks_per_stage: int = 2,
) -> keras.Model:
    """A small residual CNN trained from scratch: the stronger recipe's model (uncompiled).

    Same input (uint8-range RGB 180x180) and output (9 logits) as the origin model, so the
    worker runs either. Dermoscopy has no up or down, so augmentation flips both ways and
    rotates freely; batch normalisation and global average pooling keep it small (2.8 M
    parameters) and trainable on a CPU.
    """
    h, w = IMAGE_SIZE
    inputs = keras.Input(shape=(h, w, 3), name="image")
    x = keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.5, fill_mode="reflect", seed=seed),
            layers.RandomZoom((-0.2, 0.1), fill_mode="reflect", seed=seed),
            layers.RandomContrast(0.15, seed=seed),
            layers.RandomBrightness(0.1, value_range=(0, 255), seed=seed),
        ],
        name="augmentation",
    )(inputs)
    return _resnet_body(inputs, x, num_classes, seed, widths, blocks_per_stage, name=RESNET)


def _resnet_body(
    inputs: Any,
    x: Any,
    num_classes: int,
    seed: int | None,
    widths: tuple[int, ...] = (32, 64, 128, 256),
    blocks_per_stage: int = 2,
    name: str = RESNET,
) -> keras.Model:
    x = layers.Rescaling(1.0 / 255)(x)
    x = layers.Conv2D(widths[0], 3, strides=2, padding="same", use_bias=False)(x)
    x = _bn()(x)
    x = layers.ReLU()(x)
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for stage, filters in enumerate(widths):
        for b in range(blocks_per_stage):
            x = _residual(x, filters, 2 if stage > 0 and b == 0 else 1)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.3, seed=seed)(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    return keras.Model(inputs, outputs, name=name)


ROBUST = "robust"


def device_augmentation(seed: int | None = None) -> keras.Sequential:
    """Augmentation of what differs between dermatoscopes and clinics, not only of geometry.

    Geometry (any orientation, zoom in and out as different optics and crops do), colour
    (hue, saturation, brightness, contrast: white balance and sensor response) and focus (blur).
    Active in training only.
    """
    return keras.Sequential(
        [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.5, fill_mode="reflect", seed=seed),
            layers.RandomZoom((-0.3, 0.15), fill_mode="reflect", seed=seed),
            layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.1,
                contrast_factor=0.2,
                saturation_factor=(0.35, 0.65),
                hue_factor=0.04,
                seed=seed,
            ),
            layers.RandomGaussianBlur(
                factor=(0.0, 1.0), kernel_size=5, sigma=(0.1, 1.2), value_range=(0, 255), seed=seed
            ),
        ],
        name="augmentation",
    )


def build_robust(num_classes: int = len(CLASS_NAMES), seed: int | None = None) -> keras.Model:
    """The resnet with colour constancy in front and device-style augmentation (uncompiled).

    Same backbone, input and output as :func:`build_resnet` (its weights can be loaded into this
    model layer by layer); colour constancy (:class:`melanoma.ml.layers.ShadesOfGray`) runs first, in
    training and at scoring time alike.
    """
    h, w = IMAGE_SIZE
    inputs = keras.Input(shape=(h, w, 3), name="image")
    x = ShadesOfGray(name="colour_constancy", dtype="float32")(inputs)
    x = device_augmentation(seed)(x)
    return _resnet_body(inputs, x, num_classes, seed, name=ROBUST)


ARCHITECTURES = {ORIGIN: build_origin, RESNET: build_resnet, ROBUST: build_robust}


def transfer_weights(source: keras.Model, target: keras.Model) -> int:
    """Copy the weights of ``source``'s layers into ``target``'s layers of the same kind, in order.

    For fine-tuning a published resnet as a robust model (same backbone, other pre-processing
    layers). Returns the number of layers copied; raises ValueError if the backbones differ.
    """

    def weighted(m: keras.Model) -> list:
        return [layer for layer in m.layers if layer.weights and not isinstance(layer, keras.Sequential)]

    src, dst = weighted(source), weighted(target)
    if [type(a) for a in src] != [type(b) for b in dst]:
        raise ValueError(f"cannot transfer weights from {source.name} to {target.name}: different layers")
    for a, b in zip(src, dst):
        b.set_weights(a.get_weights())
    return len(dst)


def build(architecture: str, seed: int | None = None) -> keras.Model:
    """Build an untrained model by architecture name (the origin model comes compiled, as its recipe says)."""
    try:
        return ARCHITECTURES[architecture](seed=seed)
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}") from None


class _CompiledShadesOfGray(ShadesOfGray):
    """Colour constancy with its element-wise passes over the image fused by XLA (inference only).

    As a TensorFlow graph the layer makes about ten passes over every pixel (a tenth to a sixth
    of the residual model's CPU time); XLA makes two. Its float32 mean over the pixels is also
    closer to the exact one (2e-6 against 7e-5 relative, checked in float64). Not for saving.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        import tensorflow as tf

        self._compiled = tf.function(super().call, jit_compile=True)

    def call(self, x: Any) -> Any:
        return self._compiled(x)


def for_inference(model: keras.Model) -> keras.Model:
    """``model`` for scoring: the same function computed in fewer passes over memory.

    Each batch normalisation that follows a convolution is folded into that convolution's weights
    and bias (at inference it is a per-channel scale and shift of its output), and colour
    constancy runs as one XLA-compiled function. Together they save ~15 % of the shipped residual
    versions' CPU time per image; probabilities agree within 1e-4 (float rounding). A model with
    neither (the origin CNN) is returned as it is; the copy is for inference only, not for saving.
    """
    if isinstance(model, keras.Sequential):
        return model  # the origin CNN: no normalisation, no colour constancy
    folds = {}  # batch normalisation layer name -> the convolution it folds into
    for layer in model.layers:
        if not isinstance(layer, layers.BatchNormalization) or len(layer._inbound_nodes) != 1:
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        conv = parents[0].operation if len(parents) == 1 else None
        if (
            isinstance(conv, layers.Conv2D)
            and conv.get_config()["activation"] == "linear"
            and len(conv._inbound_nodes) == 1
            and len(conv._outbound_nodes) == 1  # nothing else reads the unnormalised output
            and layer.axis in (-1, 3, [-1], [3])
        ):
            folds[layer.name] = conv
    if not folds and not any(isinstance(layer, ShadesOfGray) for layer in model.layers):
        return model

    folded = {conv.name: model.get_layer(bn) for bn, conv in folds.items()}  # convolution -> its normalisation

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        if type(layer) is ShadesOfGray:
            return _CompiledShadesOfGray.from_config(config)
        if layer.name in folded:
            config["use_bias"] = True
        return layer.__class__.from_config(config)

    def call_layer(layer: Any, *args: Any, **kwargs: Any) -> Any:
        return args[0] if layer.name in folds else layer(*args, **kwargs)

    clone = keras.models.clone_model(model, clone_function=clone_layer, call_function=call_layer)
    for new in clone.layers:
        if not new.weights:
            continue
        old = model.get_layer(new.name)
        if new.name in folded:
            bn, weights = folded[new.name], old.get_weights()
            mean, variance = (np.asarray(v, dtype=np.float64) for v in (bn.moving_mean, bn.moving_variance))
            gamma = np.asarray(bn.gamma, dtype=np.float64) if bn.scale else 1.0
            beta = np.asarray(bn.beta, dtype=np.float64) if bn.center else 0.0
            bias = weights[1] if len(weights) > 1 else 0.0
            scale = gamma / np.sqrt(variance + bn.epsilon)
            new.set_weights([(weights[0] * scale).astype("float32"), (beta + (bias - mean) * scale).astype("float32")])
        else:
            new.set_weights(old.get_weights())
    return clone
