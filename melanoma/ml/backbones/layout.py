"""EfficientNet-Lite's sizes and block layout, without TensorFlow: what a configuration check or an
input size needs to know about a backbone before (or without) building it."""

from __future__ import annotations

import json
import math
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

# (repeats, kernel, stride, expansion, output channels) of the seven stages, for width and depth 1.
STAGES = (
    (1, 3, 1, 1, 16),
    (2, 3, 2, 6, 24),
    (2, 5, 2, 6, 40),
    (3, 3, 2, 6, 80),
    (3, 5, 1, 6, 112),
    (4, 5, 2, 6, 192),
    (1, 3, 1, 6, 320),
)


@dataclass(frozen=True)
class Variant:
    """One EfficientNet-Lite size: width and depth multipliers, its native input and dropout."""

    name: str
    width: float
    depth: float
    resolution: int
    dropout: float


VARIANTS = {
    "lite0": Variant("lite0", 1.0, 1.0, 224, 0.2),
    "lite1": Variant("lite1", 1.0, 1.1, 240, 0.2),
    "lite2": Variant("lite2", 1.1, 1.2, 260, 0.3),
}


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return rounded


def block_layout(variant: Variant) -> list[tuple[int, int, int, int, int]]:
    """Each block's (kernel, stride, expansion, input channels, output channels), in order. Lite keeps
    the first and last stage's repeats unscaled."""
    blocks = []
    channels_in = 32
    for i, (repeats, kernel, stride, expand, out) in enumerate(STAGES):
        out_c = _round_filters(out, variant.width)
        n = repeats if i in (0, len(STAGES) - 1) else int(math.ceil(variant.depth * repeats))
        for j in range(n):
            blocks.append((kernel, stride if j == 0 else 1, expand, channels_in, out_c))
            channels_in = out_c
    return blocks


def saved_variant(model_file: Path) -> str | None:
    """The variant a saved network (``.keras``) was built as, read from its configuration without
    TensorFlow by its blocks' output channels; None when it is no EfficientNet-Lite (or unreadable)."""
    try:
        with zipfile.ZipFile(model_file) as z:
            layers = json.loads(z.read("config.json"))["config"]["layers"]
    except (OSError, KeyError, TypeError, ValueError, zipfile.BadZipFile):
        return None
    outputs = {}
    for layer in layers:
        found = re.fullmatch(r"_blocks\.(\d+)\._project_conv", str(layer.get("config", {}).get("name", "")))
        if found:
            outputs[int(found.group(1))] = layer["config"].get("filters")
    channels = [outputs[i] for i in sorted(outputs)]
    return next((name for name, v in VARIANTS.items() if [b[4] for b in block_layout(v)] == channels), None)
