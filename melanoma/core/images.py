"""Decode and resize images: the one preprocessing function shared by training and scoring.

Which paths the worker may read, and reading them, is :mod:`melanoma.core.files`.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from melanoma.core.errors import ImageError, one_line
from melanoma.core.files import read_file

IMAGE_SIZE = (180, 180)  # (height, width) of the model input


@dataclass(frozen=True)
class DecodeLimits:
    """Limits on what :func:`decode` accepts."""

    max_pixels: int = 50_000_000


def _to_8bit(img: Image.Image) -> Image.Image:
    # 16-bit and float images: Pillow's convert("RGB") clips instead of scaling, which would
    # turn most dermoscopy pixels white; scale the value range to 0..255 instead.
    arr = np.asarray(img, dtype=np.float64)
    top = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
    arr = np.clip(arr / top * 255.0, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


@contextmanager
def _one_line_errors() -> Iterator[None]:
    """Turn whatever Pillow raises on a bad file into an :class:`ImageError` with a one-line reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            yield
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("not an image or an unsupported format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"image too large: {exc}".splitlines()[0]) from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"corrupt image: {one_line(exc)}") from None


def _open_rgb(data: bytes, at_least: tuple[int, int], limits: DecodeLimits) -> Image.Image:
    """The image upright (EXIF orientation) in 8-bit RGB, its first frame; JPEGs decoded at a reduced
    scale that still covers ``at_least`` (width, height). Call inside :func:`_one_line_errors`."""
    img: Image.Image = Image.open(io.BytesIO(data))
    w, h = img.size
    if w * h > limits.max_pixels:
        raise ImageError(f"image too large: {w}x{h} pixels exceeds the limit of {limits.max_pixels}")
    if img.format == "JPEG":
        # Let libjpeg decode at a reduced scale; still at least the target size.
        img.draft("RGB", at_least)
    img.load()
    img = ImageOps.exif_transpose(img)
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        img = _to_8bit(img)
    if img.mode != "RGB":
        img = img.convert("RGB")
    return img


def decode(data: bytes, size: tuple[int, int] = IMAGE_SIZE, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode image bytes to an RGB ``uint8`` array of shape ``(height, width, 3)``.

    Applies EXIF orientation, converts any mode (greyscale, palette, CMYK, RGBA, 16-bit) to RGB,
    takes the first frame of multi-frame files, and squashes to ``size`` with bilinear
    resampling, as the origin model's data loader did (no aspect-preserving crop).
    Raises :class:`ImageError` with a one-line reason for anything that cannot be scored.
    """
    height, width = size
    with _one_line_errors():
        img = _open_rgb(data, (width, height), limits).resize((width, height), Image.Resampling.BILINEAR)
        arr = np.asarray(img, dtype=np.uint8)
    if arr.shape != (height, width, 3):
        raise ImageError(f"unexpected decoded shape {arr.shape}")
    return arr


def load(path: str | os.PathLike[str], size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """Read and :func:`decode` one file (training and evaluation use this)."""
    return decode(read_file(Path(path), max_bytes=1 << 31), size=size)


def preview(data: bytes, max_side: int, limits: DecodeLimits = DecodeLimits(), quality: int = 85) -> bytes:
    """A JPEG of the image, upright and at most ``max_side`` pixels a side, aspect kept (the
    viewer's thumbnails and previews). Raises :class:`ImageError` like :func:`decode`."""
    out = io.BytesIO()
    with _one_line_errors():
        img = _open_rgb(data, (max_side, max_side), limits)
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        img.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
