"""Batch-normalisation statistics from a clinic's own images: does a version re-normalised on a
device's unlabelled images rank that device's melanomas better?

A new dermatoscope shifts every layer's activations; re-estimating each batch normalisation's mean
and variance on the new device's images, labels unneeded (AdaBN, Li et al. 2016), is the classic
remedy. The ``pretrained`` recipe fine-tunes with batch normalisation frozen at ImageNet's
statistics, so two ways are measured: ``replace`` (AdaBN as published: the new images' statistics
in place of the frozen ones) and ``align`` (each layer maps its inputs' statistics on the new images
onto those on the training images, then normalises as trained). On a version's left-out sources
(its split's ``external`` images) and, as a control, on its test split's sources:

    python -m bench.bn_adapt VERSION_FOLDER [--data D ...] [--sizes 64,all] [--out runs/bench-bn-adapt]

Each source's images are split in two halves at random (seeded); the network is re-normalised on
(up to N images of) one half and scores the other, and the other way round, so no image is scored
with statistics it helped to estimate. The reference statistics for ``align`` come from training
images; as a further control the network is re-normalised on the version's validation images (its
training sources, other lesions): ``align`` should then change next to nothing. Each row's melanoma
AUC change from the version as trained comes with a paired bootstrap 95 % interval; the temperature,
operating point and decision weights are the version's. Writes ``bn_adapt.json`` and ``bn_adapt.md``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import DEFAULT_DATA
from bench.ensemble import ALL, COLUMNS, TRAINING_FOLDERS, _Images, _summary
from melanoma.ml import assess, clinic, data, evaluate
from melanoma.ml.clinic import MELANOMA
from melanoma.ml.splits import separate_sources
from melanoma.versions.registry import SPLIT_FILE, Registry

MIN_IMAGES = 40  # a source with fewer images gives no melanoma AUC worth a row


Stats = dict[str, tuple[np.ndarray, np.ndarray]]  # batch normalisation name -> its inputs' mean, variance


def input_statistics(model: Any, x: np.ndarray, align_to: Stats | None = None, batch_size: int = 32) -> Stats:
    """Each batch normalisation's input mean and variance per channel over the images ``x`` (uint8,
    the model's input size), augmentation layers in inference mode.

    Without ``align_to``: the network as it is. With it, as the network re-normalised on ``x`` would
    see them: every batch normalisation first maps its input's batch statistics onto ``align_to``'s,
    so each layer is measured with the layers before it already adapted. A layer's statistics over
    all images are its batches' pooled (law of total variance), as training-mode batch normalisation
    estimates them.
    """
    import keras
    from keras import ops

    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    seen: dict[str, list[np.ndarray]] = {bn.name: [] for bn in norms}

    class Measured(keras.layers.Layer):
        """The batch normalisation ``bn``, recording its inputs' batch statistics (eager calls)."""

        def __init__(self, bn: Any) -> None:
            super().__init__(name=f"{bn.name}_measured")
            self.bn = bn

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape  # spares Keras tracing ``call``, which records only eager batches

        def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
            mean, variance = ops.mean(inputs, axis=(0, 1, 2)), ops.var(inputs, axis=(0, 1, 2))
            seen[self.bn.name].append(np.stack([np.asarray(mean), np.asarray(variance)]))
            if align_to is not None:
                to_mean, to_variance = align_to[self.bn.name]
                eps = self.bn.epsilon
                inputs = (inputs - mean) / ops.sqrt(variance + eps) * np.sqrt(to_variance + eps) + to_mean
            return self.bn(inputs, training=False)

    # The other layers are the model's own objects (no copy): only the normalisations are wrapped.
    measuring = keras.models.clone_model(
        model,
        clone_function=lambda layer: Measured(layer) if isinstance(layer, keras.layers.BatchNormalization) else layer,
    )
    counts = []
    for start in range(0, len(x), batch_size):
        batch = x[start : start + batch_size]
        measuring(batch, training=False)
        counts.append(len(batch))
    w = np.asarray(counts, dtype=np.float64)[:, None] / sum(counts)
    out = {}
    for name, batches in seen.items():
        stats = np.asarray(batches, dtype=np.float64)  # (batches, 2, channels)
        mean = (w * stats[:, 0]).sum(axis=0)
        out[name] = (mean, (w * (stats[:, 1] + (stats[:, 0] - mean) ** 2)).sum(axis=0))
    return out


def renormalised(model: Any, x: np.ndarray, reference: Stats | None = None) -> Any:
    """A copy of ``model`` re-normalised on the unlabelled images ``x``; every learnt weight kept.

    Without ``reference`` each batch normalisation takes the mean and variance of its inputs over
    ``x`` (AdaBN): right for a network trained with its statistics updating. The ``pretrained``
    recipe trains with them frozen at ImageNet's, so with ``reference`` (the training images'
    :func:`input_statistics`) each layer instead maps its inputs' statistics over ``x`` onto the
    reference's before its own ImageNet normalisation: a network re-normalised on training images
    is the network as trained.
    """
    import keras

    if reference is None:
        # Mapping onto a layer's own statistics and normalising with them is normalising with the
        # batch's: AdaBN, each layer measured with the layers before it already re-normalised.
        reference = {
            layer.name: (np.asarray(layer.moving_mean, np.float64), np.asarray(layer.moving_variance, np.float64))
            for layer in model.layers
            if isinstance(layer, keras.layers.BatchNormalization)
        }
    target = input_statistics(model, x, align_to=reference)
    adapted = keras.models.clone_model(model)
    adapted.set_weights(model.get_weights())
    for name, (mean, variance) in target.items():
        layer = adapted.get_layer(name)
        # BN((x - mean) / s * s_ref + mean_ref) with BN's own statistics (m, v), as one normalisation;
        # with the reference (m, v) it is (mean, variance).
        eps = layer.epsilon
        m, v = (np.asarray(w, dtype=np.float64) for w in (layer.moving_mean, layer.moving_variance))
        ref_mean, ref_variance = reference[name]
        ratio = np.sqrt(variance + eps) / np.sqrt(ref_variance + eps)
        mean, variance = mean - (ref_mean - m) * ratio, np.maximum(ratio**2 * (v + eps) - eps, 0.0)
        layer.moving_mean.assign(np.asarray(mean, dtype="float32"))
        layer.moving_variance.assign(np.asarray(variance, dtype="float32"))
    return adapted


