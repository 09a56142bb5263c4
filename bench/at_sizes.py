"""A version scored at other input sizes with the same weights: does it rank melanomas better when it
sees each lesion larger (the train/test resolution discrepancy: training's random zoom shows lesions
larger than a plain decode does)?

For each size, the version's own validation and test splits (its ``split.json``) are decoded at that
size and scored by the saved network rebuilt to take it (``inference.at_size``); the temperature is
fitted again on validation at each size (a larger input changes the logits' scale) and the decision
weights are the version's. Reports melanoma AUC and specificity at 85 % sensitivity, balanced
accuracy, the gate's figure and ECE; on the test split the melanoma AUC's change from the first size
comes with a paired bootstrap 95 % interval:

    python -m bench.at_sizes VERSION_FOLDER DATA_FOLDER [DATA_FOLDER ...] [--sizes 260,292,308,324]
        [--out runs/bench-at-sizes]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from melanoma.core.decision import predicted_classes
from melanoma.ml import data, evaluate
from melanoma.ml.clinic import MELANOMA, auc_difference_interval
from melanoma.versions.registry import MODEL_FILE, SPLIT_FILE, Registry


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("version", type=Path, help="a version folder, e.g. models/pretrained-...")
    ap.add_argument("folders", type=Path, nargs="+", help="the data folders the version was trained from")
    ap.add_argument(
        "--sizes", default="260,292,308,324", help="input sizes in px, `,`-separated; the first is the baseline"
    )
    ap.add_argument("--out", type=Path, default=Path("runs/bench-at-sizes"))
    args = ap.parse_args()
    import keras

    from melanoma.ml.assess import predict_logits
    from melanoma.ml.inference import at_size
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    folder = args.version.resolve()
    meta = Registry(folder.parent).meta(folder.name)
    split = json.loads((folder / SPLIT_FILE).read_text())
    samples = data.read_clean(tuple(args.folders))[0]
    saved = keras.saving.load_model(folder / MODEL_FILE, compile=False)
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict = {"version": folder.name, "sizes": sizes, "val": {}, "test": {}}
    temperatures: dict[int, float] = {}
    baseline = None
    for part in ("val", "test"):
        ids = set(split[part])
        chosen = [s for s in samples if s.image_id in ids]
        y = np.array([s.label_index for s in chosen])
        sources = [s.source for s in chosen]
        for size in sizes:
            x, _ = data.load_arrays([s.path for s in chosen], list(y), f"{part} at {size} px", (size, size))
            logits = predict_logits(at_size(saved, (size, size)), x)
            if part == "val":
                temperatures[size] = evaluate.fit_temperature(logits, y)
            probs = evaluate.softmax(logits, temperatures[size])
            m = evaluate.metrics(y, probs, meta.melanoma_threshold, meta.decision_weights)
            gate, per_source = evaluate.gate_figure(y, predicted_classes(probs, meta.decision_weights), sources)
            row = {
                "images": len(y),
                "temperature": temperatures[size],
                "melanoma_auc": m["melanoma_auc"],
                "melanoma_specificity_at_85_sensitivity": m["melanoma_specificity_at_85_sensitivity"],
                "balanced_accuracy": m["balanced_accuracy"],
                "gate_figure": gate,
                "gate_by_source": per_source,
                "ece": m["ece"],
            }
            if part == "test":
                baseline = probs if baseline is None else baseline
                row["melanoma_auc_change_ci95"] = auc_difference_interval(
                    y == MELANOMA, probs[:, MELANOMA], baseline[:, MELANOMA]
                )
            result[part][str(size)] = row
            print(
                f"{part} {size} px: melanoma AUC {m['melanoma_auc']:.4f}  specificity at 85 % sensitivity "
                f"{m['melanoma_specificity_at_85_sensitivity']:.3f}  balanced acc {m['balanced_accuracy']:.3f}  "
                f"gate {gate:.3f}  ECE {m['ece']:.3f}"
                + (f"  change {row['melanoma_auc_change_ci95']}" if part == "test" else ""),
                flush=True,
            )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "at_sizes.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
