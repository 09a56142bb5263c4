"""How the cleaned images are divided and drawn: splits by lesion (never by image, so that one
lesion's images do not land on both sides), sources set aside for a leave-one-source-out test, and
the per-image sampling weights that balance classes within and across sources."""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import numpy as np

from melanoma.ml.data import Sample, class_counts


def split_by_lesion(
    samples: list[Sample], val_fraction: float = 0.2, seed: int = 123
) -> tuple[list[Sample], list[Sample]]:
    """Split into training and validation so that no lesion (or image) is on both sides.

    Stratified by class: for every class, whole lesions are drawn at random (fixed seed)
    until about ``val_fraction`` of that class's images are in validation.
    """
    lesions: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        lesions[s.lesion_id or f"image:{s.image_id}"].append(s)
    by_class: dict[str, list[str]] = defaultdict(list)
    for key, members in sorted(lesions.items()):
        majority = Counter(m.label for m in members).most_common(1)[0][0]
        by_class[majority].append(key)
    rng = random.Random(seed)
    val_keys: set[str] = set()
    for label in sorted(by_class):
        keys = by_class[label]
        rng.shuffle(keys)
        target = val_fraction * sum(len(lesions[k]) for k in keys)
        taken = 0
        for k in keys:
            if taken >= target:
                break
            val_keys.add(k)
            taken += len(lesions[k])
    train = [s for k, m in lesions.items() if k not in val_keys for s in m]
    val = [s for k, m in lesions.items() if k in val_keys for s in m]
    return sorted(train, key=lambda s: str(s.path)), sorted(val, key=lambda s: str(s.path))


def split_three(
    samples: list[Sample], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Training, validation and (if ``test_fraction`` > 0) test splits, all by lesion."""
    if test_fraction <= 0:
        train, val = split_by_lesion(samples, val_fraction, seed)
        return train, val, []
    rest, test = split_by_lesion(samples, test_fraction, seed)
    train, val = split_by_lesion(rest, val_fraction / (1 - test_fraction), seed + 1)
    return train, val, test


def split_inherited(
    samples: list[Sample], assigned: dict[str, str], val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[Sample], list[Sample], list[Sample]]:
    """Like :func:`split_three`, but images listed in ``assigned`` (image id -> ``train``/``val``/``test``)
    keep their side, and so does every other image of their lesion.

    Fine-tuning a published version on more data must not put its training images into the new
    test split; the images it never saw are split as usual.
    """
    lesions: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        lesions[s.lesion_id or f"image:{s.image_id}"].append(s)
    sides: dict[str, list[Sample]] = {"train": [], "val": [], "test": []}
    fresh: list[Sample] = []
    rank = {"test": 0, "val": 1, "train": 2}
    for members in lesions.values():
        known = [assigned[m.image_id] for m in members if m.image_id in assigned]
        if known:
            # A lesion split across sides before (cannot happen with split_three) goes to the most held-out one.
            sides[min(known, key=rank.__getitem__)].extend(members)
        else:
            fresh.extend(members)
    train, val, test = split_three(fresh, val_fraction, test_fraction, seed)
    return (
        sorted(sides["train"] + train, key=lambda s: str(s.path)),
        sorted(sides["val"] + val, key=lambda s: str(s.path)),
        sorted(sides["test"] + test, key=lambda s: str(s.path)),
    )


def file_in_source(sample: Sample, source: str) -> Path | None:
    """The file of ``sample``'s image that belongs to ``source`` (itself or one of its copies), if any."""
    if sample.source == source:
        return sample.path
    return next((p for p, src in sample.copies if src == source), None)


def sources_of(sample: Sample) -> set[str]:
    """Every source holding a copy of ``sample``'s image."""
    return {sample.source, *(src for _, src in sample.copies)}


def separate_sources(samples: list[Sample], exclude: set[str]) -> tuple[list[Sample], list[Sample]]:
    """Split off every image that any excluded source holds (its copies elsewhere too).

    Returns ``(rest, external)``; each external sample points at its file in the excluded source, so
    the external test scores that source's own files.
    """
    rest, external = [], []
    for s in samples:
        hit = sorted(sources_of(s) & exclude)
        if not hit:
            rest.append(s)
            continue
        path = file_in_source(s, hit[0])
        assert path is not None
        others = [(p, src) for p, src in [(s.path, s.source), *s.copies] if p != path]
        external.append(replace(s, path=path, source=hit[0], copies=others))
    return rest, external


def source_class_counts(samples: list[Sample]) -> dict[str, dict[str, int]]:
    """Images per class for every source, classes in class order (zeros included)."""
    by_source: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_source[s.source].append(s)
    return {src: class_counts(members) for src, members in sorted(by_source.items())}


def sampling_weights(samples: list[Sample], class_power: float = 0.5, source_power: float = 0.5) -> np.ndarray:
    """Per-image sampling probabilities that make the class independent of the source.

    Each source gets a share ``N_s ** source_power`` (1 = as in the data, 0 = equal), and within
    every source the classes it has are drawn in the same proportions, ``n_c ** class_power`` over
    all sources (0 = balanced classes, 1 = as in the data). A model then cannot predict the class
    from what betrays the source (camera,
    resolution, colour): in the raw data almost every nevus comes from HAM10000 and most other
    images are melanomas, and a model learns "not HAM10000" as "melanoma".
    """
    if not samples:
        return np.zeros(0)
    total = Counter(s.label for s in samples)
    prior = {c: n**class_power for c, n in total.items()}
    cell = Counter((s.source, s.label) for s in samples)
    per_source = Counter(s.source for s in samples)
    present: dict[str, set[str]] = defaultdict(set)
    for src, label in cell:
        present[src].add(label)
    w = np.empty(len(samples))
    for i, s in enumerate(samples):
        norm = sum(prior[c] for c in present[s.source])
        w[i] = per_source[s.source] ** source_power * prior[s.label] / norm / cell[(s.source, s.label)]
    return w / w.sum()


def reweighted_within_cells(samples: list[Sample], probs: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """``probs`` with each image's share of its (source, class) cell scaled by ``factors``: every cell
    keeps its mass, so the class balance and source shares of :func:`sampling_weights` stay and only
    which images of a cell are drawn changes (a cell whose factors are all 0 is left as it was)."""
    out = np.asarray(probs, dtype=float) * np.asarray(factors, dtype=float)
    cells: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, s in enumerate(samples):
        cells[(s.source, s.label)].append(i)
    for members in cells.values():
        idx = np.asarray(members)
        mass, scaled = probs[idx].sum(), out[idx].sum()
        out[idx] = out[idx] * (mass / scaled) if scaled > 0 else probs[idx]
    return out


def class_sampling_weights(samples: list[Sample], class_power: float = 0.5) -> np.ndarray:
    """Per-image sampling probabilities with the classes drawn ``n_c ** class_power`` over all
    sources pooled, whatever source an image comes from (the ablation of :func:`sampling_weights`:
    the same class balance, but the class is left dependent on the source)."""
    if not samples:
        return np.zeros(0)
    total = Counter(s.label for s in samples)
    w = np.array([total[s.label] ** class_power / total[s.label] for s in samples])
    return w / w.sum()
