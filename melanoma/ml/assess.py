"""Score labelled images with a model or a published version: per source, on another version's
split, on a folder. Imports TensorFlow when a model is run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.core.labels import CLASS_NAMES
from melanoma.ml import data, evaluate, splits
from melanoma.versions.registry import SPLIT_FILE, Registry


def predict_logits(model: Any, x: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Logits of a model on uint8 images."""
    return np.asarray(model.predict(x, batch_size=batch_size, verbose=0), dtype=np.float64)


def predict_probs(model: Any, x: np.ndarray, batch_size: int = 64, temperature: float = 1.0) -> np.ndarray:
    """Softmax probabilities (at ``temperature``) of a logits model on uint8 images."""
    return evaluate.softmax(predict_logits(model, x, batch_size), temperature)


def by_source(samples: list[data.Sample]) -> dict[str, list[tuple[Path, int]]]:
    """Every file of ``samples`` grouped by source, copies included: an image that two sources hold
    is scored in each of them, from that source's own file (its size, its colours)."""
    out: dict[str, list[tuple[Path, int]]] = {}
    for s in samples:
        for path, src in [(s.path, s.source), *s.copies]:
            out.setdefault(src, []).append((path, s.label_index))
    return dict(sorted(out.items()))


def input_size(model: Any) -> tuple[int, int]:
    """The (height, width) a Keras model takes."""
    return int(model.input_shape[1]), int(model.input_shape[2])


def evaluate_sources(
    model: Any,
    samples: list[data.Sample],
    temperature: float,
    threshold: float | None,
    desc: str,
    weights: list[float] | None = None,
    known: np.ndarray | None = None,
) -> tuple[dict[str, dict], dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Metrics per source of ``samples`` (see :func:`by_source`), the class decided with the decision
    ``weights``; also returns each source's labels and probabilities. ``known``: the probabilities of
    each sample's own file, already computed in ``samples``' order (then only the copies other
    sources hold are decoded and scored)."""
    own = {} if known is None else {s.path: known[i] for i, s in enumerate(samples)}
    metrics, arrays = {}, {}
    for src, files in by_source(samples).items():
        y = np.asarray([label for _, label in files], dtype=np.int32)
        probs = np.empty((len(files), len(CLASS_NAMES)))
        todo = []
        for k, (path, _) in enumerate(files):
            if path in own:
                probs[k] = own[path]
            else:
                todo.append(k)
        if todo:
            x, _ = data.load_arrays(
                [files[k][0] for k in todo], [files[k][1] for k in todo], f"{desc} {src}", input_size(model)
            )
            probs[todo] = predict_probs(model, x, temperature=temperature)
        metrics[src] = evaluate.metrics(y, probs, threshold, weights)
        arrays[src] = (y, probs)
    return metrics, arrays


def evaluate_on_split(
    registry: Registry, version: str, split_registry: Registry, split_version: str, data_dirs: tuple[Path, ...]
) -> dict[str, dict[str, dict]]:
    """Metrics per source of ``version`` on the test split and external images of ``split_version``
    (from its ``split.json``), so that two versions are compared on the very same images."""
    sides = json.loads((split_registry.path(split_version) / SPLIT_FILE).read_text())
    split_meta = split_registry.meta(split_version)
    kept, _ = data.read_clean(data_dirs)
    rest, external = splits.separate_sources(kept, set(split_meta.data.get("excluded_sources", [])))
    test_ids, external_ids = set(sides["test"]), set(sides.get("external", []))
    meta = registry.meta(version)
    model = registry.load(version)
    out = {
        "test": evaluate_sources(
            model,
            [s for s in rest if s.image_id in test_ids],
            meta.temperature,
            meta.melanoma_threshold,
            "test",
            meta.decision_weights,
        )[0]
    }
    if external_ids:
        out["external"] = evaluate_sources(
            model,
            [s for s in external if s.image_id in external_ids],
            meta.temperature,
            meta.melanoma_threshold,
            "external",
            meta.decision_weights,
        )[0]
    return out


def evaluate_folder(registry: Registry, version: str, folder: Path) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    """Score every image of a labelled folder-per-class set with ``version``; returns (metrics, labels, probs)."""
    from melanoma.ml.predict import smoke_check

    samples = data.read_dataset(folder)
    if not samples:
        raise ValueError(f"no labelled images under {folder}")
    predictor = smoke_check(registry, version)
    x, y = data.load_arrays(
        [s.path for s in samples], [s.label_index for s in samples], "evaluating", predictor.input_size
    )
    probs = predictor.predict(x)
    meta = registry.meta(version)
    return evaluate.metrics(y, probs, meta.melanoma_threshold, meta.decision_weights), y, probs