def _row(y: np.ndarray, probs: np.ndarray, baseline: np.ndarray, meta: Any) -> dict:
    m = evaluate.metrics(y, probs, meta.melanoma_threshold, meta.decision_weights)
    row = _summary(m)
    row["median_p_melanoma_melanomas"] = m["median_p_melanoma_melanomas"]
    row["melanoma_auc_change_ci95"] = clinic.auc_difference_interval(
        y == MELANOMA, probs[:, MELANOMA], baseline[:, MELANOMA]
    )
    return row


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version", type=Path, help="a version folder")
    ap.add_argument(
        "--data", type=Path, action="append", help="its training folders (repeat; default: the five of ../shared/data)"
    )
    ap.add_argument("--sizes", default="64,all", help="images of a half to re-normalise on, `,`-separated")
    ap.add_argument("--reference-images", type=int, default=1024, help="training images for align's reference")
    ap.add_argument("--control-images", type=int, default=1024, help="validation images for the control")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-bn-adapt"))
    args = ap.parse_args(argv)
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    registry, version = Registry(args.version.resolve().parent), args.version.resolve().name
    meta = registry.meta(version)
    split = json.loads((registry.path(version) / SPLIT_FILE).read_text())
    kept, _ = data.read_clean(tuple(args.data or [DEFAULT_DATA / d for d in TRAINING_FOLDERS]))
    rest, external = separate_sources(kept, set(meta.data.get("excluded_sources", [])))
    rng = np.random.default_rng(args.seed)

    def drawn(ids: list[str], n: int, desc: str) -> _Images:
        chosen = set(ids) if n >= len(ids) else set(rng.choice(sorted(ids), n, replace=False))
        return _Images([s for s in rest if s.image_id in chosen], desc, copies=False)

    sides = {
        "external": _Images([s for s in external if s.image_id in set(split.get("external", []))], "external"),
        "test": _Images([s for s in rest if s.image_id in set(split["test"])], "test"),
    }
    model = registry.load(version)
    size = assess.input_size(model)
    reference = input_statistics(model, drawn(split["train"], args.reference_images, "reference").x(size))
    control_x = drawn(split["val"], args.control_images, "control").x(size)
    controls = {mode: renormalised(model, control_x, ref) for mode, ref in (("align", reference), ("replace", None))}
    sizes = [0 if s == "all" else int(s) for s in args.sizes.split(",")]
    result: dict = {"version": version, "excluded_sources": meta.data.get("excluded_sources", []), "sides": {}}
    lines = [
        f"# Batch-normalisation statistics re-estimated on unlabelled images: {version}",
        "",
        "Each source's images in two random halves, re-normalised on (up to N images of) one half and "
        "scored on the other, and the other way round; `align` maps each layer's statistics onto those of "
        f"{args.reference_images} training images, `replace` puts them in place of ImageNet's (AdaBN); the "
        f"control is re-normalised on {len(control_x)} validation images (training sources). Melanoma AUC "
        "change from the version as trained with a paired bootstrap 95 % interval.",
        "",
        "| side | source | images | re-normalised on | "
        + " | ".join(label for _, label in COLUMNS)
        + " | mel AUC change (95 %) |",
        "|---|---|---|---|" + "---|" * len(COLUMNS) + "---|",
    ]

    def probs_of(adapted: Any, x: np.ndarray) -> np.ndarray:
        return assess.predict_probs(adapted, x, temperature=meta.temperature)

    for side, images in sides.items():
        x = images.x(size)
        for src, rows in images.groups.items():
            if src == ALL or len(rows) < MIN_IMAGES:
                continue
            y, xs = images.y[rows], x[rows]
            baseline = probs_of(model, xs)
            conditions = {"nothing (as trained)": baseline}
            for mode, adapted in controls.items():
                conditions[f"{mode}: validation images (control)"] = probs_of(adapted, xs)
            halves = np.array_split(rng.permutation(len(rows)), 2)
            for mode, n in [("align", n) for n in sizes] + [("replace", 0)]:
                probs = np.empty_like(baseline)
                for a, b in (halves, halves[::-1]):
                    own = renormalised(model, xs[a if n == 0 else a[:n]], reference if mode == "align" else None)
                    probs[b] = probs_of(own, xs[b])
                conditions[f"{mode}: its other half ({'all' if n == 0 else f'{n} images'})"] = probs
            out = {name: _row(y, p, baseline, meta) for name, p in conditions.items()}
            result["sides"].setdefault(side, {})[src] = out
            for name, row in out.items():
                ci = row["melanoma_auc_change_ci95"]
                lines.append(
                    f"| {side} | {src} | {row['n']} | {name} | "
                    + " | ".join(_fmt(row[key]) for key, _ in COLUMNS)
                    + f" | {'n/a' if ci is None else f'{ci[0]:+.3f} to {ci[1]:+.3f}'} |"
                )
                print(lines[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bn_adapt.json").write_text(json.dumps(result, indent=1))
    (args.out / "bn_adapt.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
