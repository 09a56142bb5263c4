"""Familiarity: how unlike a version's own images an image is (an out-of-distribution score).

Three raw scores from what the model computes anyway, each "higher = less familiar":

- ``mahalanobis``: the smallest Mahalanobis distance of the penultimate features (the input of
  the ``logits`` layer) to the training features' class means, under one shared covariance
  (Ledoit-Wolf shrinkage, as the features outnumber what a plain estimate needs): far from
  every class, such as a photo of a cat;
- ``norm``: minus the length of the same features: featureless input (a plain colour field, a
  blank frame) gives weak features that can still lie *within* the class ellipsoids;
- ``energy``: minus the log-sum-exp of the logits.

A raw score means little on its own, so each is given as a percentile of the version's own
validation images (99.5: higher than 99.5 % of them); a method's familiarity is the largest
percentile of its scores (``mahalanobis+norm``, the default: either far or featureless). The
statistics (class means, the whitening factor of the shared precision, each score's validation
references) are fitted when a version is trained, or afterwards from its split, and stored beside
the model as ``familiarity.npz``. Reading and applying them needs numpy only.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FEATURE_LAYER = "logits"  # the features are this layer's input
COMPONENTS = ("mahalanobis", "energy", "norm")  # the columns of :meth:`Familiarity.raw`
# Measured on the shipped version (docs/model.md#familiarity): Mahalanobis alone misses plain
# colour fields and energy alone misses photos; either far or featureless catches most of both.
METHODS = ("mahalanobis+norm", "mahalanobis", "energy")
DEFAULT_METHOD = "mahalanobis+norm"


class FamiliarityError(ValueError):
    """Familiarity statistics that are missing, unreadable or do not fit the model."""


@dataclass
class Familiarity:
    """A version's fitted familiarity statistics."""

    method: str
    means: np.ndarray  # (classes, features) class means of the training features
    whitener: np.ndarray  # (features, features) L with L @ L.T = the shared precision
    references: dict[str, np.ndarray]  # component -> sorted raw scores of the validation images
    info: dict[str, Any] = field(default_factory=dict)

    def raw(self, features: np.ndarray, logits: np.ndarray) -> np.ndarray:
        """Raw scores ``(N, 3)``, columns :data:`COMPONENTS`, of penultimate ``features`` and ``logits``."""
        f = np.asarray(features, dtype=np.float64)
        return np.stack([mahalanobis(f, self.means, self.whitener), energy(logits), -np.linalg.norm(f, axis=1)], axis=1)

    def percentile(self, raw: np.ndarray, method: str | None = None) -> np.ndarray:
        """Familiarity (0-100) of raw scores ``(N, 3)``: for each of the method's scores, the share of
        validation images scoring lower; the largest of them."""
        raw = np.asarray(raw, dtype=np.float64)
        out = np.zeros(len(raw))
        for name in (method or self.method).split("+"):
            ref = self.references[name]
            column = raw[:, COMPONENTS.index(name)]
            out = np.maximum(out, 100.0 * np.searchsorted(ref, column, side="left") / len(ref))
        return out

    def to_bytes(self) -> bytes:
        """The statistics as the bytes of one ``.npz`` file (no pickled objects)."""
        buf = io.BytesIO()
        # Compressed: the whitener is triangular, half zeros.
        arrays: dict[str, Any] = {
            "means": self.means.astype(np.float32),
            "whitener": self.whitener.astype(np.float32),
            "info": np.frombuffer(json.dumps({"method": self.method, **self.info}).encode(), dtype=np.uint8),
            **{f"reference_{m}": r.astype(np.float64) for m, r in self.references.items()},
        }
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    def save(self, path: Path) -> None:
        """Write the statistics to ``path`` (an ``.npz`` file)."""
        path.write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: Path) -> Familiarity:
        """Read statistics written by :meth:`save`; raises :class:`FamiliarityError` on anything wrong."""
        if path.is_file() and not zipfile.is_zipfile(path):
            raise FamiliarityError(f"unreadable familiarity statistics {path.name}: not an .npz file")
        try:
            with np.load(path, allow_pickle=False) as z:
                info = json.loads(bytes(z["info"]).decode())
                means, whitener = np.asarray(z["means"]), np.asarray(z["whitener"])
                refs = {c: np.sort(np.asarray(z[f"reference_{c}"])) for c in COMPONENTS if f"reference_{c}" in z}
        except FileNotFoundError:
            raise FamiliarityError(f"no familiarity statistics ({path.name})") from None
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise FamiliarityError(f"unreadable familiarity statistics {path.name}: {exc}") from None
        method = info.pop("method", DEFAULT_METHOD)
        d = means.shape[-1]
        if (
            means.ndim != 2
            or whitener.shape != (d, d)
            or method not in METHODS
            or any(c not in refs for c in method.split("+"))
            or any(len(r) == 0 or not np.all(np.isfinite(r)) for r in refs.values())
            or not (np.all(np.isfinite(means)) and np.all(np.isfinite(whitener)))
        ):
            raise FamiliarityError(f"familiarity statistics {path.name} are inconsistent (shapes or values)")
        return cls(method=method, means=means, whitener=whitener, references=refs, info=info)


