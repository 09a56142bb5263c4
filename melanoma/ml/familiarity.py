"""Familiarity: how unlike a version's own images an image is (an out-of-distribution score).

Four raw scores from what the model computes anyway, each "higher = less familiar":

- ``mahalanobis``: the smallest Mahalanobis distance of the penultimate features (the input of
  the ``logits`` layer) to the training features' class means, under one shared covariance
  (Ledoit-Wolf shrinkage, as the features outnumber what a plain estimate needs): far from
  every class in what the network has learned to tell apart, such as a photo of a cat;
- ``midlevel``: the Mahalanobis distance of the channel means and spreads of a middle block's output
  (:func:`middle_layer`; block 10 of 16 in EfficientNet-Lite0) to the training images' one Gaussian:
  colour, texture and contrast unlike skin under a dermatoscope, which the penultimate features can
  miss (a plain colour field or a grey micrograph lies within the classes' ellipsoids there);
- ``norm``: minus the length of the penultimate features (featureless input);
- ``energy``: minus the log-sum-exp of the logits.

A raw score means little on its own, so each is given as a percentile of the version's own
validation images (99.5: higher than 99.5 % of them). A method that combines scores
(``mahalanobis+midlevel``, the default) takes the largest of their percentiles and gives *that* as a
percentile of the validation images' own largest percentiles: "above 99" then flags 1 % of the
validation images whatever the number of scores combined (the plain largest of two would flag up to
2 %). The statistics (class means, the whitening factors of the precisions, the references) are
fitted when a version is trained, or afterwards from its split, and stored beside the model as
``familiarity.npz``. Reading and applying them needs numpy only.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

FEATURE_LAYER = "logits"  # the features are this layer's input
COMPONENTS = ("mahalanobis", "energy", "norm", "midlevel")  # the columns of :meth:`Familiarity.raw`
# Measured on the shipped version (docs/model.md#familiarity): the penultimate Mahalanobis distance
# misses plain colour fields and grey micrographs, the middle block's statistics catch them.
METHODS = ("mahalanobis+midlevel", "mahalanobis+norm", "mahalanobis", "midlevel", "energy")
DEFAULT_METHOD = "mahalanobis+midlevel"


class FamiliarityError(ValueError):
    """Familiarity statistics that are missing, unreadable or do not fit the model."""


class Outputs(NamedTuple):
    """What one model call gives familiarity: penultimate features, logits and the middle block's
    channel means and spreads (None for statistics without the ``midlevel`` score)."""

    features: np.ndarray
    logits: np.ndarray
    midlevel: np.ndarray | None = None


@dataclass
class Gaussian:
    """Means (one row per class, or one) and the whitening factor ``L`` of their shared precision
    (``L @ L.T``): a Mahalanobis distance is a plain norm after one matmul."""

    means: np.ndarray
    whitener: np.ndarray

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Squared Mahalanobis distance of each row of ``x`` to the nearest mean."""
        f = np.asarray(x, dtype=np.float64) @ self.whitener
        m = np.asarray(self.means, dtype=np.float64) @ self.whitener
        return np.min(((f[:, None, :] - m[None, :, :]) ** 2).sum(axis=-1), axis=1)

    def consistent(self) -> bool:
        """Whether the shapes agree and every value is finite."""
        d = self.means.shape[-1]
        return (
            self.means.ndim == 2
            and self.whitener.shape == (d, d)
            and bool(np.all(np.isfinite(self.means)) and np.all(np.isfinite(self.whitener)))
        )


