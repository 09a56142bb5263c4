"""Class rebalancing for the recipes that use it: Augmentor samples from the training split only,
and class weights."""

from __future__ import annotations

import contextlib
import os
import random
import sys
from pathlib import Path

import numpy as np

from melanoma.core.labels import CLASS_NAMES, slug
from melanoma.ml import data
from melanoma.ml.recipes import Recipe


def augment(train: list[data.Sample], counts: dict[str, int], scratch: Path, seed: int) -> list[data.Sample]:
    """Generate ``counts[label]`` extra images per class with Augmentor, from training images only.

    Augmentor reads symlinks to the training split in ``scratch`` and writes there too, so the
    data set itself is never written to and no validation image can leak into the output.
    The origin recipe's operation: rotate up to 10° either way with probability 0.7.
    """
    import Augmentor

    out: list[data.Sample] = []
    by_class: dict[str, list[data.Sample]] = {}
    for s in train:
        by_class.setdefault(s.label, []).append(s)
    for label, members in sorted(by_class.items()):
        n = counts.get(label, 0)
        if n <= 0:
            continue
        src = scratch / "source" / slug(label)
        dst = scratch / "augmented" / slug(label)
        src.mkdir(parents=True)
        for i, s in enumerate(members):
            os.symlink(s.path.resolve(), src / f"{i:05d}{s.path.suffix.lower()}")
        random.seed(seed)
        np.random.seed(seed)
        with contextlib.redirect_stdout(sys.stderr):
            pipeline = Augmentor.Pipeline(source_directory=str(src), output_directory=str(dst.resolve()))
            pipeline.set_seed(seed)
            pipeline.rotate(probability=0.7, max_left_rotation=10, max_right_rotation=10)
            pipeline.sample(n, multi_threaded=False)
        for f in sorted(dst.iterdir()):
            out.append(data.Sample(path=f, label=label, image_id=f.stem, source="augmentor"))
    return out


def rebalance_counts(recipe: Recipe, train: list[data.Sample]) -> dict[str, int]:
    """How many Augmentor samples each class of the training split gets under ``recipe``."""
    have = data.class_counts(train)
    if recipe.rebalance == "add":
        return {c: recipe.rebalance_n for c, n in have.items() if n > 0}
    return {c: max(recipe.rebalance_n - n, 0) for c, n in have.items() if n > 0}


def class_weights(counts: dict[str, int]) -> np.ndarray:
    """Square-root inverse-frequency weights per class (mean 1 over the classes present)."""
    n = np.array([counts.get(c, 0) for c in CLASS_NAMES], dtype=np.float64)
    w = np.zeros_like(n)
    present = n > 0
    w[present] = 1.0 / np.sqrt(n[present])
    w[present] /= w[present].mean()
    return w
