"""What the predictor's inference copy of the model gains (``melanoma.ml.inference.for_inference``: batch
normalisation folded into the convolutions, colour constancy compiled by XLA): the current
version's compiled call with the model as saved and as the predictor runs it, on the same decoded
real images, in interleaved rounds: images/s one call at a time and two calls at once (as the
worker runs them), CPU time per image, and the largest difference in probabilities.

    python -m bench.for_inference [--model-dir models] [--rounds 8] [--out runs/bench-for-inference]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import REPO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--images", type=int, default=256, help="real images (the repo's test images, repeated)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-for-inference")
    args = ap.parse_args()
    import tensorflow as tf

    from melanoma.core import images
    from melanoma.ml.inference import for_inference
    from melanoma.versions.registry import Registry

    reg = Registry(args.model_dir)
    version = reg.current()
    if version is None:
        sys.exit(f"no current version in {reg.root}")
    model = reg.load(version)
    bs = args.batch_size
    size = (int(model.input_shape[1]), int(model.input_shape[2]))

    def compiled(m):
        @tf.function
        def probabilities(x):
            return tf.nn.softmax(m(tf.cast(x, tf.float32), training=False))

        return probabilities.get_concrete_function(tf.TensorSpec([bs, *size, 3], tf.uint8))

    calls = {"as saved": compiled(model), "for inference": compiled(for_inference(model))}
    files = sorted((REPO / "tests" / "images").rglob("*.jpg"))
    decoded = np.stack([images.load(p, size) for p in files])
    x = np.resize(decoded, (args.images // bs * bs, *decoded.shape[1:]))
    batches = [tf.constant(x[i : i + bs]) for i in range(0, len(x), bs)]

    def one_at_a_time(fn):
        return np.concatenate([fn(b).numpy() for b in batches])

    def two_at_once(fn):
        threads = [
            threading.Thread(target=lambda h=h: [fn(b).numpy() for b in h]) for h in (batches[::2], batches[1::2])
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    probs = {k: one_at_a_time(fn) for k, fn in calls.items()}
    rounds: dict[str, dict[str, list[float]]] = {k: {"one_call": [], "two_calls": [], "cpu_ms": []} for k in calls}
    for r in range(args.rounds):
        for k in list(calls)[:: 1 if r % 2 == 0 else -1]:  # alternate which goes first
            c, t = time.process_time(), time.perf_counter()
            one_at_a_time(calls[k])
            rounds[k]["one_call"].append(len(x) / (time.perf_counter() - t))
            rounds[k]["cpu_ms"].append(1000 * (time.process_time() - c) / len(x))
            t = time.perf_counter()
            two_at_once(calls[k])
            rounds[k]["two_calls"].append(len(x) / (time.perf_counter() - t))
    fast, saved = rounds["for inference"], rounds["as saved"]
    ratios = {m: [f / s for f, s in zip(fast[m], saved[m])] for m in fast}
    result = {
        "version": version,
        "images": len(x),
        "batch_size": bs,
        "max_probability_difference": float(np.abs(probs["for inference"] - probs["as saved"]).max()),
        "same_top_class": float((probs["for inference"].argmax(1) == probs["as saved"].argmax(1)).mean()),
        "median": {k: {m: round(statistics.median(v), 2) for m, v in d.items()} for k, d in rounds.items()},
        "for_inference_over_as_saved": {
            m: {"median": round(statistics.median(v), 3), "min": round(min(v), 3), "max": round(max(v), 3)}
            for m, v in ratios.items()
        },
        "rounds": rounds,
    }
    for k, d in result["median"].items():
        line = f"{k:>13}: {d['one_call']:6.1f} img/s one call, {d['two_calls']:6.1f} two at once"
        print(f"{line}, {d['cpu_ms']:5.2f} ms CPU/img")
    print("for inference / as saved, median of rounds [min-max]:")
    for m, v in result["for_inference_over_as_saved"].items():
        print(f"  {m:>13}: {v['median']:.3f} [{v['min']:.3f}-{v['max']:.3f}]")
    worst, same = result["max_probability_difference"], result["same_top_class"]
    print(f"largest probability difference: {worst:.1e}; same top class {same:.0%}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "for_inference.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
