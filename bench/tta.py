"""Test-time augmentation: what 4 or 8 views of each image, or a second scale, buy and cost.

Scores labelled folders (one sub-folder per class) with a model version at MELANOMA_TTA 0, 4 and 8
(and other MELANOMA_TTA_SCALES) and reports balanced accuracy, melanoma AUC and specificity at 85 %
sensitivity, seborrheic keratosis AUC, ECE and model images/s (decoded images, batch 32, this
machine), pooled and per source (each image once, under the source it was read from: unlike the
model cards, a copy held by a second source is not scored again there):

    python -m bench.tta VERSION_FOLDER FOLDER [FOLDER ...] [--views 0,4,8] [--scales 1 --scales 1,1.18]
        [--out runs/bench-tta]

Each number of views (MELANOMA_TTA) is measured with each set of scales (MELANOMA_TTA_SCALES); the
melanoma AUC's change from the first of them comes with a paired bootstrap 95 % interval.

With ``--test-split`` the folders are the data folders the version was trained from, and the images
scored are its own test split (its ``split.json``); the class is the version's (decision weights).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from melanoma.ml import data, evaluate
from melanoma.ml.clinic import MELANOMA, auc_difference_interval
from melanoma.versions.registry import SPLIT_FILE, Registry


def _by_source(
    y: np.ndarray, probs: np.ndarray, sources: np.ndarray, threshold: float | None, weights: list[float] | None
) -> dict[str, dict]:
    keys = ("balanced_accuracy", "melanoma_auc", "melanoma_specificity_at_85_sensitivity")
    out = {}
    for src in sorted(set(sources)):
        mask = sources == src
        m = evaluate.metrics(y[mask], probs[mask], threshold, weights)
        out[str(src)] = {"images": int(mask.sum())} | {k: m[k] for k in keys}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version", type=Path, help="a version folder, e.g. models/robust-...")
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--limit-per-class", type=int, default=0)
    ap.add_argument("--test-split", action="store_true", help="score the version's test split of these folders")
    ap.add_argument("--views", default="0,4,8", help="numbers of views, `,`-separated")
    ap.add_argument("--scales", action="append", help="a set of scales, `,`-separated (repeat for more; default 1)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-tta"))
    args = ap.parse_args()
    from melanoma.ml.predict import Predictor, configure_tensorflow

    configure_tensorflow(0)
    registry, version = Registry(args.version.resolve().parent), args.version.resolve().name
    meta = registry.meta(version)
    if args.test_split:
        test_ids = set(json.loads((registry.path(version) / SPLIT_FILE).read_text())["test"])
        samples = [s for s in data.read_clean(tuple(args.folders))[0] if s.image_id in test_ids]
    else:
        samples = [s for f in args.folders for s in data.read_dataset(f)]
    if args.limit_per_class:
        samples = data.limit_per_class(samples, args.limit_per_class)
    size = (int(meta.input_size[0]), int(meta.input_size[1]))
    x, y = data.load_arrays([s.path for s in samples], [s.label_index for s in samples], "images", size)
    sources = np.array([s.source for s in samples])
    threshold = meta.melanoma_threshold
    result = {"version": version, "folders": [str(f) for f in args.folders], "images": len(y), "tta": {}}
    scale_sets = [tuple(float(v) for v in text.split(",")) for text in args.scales or ["1"]]
    baseline = None
    for views, scales in itertools.product((int(v) for v in args.views.split(",")), scale_sets):
        p = Predictor(registry, batch_size=32, tta=views, scales=scales)
        p.load(version)
        key = f"{views} views, scales {','.join(f'{v:g}' for v in p.scales)}"
        p.predict(x[:32])
        t0 = time.perf_counter()
        probs = p.predict(x)
        rate = len(x) / (time.perf_counter() - t0)
        m = evaluate.metrics(y, probs, threshold, meta.decision_weights)
        baseline = probs if baseline is None else baseline
        change = auc_difference_interval(y == MELANOMA, probs[:, MELANOMA], baseline[:, MELANOMA])
        result["tta"][key] = {
            "images_per_s": round(rate, 1),
            "balanced_accuracy": m["balanced_accuracy"],
            "melanoma_auc": m["melanoma_auc"],
            "melanoma_auc_change_ci95": change,
            "seborrheic_keratosis_auc": m["seborrheic_keratosis_auc"],
            "ece": m["ece"],
            "melanoma_specificity_at_85_sensitivity": m["melanoma_specificity_at_85_sensitivity"],
            # The version's threshold was chosen on single views at scale 1: more views or scales move it.
            "melanoma_sensitivity_at_threshold": m.get("melanoma_sensitivity_at_threshold"),
            "melanoma_specificity_at_threshold": m.get("melanoma_specificity_at_threshold"),
            "by_first_source": _by_source(y, probs, sources, threshold, meta.decision_weights),
        }
        print(
            f"{key}: {rate:7.1f} img/s  balanced acc {m['balanced_accuracy']:.3f}  melanoma AUC "
            f"{m['melanoma_auc'] or float('nan'):.3f}  SK AUC {m['seborrheic_keratosis_auc'] or float('nan'):.3f}  "
            f"ECE {m['ece']:.3f}  specificity at 85 % sensitivity "
            f"{m['melanoma_specificity_at_85_sensitivity'] or float('nan'):.3f}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tta.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