def mahalanobis(features: np.ndarray, means: np.ndarray, whitener: np.ndarray) -> np.ndarray:
    """Squared Mahalanobis distance of each row of ``features`` to the nearest class mean."""
    f = np.asarray(features, dtype=np.float64) @ whitener
    m = np.asarray(means, dtype=np.float64) @ whitener
    return np.min(((f[:, None, :] - m[None, :, :]) ** 2).sum(axis=-1), axis=1)


def energy(logits: np.ndarray) -> np.ndarray:
    """Minus the log-sum-exp of the logits (the free energy at temperature 1)."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1)
    return -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def fit(
    train_features: np.ndarray,
    train_labels: np.ndarray,
    val_features: np.ndarray,
    val_logits: np.ndarray,
    method: str = DEFAULT_METHOD,
    info: dict[str, Any] | None = None,
) -> Familiarity:
    """Class means and shared covariance from training features; references from validation images."""
    from sklearn.covariance import LedoitWolf

    if method not in METHODS:
        raise FamiliarityError(f"unknown familiarity method {method!r} (one of {', '.join(METHODS)})")
    x = np.asarray(train_features, dtype=np.float64)
    y = np.asarray(train_labels)
    classes = np.unique(y)
    means = np.stack([x[y == c].mean(axis=0) for c in classes])
    centred = x - means[np.searchsorted(classes, y)]
    d = x.shape[1]
    # Features that never vary (dead units of a barely trained model) make LedoitWolf divide 0 by 0.
    cov = (
        np.nan_to_num(LedoitWolf(assume_centered=True).fit(centred).covariance_)
        if np.any(centred)
        else np.zeros((d, d))
    )
    cov += 1e-6 * max(float(np.trace(cov)) / d, 1e-6) * np.eye(d)  # a ridge keeps it invertible
    # Cholesky of the precision: a Mahalanobis distance is then a plain norm after one matmul.
    whitener = np.linalg.cholesky(np.linalg.inv(cov))
    stats = Familiarity(method=method, means=means, whitener=whitener, references={}, info=dict(info or {}))
    raw = stats.raw(val_features, val_logits)
    stats.references = {c: np.sort(raw[:, k]) for k, c in enumerate(COMPONENTS)}
    stats.info.update(train_images=int(len(x)), val_images=int(len(val_features)), classes=[int(c) for c in classes])
    return stats


def feature_model(model: Any) -> Any:
    """A Keras model giving ``(features, logits)`` for the same input: one call, both outputs."""
    import keras

    try:
        head = model.get_layer(FEATURE_LAYER)
    except ValueError:
        raise FamiliarityError(f"the model has no layer named {FEATURE_LAYER!r} to take features from") from None
    return keras.Model(model.inputs, [head.input, model.outputs[0]])


def training_subset(labels: np.ndarray, per_class: int = 300, seed: int = 0) -> np.ndarray:
    """Indices of at most ``per_class`` images of each class: enough for the means and the covariance,
    and a fitting pass that takes minutes, not an hour, on a CPU."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        out.append(rng.choice(idx, min(per_class, len(idx)), replace=False))
    return np.sort(np.concatenate(out))


def features_and_logits(model: Any, x: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Penultimate features and logits of a Keras logits model on uint8 images, in one pass."""
    features, logits = feature_model(model).predict(x, batch_size=batch_size, verbose=0)
    return np.asarray(features, dtype=np.float64), np.asarray(logits, dtype=np.float64)


def fit_model(
    model: Any,
    train: tuple[np.ndarray, np.ndarray],
    val_x: np.ndarray,
    method: str = DEFAULT_METHOD,
    info: dict[str, Any] | None = None,
) -> Familiarity:
    """Fit ``model``'s statistics from training images and labels and validation images (uint8 arrays)."""
    train_features, _ = features_and_logits(model, train[0])
    val_features, val_logits = features_and_logits(model, val_x)
    return fit(train_features, train[1], val_features, val_logits, method, info)


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
