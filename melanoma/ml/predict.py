"""Run the current model on batches of decoded images. Imports TensorFlow."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from melanoma.core.errors import one_line
from melanoma.core.images import IMAGE_SIZE
from melanoma.core.labels import CLASS_NAMES
from melanoma.core.settings import TTA_SCALE_RANGE
from melanoma.ml.familiarity import Familiarity, FamiliarityError
from melanoma.ml.familiarity_fit import feature_model
from melanoma.ml.inference import at_size, dihedral_views, for_inference
from melanoma.versions.registry import FAMILIARITY_FILE, ModelMeta, Registry, RegistryError

log = logging.getLogger(__name__)


def configure_tensorflow(threads: int = 0) -> list[str]:
    """Set thread counts (0 = TensorFlow's choice) and GPU memory growth; return the devices used.

    TensorFlow places the model on the first visible GPU when there is one and on the CPU
    otherwise; run one worker per GPU by giving each its own ``CUDA_VISIBLE_DEVICES``.
    """
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(max(1, threads // 2))
    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        # Without this one process reserves all GPU memory, and a second model version
        # (hot reload) or a second worker on the same card would not fit.
        tf.config.experimental.set_memory_growth(gpu, True)
    return [d.name for d in gpus] or ["/physical_device:CPU:0"]


def with_precision(model: keras.Model, precision: str) -> keras.Model:
    """``model`` computing in ``precision`` (a Keras dtype policy); the same model for float32.

    The saved model is float32; a copy of its architecture is built under the mixed policy and
    given the same weights (variables stay float32, so nothing is lost in storage).
    """
    if precision == "float32":
        return model

    def clone_layer(layer: Any) -> Any:
        config = layer.get_config()
        config["dtype"] = precision
        return layer.__class__.from_config(config)

    clone = keras.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone


class Predictor:
    """Holds one loaded model version and scores batches with compiled calls of fixed shape.

    Two shapes, the batch size and an eighth of it (:attr:`compiled_sizes`); a call's images are
    padded to its shape, so each graph is traced once per model version and never again.
    """

    def __init__(
        self,
        registry: Registry,
        batch_size: int = 32,
        precision: str = "float32",
        tta: int = 0,
        scales: Sequence[float] = (1.0,),
    ):
        if tta not in (0, 1, 4, 8):
            raise ValueError(f"test-time augmentation takes 0, 4 or 8 views, not {tta}")
        low, high = TTA_SCALE_RANGE
        if 1.0 not in scales or not all(low <= s <= high for s in scales):
            raise ValueError(f"scales must include 1 and lie between {low:g} and {high:g}, not {list(scales)}")
        self.registry = registry
        self.batch_size = batch_size
        self.precision = precision
        self.tta = tta
        self.scales = tuple(sorted({float(s) for s in scales}))
        # Why the loaded version is scored at fewer scales than asked (a network of fixed input size).
        self.scales_note: str | None = None
        self.version: str | None = None
        self.meta: ModelMeta | None = None
        # The loaded version's familiarity statistics; None (and why in familiarity_note) without.
        self.familiarity: Familiarity | None = None
        self.familiarity_note: str | None = None
        self._fns: dict[int, Callable[[Any], tf.Tensor]] = {}
        self._failed: str | None = None

    def refresh(self) -> bool:
        """Switch to the registry's current version if it changed; True if a new version was loaded.

        A version that fails to load is logged and the loaded one is kept; with none loaded yet
        the error is raised.
        """
        wanted = self.registry.current()
        if wanted is None:
            if self.version is None:
                raise RegistryError(f"no current model version in {self.registry.root}")
            return False
        if wanted in (self.version, self._failed):
            return False  # a broken version is tried once, not before every batch
        try:
            self.load(wanted)
        except Exception as exc:
            if self.version is None:
                raise
            self._failed = wanted
            log.error("model version %s failed to load, still scoring with %s: %s", wanted, self.version, exc)
            return False
        self._failed = None
        return True

    def load(self, version: str) -> None:
        """Load ``version`` (whether current or not), trace the compiled call and check its output."""
        meta = self.registry.meta(version)
        if list(meta.classes) != list(CLASS_NAMES):
            raise RegistryError(f"model version {version!r} has classes {meta.classes}, expected {list(CLASS_NAMES)}")
        saved = self.registry.load(version)
        model = with_precision(for_inference(saved), self.precision)
        h, w = (int(n) for n in model.input_shape[1:3])
        if [h, w] != list(meta.input_size[:2]):
            raise RegistryError(f"model version {version!r} takes {h}x{w} images, its metadata says {meta.input_size}")
        temperature = tf.constant(float(meta.temperature or 1.0), tf.float32)
        stats, net, note = self._familiarity(version, model)
        scaled, scales_note = self._scaled(version, saved, (h, w))
        views = self.tta if self.tta > 1 else 1

        def mean_probabilities(logits: Any, n: Any) -> Any:
            # Softmax in float32 whatever the compute precision; the version's temperature calibrates it.
            probs = tf.nn.softmax(tf.cast(logits, tf.float32) / temperature, axis=-1)
            return tf.reduce_mean(tf.reshape(probs, [views, n, -1]), axis=0)

        def with_views(x: Any) -> Any:
            return tf.concat(dihedral_views(x, views), axis=0) if views > 1 else x

        @tf.function
        def probabilities(x: Any) -> Any:
            n = tf.shape(x)[0]
            x = tf.cast(x, tf.float32)
            if stats is None:
                logits, unfamiliar = net(with_views(x), training=False), tf.zeros([n, 4], tf.float32)
            else:
                features, logits, *midlevel = net(with_views(x), training=False)
                # Of the image as it is (the first view): a score, not a vote of flipped copies.
                unfamiliar = _raw_familiarity(stats, features[:n], logits[:n], [m[:n] for m in midlevel])
            probs = mean_probabilities(logits, n)
            for size, scaled_net in scaled:
                # Enlarged in the graph, not decoded again: what the network gains from is the lesion's
                # apparent size, which training's random zoom made larger than a plain decode shows it.
                big = tf.image.resize(x, size, method="bilinear")
                probs += mean_probabilities(scaled_net(with_views(big), training=False), n)
            return probs / (1 + len(scaled)), unfamiliar

        # Two compiled batch shapes: the full one, and a small one for a job's last few images and
        # for one-image jobs, which would otherwise pay for a whole padded batch.
        fns = {}
        for n in self.compiled_sizes:
            fn = probabilities.get_concrete_function(tf.TensorSpec([n, h, w, 3], tf.uint8))
            probs = fn(tf.zeros([n, h, w, 3], tf.uint8))[0].numpy()
            if probs.shape != (n, len(CLASS_NAMES)) or not np.all(np.isfinite(probs)):
                raise RegistryError(f"model version {version!r} gives unusable output of shape {probs.shape}")
            fns[n] = fn
        self._fns, self.meta, self.version = fns, meta, version
        self.familiarity, self.familiarity_note = stats, note
        self.scales_note = scales_note
        log.info("loaded model version %s", version)

    def _familiarity(self, version: str, model: keras.Model) -> tuple[Familiarity | None, keras.Model, str | None]:
        """The version's familiarity statistics and the model that also gives what they apply to; or
        None, the plain model and a one-line reason (scoring goes on)."""
        try:
            stats = Familiarity.load(self.registry.path(version) / FAMILIARITY_FILE)
            net = feature_model(model, stats.midlevel_layer)
            widths = [int(t.shape[-1]) for t in net.outputs]
            if stats.means.shape[1] != widths[0]:
                raise FamiliarityError(
                    f"familiarity statistics have {stats.means.shape[1]} features, the model {widths[0]}"
                )
            if stats.midlevel is not None and stats.midlevel.means.shape[1] != widths[2]:
                raise FamiliarityError(
                    f"familiarity statistics summarise {stats.midlevel.means.shape[1]} values of "
                    f"{stats.midlevel_layer!r}, the model gives {widths[2]}"  # a mean and a spread per channel
                )
            return stats, net, None
        except (FamiliarityError, ValueError) as exc:
            note = f"familiarity unavailable for {version}: {exc}"
            log.warning("%s (`melanoma calibrate-familiarity %s` fits it); scoring goes on without", note, version)
            return None, model, note

    def _scaled(
        self, version: str, saved: keras.Model, size: tuple[int, int]
    ) -> tuple[list[tuple[tuple[int, int], keras.Model]], str | None]:
        """The network at each scale other than 1, and its input size; or none and a one-line reason
        when the version's network takes only its own size (scoring goes on at scale 1)."""
        out = []
        for scale in self.scales:
            if scale == 1.0:
                continue
            scaled_size = (round(size[0] * scale), round(size[1] * scale))
            try:
                net = with_precision(for_inference(at_size(saved, scaled_size)), self.precision)
            except ValueError as exc:
                note = f"{version} takes only {size[0]}x{size[1]} images: scored at scale 1 alone ({one_line(exc)})"
                log.warning("%s", note)
                return [], note
            out.append((scaled_size, net))
        return out, None

    @property
    def test_time(self) -> str | None:
        """How the loaded version scores when not as one plain view (``views 4, scales 1,1.18``), as
        the results record it; None for one view at scale 1."""
        scales = (1.0,) if self.scales_note else self.scales
        if self.tta <= 1 and scales == (1.0,):
            return None
        return f"views {max(self.tta, 1)}, scales {','.join(f'{s:g}' for s in scales)}"

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the loaded version's input: the size images are decoded to."""
        if self.meta is None:
            self.refresh()
        assert self.meta is not None
        return int(self.meta.input_size[0]), int(self.meta.input_size[1])

    @property
    def decision_weights(self) -> list[float] | None:
        """The loaded version's decision weights (melanoma.core.decision); None: the most probable class."""
        if self.meta is None:
            self.refresh()
        assert self.meta is not None
        return self.meta.decision_weights

    @property
    def compiled_sizes(self) -> tuple[int, ...]:
        """The batch shapes the model is compiled for: the batch size and an eighth of it."""
        return tuple(sorted({max(1, self.batch_size // 8), self.batch_size}))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Probabilities ``(N, 9)`` for ``uint8`` images ``(N, height, width, 3)`` of :attr:`input_size`."""
        return self.assess(batch)[0]

    def assess(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        """Probabilities ``(N, 9)`` and familiarity percentiles ``(N,)`` (None when the version has no
        statistics) of ``uint8`` images ``(N, height, width, 3)``, from the same model call."""
        if not self._fns:
            self.refresh()
        fns, stats = self._fns, self.familiarity  # one version's, even if another loads meanwhile
        n = len(batch)
        out = np.empty((n, len(CLASS_NAMES)), dtype=np.float32)
        raw = np.empty((n, 4), dtype=np.float64)
        start = 0
        while start < n:
            size = self._call_size(n - start, fns)
            chunk = batch[start : start + size]
            m = len(chunk)
            if m < size:
                padded = np.zeros((size, *chunk.shape[1:]), dtype=np.uint8)
                padded[:m] = chunk
                chunk = padded
            probs, chunk_raw = fns[size](tf.constant(chunk))
            out[start : start + m] = probs.numpy()[:m]
            raw[start : start + m] = chunk_raw.numpy()[:m]
            start += m
        return out, (None if stats is None else stats.percentile(raw))

    def _call_size(self, left: int, fns: dict[int, Any]) -> int:
        """The compiled shape for the next call when ``left`` images remain: the full one, or the
        small one while at most two small calls finish them (a job's last few images). On CPU a
        small call costs about a fifth of a full one (measured: 20-28 against 117-123 ms at
        4 and 32), so a last 8 images take two small calls instead of a full call padded from 8.
        """
        small = min(fns)
        return small if left <= 2 * small else max(fns)


def _raw_familiarity(stats: Familiarity, features: Any, logits: Any, midlevel: list[Any]) -> Any:
    """The raw familiarity scores ``(N, 4)`` (:meth:`Familiarity.raw`) as TensorFlow ops, float32;
    ``midlevel``: the middle block's statistics, or nothing for statistics without them."""
    features = tf.cast(features, tf.float32)

    def distance(x: Any, gaussian: Any) -> Any:
        whitener = tf.constant(gaussian.whitener, tf.float32)
        centres = tf.constant(gaussian.means @ gaussian.whitener, tf.float32)  # the means, whitened once
        white = tf.matmul(tf.cast(x, tf.float32), whitener)
        return tf.reduce_min(tf.reduce_sum(tf.square(white[:, None, :] - centres[None, :, :]), axis=-1), axis=1)

    energy = -tf.reduce_logsumexp(tf.cast(logits, tf.float32), axis=-1)
    mid = distance(midlevel[0], stats.midlevel) if stats.midlevel is not None else tf.zeros_like(energy)
    return tf.stack([distance(features, stats.classes), energy, -tf.norm(features, axis=-1), mid], axis=1)


def smoke_batch(n: int = 8, seed: int = 0, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """A fixed batch of uint8 images (noise, black, white, grey) for the sanity check."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, *size, 3), dtype=np.uint8)
    x[1], x[2], x[3] = 0, 255, 128
    return x


def smoke_check(registry: Registry, version: str) -> Predictor:
    """Load ``version`` into a Predictor and check its probabilities; returns the Predictor."""
    p = Predictor(registry, batch_size=8)
    p.load(version)
    probs = p.predict(smoke_batch(size=p.input_size))
    if (
        not np.all(np.isfinite(probs))
        or np.any(probs < 0)
        or np.any(probs > 1)
        or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3)
    ):
        raise RegistryError(f"model version {version!r} predicts invalid probabilities on the smoke batch")
    return p
