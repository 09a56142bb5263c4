"""A faster CPU runtime? The current model exported to ONNX (tf2onnx) and run by ONNX Runtime,
against TensorFlow running it as the worker does (``melanoma.ml.inference.for_inference``) on the same
decoded batches: images/s per batch size and the largest difference in probabilities on real
images.

    pip install tf2onnx onnxruntime   # not project dependencies: measured, not adopted (see README)
    python -m bench.runtime [--model-dir models] [--out runs/bench-runtime]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.common import REPO


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench-runtime")
    args = ap.parse_args()
    try:
        import onnxruntime as ort
        import tf2onnx
    except ImportError:
        sys.exit("needs tf2onnx and onnxruntime: pip install tf2onnx onnxruntime")
    import tensorflow as tf

    from melanoma.core import images
    from melanoma.ml.inference import for_inference
    from melanoma.versions.registry import Registry

    reg = Registry(args.model_dir)
    version = reg.current()
    if version is None:
        sys.exit(f"no current version in {reg.root}")
    model = reg.load(version)
    spec = (tf.TensorSpec((None, 180, 180, 3), tf.float32, name="image"),)

    scoring = for_inference(model)

    @tf.function(input_signature=spec)
    def as_saved(x):
        return model(x, training=False)

    @tf.function(input_signature=spec)
    def logits(x):
        return scoring(x, training=False)

    onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
    t0 = time.perf_counter()
    # ONNX Runtime makes its own graph optimisations (it folds batch normalisation too).
    tf2onnx.convert.from_function(as_saved, input_signature=spec, opset=17, output_path=str(onnx_path))
    export_s = time.perf_counter() - t0
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    real = np.stack([images.load(p) for p in sorted((REPO / "tests" / "images").rglob("*.jpg"))]).astype(np.float32)
    p_tf = tf.nn.softmax(logits(real)).numpy()
    p_ort = tf.nn.softmax(session.run(None, {name: real})[0]).numpy()
    result: dict = {
        "version": version,
        "export_s": round(export_s, 1),
        "onnx_mb": round(onnx_path.stat().st_size / 2**20, 1),
        "max_probability_difference": float(np.abs(p_tf - p_ort).max()),
        "images": len(real),
        "by_batch_size": {},
    }
    rng = np.random.default_rng(0)
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        x = rng.integers(0, 256, (bs, 180, 180, 3)).astype(np.float32)
        rates = {}
        for label, run in (
            ("tensorflow", lambda z: logits(z).numpy()),
            ("onnxruntime", lambda z: session.run(None, {name: z})[0]),
        ):
            run(x)
            samples = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                for _ in range(max(1, 64 // bs)):
                    run(x)
                samples.append(bs * max(1, 64 // bs) / (time.perf_counter() - t0))
            rates[label] = round(statistics.median(samples), 1)
        rates["speed-up"] = round(rates["onnxruntime"] / rates["tensorflow"], 2)
        result["by_batch_size"][bs] = rates
        print(
            f"batch {bs:>3}: TensorFlow {rates['tensorflow']:7.1f} img/s, ONNX Runtime {rates['onnxruntime']:7.1f} "
            f"img/s, x{rates['speed-up']}",
            flush=True,
        )
    print(f"largest probability difference on {len(real)} real images: {result['max_probability_difference']:.2e}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "runtime.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