@dataclass
class Familiarity:
    """A version's fitted familiarity statistics."""

    method: str
    classes: Gaussian  # of the penultimate features, one mean per class
    references: dict[str, np.ndarray]  # component or combining method -> sorted validation scores
    midlevel: Gaussian | None = None  # of the middle block's statistics, one mean
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def means(self) -> np.ndarray:
        """The class means of the penultimate features ``(classes, features)``."""
        return self.classes.means

    @property
    def midlevel_layer(self) -> str | None:
        """The name of the layer whose output the ``midlevel`` score summarises."""
        return self.info.get("midlevel_layer") if self.midlevel is not None else None

    @property
    def methods(self) -> list[str]:
        """The methods these statistics can apply: those each of whose scores they hold a reference for."""
        return [m for m in METHODS if all(c in self.references for c in m.split("+"))]

    def raw(self, out: Outputs) -> np.ndarray:
        """Raw scores ``(N, 4)``, columns :data:`COMPONENTS` (``midlevel`` 0 without its statistics)."""
        f = np.asarray(out.features, dtype=np.float64)
        mid = (
            self.midlevel.distance(out.midlevel)
            if self.midlevel is not None and out.midlevel is not None
            else np.zeros(len(f))
        )
        return np.stack([self.classes.distance(f), energy(out.logits), -np.linalg.norm(f, axis=1), mid], axis=1)

    def percentile(self, raw: np.ndarray, method: str | None = None) -> np.ndarray:
        """Familiarity (0-100) of raw scores ``(N, 4)``: for each of the method's scores, the share of
        validation images scoring lower; the largest of them, as a percentile of the validation
        images' own largest (when the statistics hold that reference)."""
        method = method or self.method
        raw = np.asarray(raw, dtype=np.float64)
        out = np.zeros(len(raw))
        for name in method.split("+"):
            out = np.maximum(out, _rank(self.references[name], raw[:, COMPONENTS.index(name)]))
        return _rank(self.references[method], out) if "+" in method and method in self.references else out

    def to_bytes(self) -> bytes:
        """The statistics as the bytes of one ``.npz`` file (no pickled objects)."""
        buf = io.BytesIO()
        arrays: dict[str, Any] = {
            "means": self.classes.means.astype(np.float32),
            "whitener": self.classes.whitener.astype(np.float32),
            "info": np.frombuffer(json.dumps({"method": self.method, **self.info}).encode(), dtype=np.uint8),
            **{f"reference_{m}": r.astype(np.float64) for m, r in self.references.items()},
        }
        if self.midlevel is not None:
            arrays["midlevel_means"] = self.midlevel.means.astype(np.float32)
            arrays["midlevel_whitener"] = self.midlevel.whitener.astype(np.float32)
        # Compressed: the whiteners are triangular, half zeros.
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
                classes = Gaussian(np.asarray(z["means"]), np.asarray(z["whitener"]))
                names = [k for k in COMPONENTS + METHODS if f"reference_{k}" in z]
                refs = {k: np.sort(np.asarray(z[f"reference_{k}"])) for k in names}
                mid = (
                    Gaussian(np.asarray(z["midlevel_means"]), np.asarray(z["midlevel_whitener"]))
                    if "midlevel_means" in z
                    else None
                )
        except FileNotFoundError:
            raise FamiliarityError(f"no familiarity statistics ({path.name})") from None
        except (OSError, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise FamiliarityError(f"unreadable familiarity statistics {path.name}: {exc}") from None
        stats = cls(
            method=info.pop("method", DEFAULT_METHOD), classes=classes, references=refs, midlevel=mid, info=info
        )
        if (
            stats.method not in stats.methods
            or any(len(r) == 0 or not np.all(np.isfinite(r)) for r in refs.values())
            or not classes.consistent()
            or ("midlevel" in refs and mid is None)
            # The middle block's statistics name the layer they summarise (the worker's model call needs it).
            or (mid is not None and (not mid.consistent() or not info.get("midlevel_layer")))
        ):
            raise FamiliarityError(f"familiarity statistics {path.name} are inconsistent (shapes or values)")
        return stats


def _rank(reference: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Percent of the sorted ``reference`` strictly below each value."""
    return 100.0 * np.searchsorted(reference, values, side="left") / len(reference)


def energy(logits: np.ndarray) -> np.ndarray:
    """Minus the log-sum-exp of the logits (the free energy at temperature 1)."""
    z = np.asarray(logits, dtype=np.float64)
    top = z.max(axis=1)
    return -(top + np.log(np.exp(z - top[:, None]).sum(axis=1)))


def gaussian(x: np.ndarray, labels: np.ndarray | None = None) -> Gaussian:
    """Per-class means (one mean without ``labels``) and a shared Ledoit-Wolf covariance of ``x``."""
    from sklearn.covariance import LedoitWolf

    x = np.asarray(x, dtype=np.float64)
    y = np.zeros(len(x), dtype=int) if labels is None else np.asarray(labels)
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
    return Gaussian(means, np.linalg.cholesky(np.linalg.inv(cov)))


def fit(
    train: Outputs,
    train_labels: np.ndarray,
    val: Outputs,
    method: str = DEFAULT_METHOD,
    info: dict[str, Any] | None = None,
) -> Familiarity:
    """Class means and shared covariance from training outputs; references from validation outputs."""
    if method not in METHODS:
        raise FamiliarityError(f"unknown familiarity method {method!r} (one of {', '.join(METHODS)})")
    if "midlevel" in method.split("+") and (train.midlevel is None or val.midlevel is None):
        raise FamiliarityError(f"{method} needs the middle block's statistics")
    mid = gaussian(train.midlevel) if train.midlevel is not None and val.midlevel is not None else None
    stats = Familiarity(method, gaussian(train.features, train_labels), {}, mid, dict(info or {}))
    raw = stats.raw(val)
    stats.references = {c: np.sort(raw[:, k]) for k, c in enumerate(COMPONENTS) if c != "midlevel" or mid}
    for m in METHODS:  # each combining method's own reference: its largest percentiles, uncalibrated
        if "+" in m and m in stats.methods:
            stats.references[m] = np.sort(stats.percentile(raw, m))
    stats.info.update(
        train_images=int(len(train.features)),
        val_images=int(len(val.features)),
        classes=[int(c) for c in np.unique(train_labels)],
    )
    return stats
