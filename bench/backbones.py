"""What a larger input or a larger EfficientNet-Lite costs on this machine (issue #24).

For each backbone and input size: parameters, multiply-adds, images/s of a forward pass (the
network as `melanoma train --recipe pretrained --backbone B --image-size N` builds it, as a worker
runs it: batch normalisation folded, batch 32, float32, compiled) and of a training step (batch 32,
frozen as training freezes it, AdamW, augmentation on) with the recipe's blocks training (from the
first block of stage 5, which is Lite0's block 11) and with more of them (from stage 3, Lite0's
block 5). The input is noise: what a step costs does not depend on it. Speeds are the median of the
timed steps, after warm-up, with nothing else running; a real epoch adds the data pipeline and a
validation pass.

    python -m bench.backbones --out docs/bench/backbones
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

CONFIGS = (("lite0", 224), ("lite0", 260), ("lite0", 300), ("lite1", 240), ("lite2", 260))


def _first_block_of_stage(variant: Any, stage: int) -> int:
    """Index of the stage's first block: each stage of the layout has its own output channels."""
    from melanoma.ml.backbones.layout import block_layout

    outs = [c_out for *_, c_out in block_layout(variant)]
    starts = [i for i, c in enumerate(outs) if i == 0 or c != outs[i - 1]]
    return starts[stage]


def _network(variant_name: str, size: int, train_from_block: int | None = None) -> Any:
    """The recipe's network as training builds it (ImageNet weights, device-style augmentation), with
    its blocks frozen as training freezes them."""
    from dataclasses import replace

    from melanoma.ml import fit
    from melanoma.ml import model as model_lib
    from melanoma.ml.recipes import RECIPES

    net = model_lib.build("pretrained", 0, variant_name, size)
    fit._freeze(net, replace(RECIPES["pretrained"], train_from_block=train_from_block))
    return net


def _madds(net: Any) -> float:
    """Multiply-adds of one image, from the convolutions' and dense layer's output shapes."""
    import keras

    total = 0
    for layer in net.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            kh, kw, c, m = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += h * w * c * m * kh * kw
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin, cout = layer.kernel.shape
            _, h, w, _ = layer.output.shape
            total += h * w * cin * cout * kh * kw
        elif isinstance(layer, keras.layers.Dense):
            total += layer.kernel.shape[0] * layer.kernel.shape[1]
    return float(total)


def _timed(step: Any, steps: int, warmup: int) -> float:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def measure(variant_name: str, size: int, batch: int, steps: int, warmup: int) -> dict[str, Any]:
    """Cost figures of one backbone at one input size."""
    import keras
    import numpy as np
    import tensorflow as tf

    from melanoma.ml.backbones.layout import VARIANTS, block_layout
    from melanoma.ml.inference import for_inference

    variant = VARIANTS[variant_name]
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(0, 255, (batch, size, size, 3)).astype("float32"))
    y = tf.constant(rng.integers(0, 9, batch))
    net = _network(variant_name, size)
    served = for_inference(net)  # as a worker runs it: batch normalisation folded
    forward = tf.function(lambda: served(x, training=False), jit_compile=False)
    row: dict[str, Any] = {
        "backbone": variant_name,
        "size": size,
        "blocks": len(block_layout(variant)),
        "params_m": round(net.count_params() / 1e6, 2),
        "gmadds": round(_madds(net) / 1e9, 3),
        "forward_images_per_s": round(batch / _timed(forward, steps, warmup), 1),
    }
    for stage, key in ((5, "train_stage5_images_per_s"), (3, "train_stage3_images_per_s")):
        first = _first_block_of_stage(variant, stage)
        net = _network(variant_name, size, first)
        net.compile(
            optimizer=keras.optimizers.AdamW(1e-4),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=False,
        )
        row[key] = round(batch / _timed(lambda net=net: net.train_on_batch(x, y), steps, warmup), 1)
        row[key.replace("images_per_s", "from_block")] = first
    return row


def _table(rows: list[dict[str, Any]]) -> str:
    base = rows[0]
    lines = [
        "| backbone | input | blocks | parameters | multiply-adds | forward images/s | training images/s "
        "(stage 5 on) | training images/s (stage 3 on) | training cost against the first row (stage 5 on) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rel = base["train_stage5_images_per_s"] / r["train_stage5_images_per_s"]
        lines.append(
            f"| {r['backbone']} | {r['size']} px | {r['blocks']} | {r['params_m']} M | {r['gmadds']} G "
            f"| {r['forward_images_per_s']} "
            f"| {r['train_stage5_images_per_s']} (blocks {r['train_stage5_from_block']}+) "
            f"| {r['train_stage3_images_per_s']} (blocks {r['train_stage3_from_block']}+) "
            f"| ×{rel:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("docs/bench/backbones"))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per figure")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--only", default=None, help="one backbone:size, e.g. lite0:224")
    args = ap.parse_args()
    from melanoma.ml.predict import configure_tensorflow

    configure_tensorflow(0)
    configs = [tuple(args.only.split(":"))] if args.only else CONFIGS
    rows = []
    for name, size in configs:
        rows.append(measure(str(name), int(size), args.batch, args.steps, args.warmup))
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "machine": {"cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()},
        "batch": args.batch,
        "timed_steps": args.steps,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text(_table(rows))
    print(_table(rows))


if __name__ == "__main__":
    main()
