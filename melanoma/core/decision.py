"""Which class a scored image is given: the class whose calibrated probability, weighted by the
model version's decision weights, is highest.

The probabilities say how likely each class is among images like the training draws, where nevi
outnumber dermatofibromas fifty to one; the most probable class therefore favours the common
classes, and balanced accuracy (every class found as often as every other) suffers. Dividing each
probability by how often training drew its class, to a power fitted on validation, is the decision
that maximises balanced accuracy (logit adjustment, Menon et al., ICLR 2021). The probabilities and
the melanoma flag are not changed by it. Numpy only: the worker and the trainer share it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from melanoma.core.labels import CLASS_NAMES


def predicted_classes(probs: np.ndarray, weights: Sequence[float] | None = None) -> np.ndarray:
    """Index of the class each row of ``probs`` ``(N, 9)`` is given: the most probable class, or
    with ``weights`` the class of highest weighted probability."""
    p = np.asarray(probs, dtype=np.float64)
    if weights is not None:
        p = p * np.asarray(weights, dtype=np.float64)
    return np.asarray(p.argmax(axis=-1))


def prior_weights(counts: Mapping[str, int], power: float) -> list[float]:
    """Decision weights from the images training drew per class (``counts`` by class name): each
    class's share to the power ``-power``, largest weight 1 (shares add one to every count). A class
    training never drew gets weight 0 and is never given: its probability is what label smoothing
    left, not evidence (with add-one alone it got the largest weight, and a run with ISIC 2017 left out,
    which draws no seborrheic keratosis, gave that class to images of other classes)."""
    drawn = np.asarray([counts.get(name, 0) for name in CLASS_NAMES], dtype=np.float64)
    if not drawn.any():
        return [1.0] * len(CLASS_NAMES)
    share = (drawn + 1) / (drawn + 1).sum()
    w = np.where(drawn > 0, share ** (-float(power)), 0.0)
    return [float(v) for v in w / w.max()]
