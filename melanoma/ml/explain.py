"""Grad-CAM heat maps: where in the image the model looked for the class it predicted.

Follows the Keras example "Grad-CAM class activation visualization": the gradients of the class's
logit with respect to the last convolutional feature map, averaged per channel, weight that
layer's channels; the weighted sum, positive part only, scaled to 0..1, is the heat map. Works for
every architecture here (the origin Sequential model and the residual functional ones). Always
computed in float32, whatever ``MELANOMA_PRECISION`` the worker scores in. Imports TensorFlow.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from PIL import Image, ImageOps
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError

from melanoma.core import files, images
from melanoma.core.errors import ImageError
from melanoma.core.labels import CLASS_NAMES
from melanoma.core.settings import Settings
from melanoma.ml.layers import is_later_member
from melanoma.store import heatmaps
from melanoma.store.db import session_scope
from melanoma.store.schema import Heatmap, Prediction


def last_conv_layer(model: keras.Model) -> keras.layers.Layer:
    """The layer Grad-CAM reads: the last convolutional feature map after its activation.

    For the origin model that is its last Conv2D (ReLU built in); for the residual models the ReLU
    after the last block's addition (the raw output of the last Conv2D there is pre-normalisation
    and its gradients say little).
    """
    kinds = (keras.layers.Conv2D, keras.layers.ReLU, keras.layers.Activation)
    maps = [layer for layer in model.layers if isinstance(layer, kinds) and len(layer.output.shape) == 4]
    # An ensemble explains through its first member, whose layers keep their names (melanoma.ml.ensemble).
    maps = [layer for layer in maps if not is_later_member(layer.name)] or maps
    if not maps:
        raise ValueError(f"model {model.name!r} has no convolutional feature map to explain")
    return maps[-1]


class GradCam:
    """Heat maps of one loaded model."""

    def __init__(self, model: keras.Model):
        self.model = model
        # (height, width) images are decoded to for this model
        self.input_size = (int(model.input_shape[1]), int(model.input_shape[2]))
        conv = last_conv_layer(model)
        if isinstance(model, keras.Sequential):
            # A loaded Sequential model has no symbolic graph to tap: call its layers on a new input.
            inputs = keras.Input(shape=model.input_shape[1:])
            x, features = inputs, None
            for layer in model.layers:
                x = layer(x)
                if layer is conv:
                    features = x
            self._grad_model = keras.Model(inputs, [features, x])
        else:
            self._grad_model = keras.Model(model.inputs, [conv.output, model.outputs[0]])

    def heatmap(self, image: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, int]:
        """``(heat map in 0..1 at the last conv layer's resolution, class explained)`` for one
        ``uint8`` image ``(H, W, 3)`` of the model's input size; the predicted class by default."""
        x = tf.convert_to_tensor(image[None].astype(np.float32))
        with tf.GradientTape() as tape:
            features, logits = self._grad_model(x, training=False)
            features = tf.cast(features, tf.float32)
            tape.watch(features)
            logits = tf.cast(logits, tf.float32)
            index = int(tf.argmax(logits[0])) if class_index is None else class_index
            score = logits[:, index]
        grads = tape.gradient(score, features)
        if grads is None:
            raise ValueError("no gradient reaches the last convolution")
        weights = tf.reduce_mean(grads, axis=(0, 1, 2))
        cam = tf.nn.relu(tf.reduce_sum(features[0] * weights, axis=-1)).numpy()
        top = float(cam.max())
        return (cam / top if top > 0 else cam), index


def overlay(original: Image.Image, heat: np.ndarray, alpha: float = 0.4) -> Image.Image:
    """``heat`` (0..1) in the jet colour map, resized to ``original`` and blended over it."""
    import matplotlib

    jet = matplotlib.colormaps["jet"]
    coloured = (jet(heat)[..., :3] * 255).astype(np.uint8)
    layer = Image.fromarray(coloured).resize(original.size, Image.Resampling.BILINEAR)
    return Image.blend(original.convert("RGB"), layer, alpha)


def explain_bytes(cam: GradCam, data: bytes, max_side: int = 1024) -> tuple[bytes, int]:
    """The heat map over the image (PNG bytes, at most ``max_side`` pixels a side) of one image
    file's content, and the class explained."""
    heat, index = cam.heatmap(images.decode(data, cam.input_size))
    # The orientation the model saw (images.decode applies EXIF rotation too).
    original = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    original.thumbnail((max_side, max_side))
    out = io.BytesIO()
    overlay(original, heat).save(out, "PNG", optimize=True)
    return out.getvalue(), index


def explain_file(cam: GradCam, path: Path, out_dir: Path, max_side: int = 1024) -> tuple[Path, int]:
    """Write ``<stem>.gradcam.png`` (the heat map over the image, at most ``max_side`` pixels a side)
    for one image file; returns the PNG's path and the class explained."""
    png, index = explain_bytes(cam, files.read_file(path, max_bytes=1 << 31), max_side)
    out = out_dir / f"{path.stem}.gradcam.png"
    out.write_bytes(png)
    return out, index


def store(
    engine: Engine, prediction_id: int, settings: Settings, cam_for: Callable[[str], GradCam]
) -> tuple[bool, str]:
    """Make and store the heat map of one scored image with the version that scored it (the same
    file content it scored: a changed file is refused). Returns whether a heat map now exists and
    what happened (the reason, when none could be made)."""
    with session_scope(engine) as s:
        row = s.get(Prediction, prediction_id)
        if row is None or row.status != "ok" or not row.model_version or not row.sha256:
            return False, "the image has no prediction to explain"
        path, sha, version = row.image_path, row.sha256, row.model_version
    if heatmaps.stored(engine, sha, version) is not None:
        return True, "already made"
    try:
        real = files.resolve_allowed(path, settings.allowed_roots)
        data = files.read_file(real, settings.max_file_bytes)
        if files.sha256(data) != sha:
            return False, "the file changed since it was scored"
        png, index = explain_bytes(cam_for(version), data, heatmaps.MAX_SIDE)
    except ImageError as exc:
        return False, f"cannot explain the image: {exc}"
    try:
        with session_scope(engine) as s:
            s.add(Heatmap(sha256=sha, model_version=version, class_name=CLASS_NAMES[index], png=png))
    except IntegrityError:
        return True, "already made"  # another worker was faster; writes are idempotent
    return True, f"made ({CLASS_NAMES[index]}, {len(png)} bytes)"
