"""Test-time augmentation: what 4 or 8 views of each image buy, and what they cost.

Scores labelled folders (one sub-folder per class) with a model version at MELANOMA_TTA 0, 4 and 8
and reports balanced accuracy, melanoma AUC, seborrheic keratosis AUC and model images/s (decoded
images, batch 32, this machine):

    python -m bench.tta VERSION_FOLDER FOLDER [FOLDER ...] [--out runs/bench-tta]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from melanoma.ml import data, evaluate
from melanoma.versions.registry import Registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version", type=Path, help="a version folder, e.g. models/robust-...")
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--limit-per-class", type=int, default=0)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-tta"))
    args = ap.parse_args()
    from melanoma.ml.predict import Predictor, configure_tensorflow

    configure_tensorflow(0)
    registry, version = Registry(args.version.resolve().parent), args.version.resolve().name
    samples = [s for f in args.folders for s in data.read_dataset(f)]
    if args.limit_per_class:
        samples = data.limit_per_class(samples, args.limit_per_class)
    x, y = data.load_arrays([s.path for s in samples], [s.label_index for s in samples])
    threshold = registry.meta(version).melanoma_threshold
    result = {"version": version, "folders": [str(f) for f in args.folders], "images": len(y), "tta": {}}
    for views in (0, 4, 8):
        p = Predictor(registry, batch_size=32, tta=views)
        p.load(version)
        p.predict(x[:32])
        t0 = time.perf_counter()
        probs = p.predict(x)
        rate = len(x) / (time.perf_counter() - t0)
        m = evaluate.metrics(y, probs, threshold)
        result["tta"][views] = {
            "images_per_s": round(rate, 1),
            "balanced_accuracy": m["balanced_accuracy"],
            "melanoma_auc": m["melanoma_auc"],
            "seborrheic_keratosis_auc": m["seborrheic_keratosis_auc"],
            "ece": m["ece"],
        }
        print(
            f"TTA {views}: {rate:7.1f} img/s  balanced acc {m['balanced_accuracy']:.3f}  melanoma AUC "
            f"{m['melanoma_auc'] or float('nan'):.3f}  SK AUC {m['seborrheic_keratosis_auc'] or float('nan'):.3f}  "
            f"ECE {m['ece']:.3f}",
            flush=True,
        )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tta.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
