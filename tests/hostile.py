"""Generator of a hostile-input corpus: files a clinic's folder may really contain, and worse.

``make_corpus(folder, base_jpeg, outside)`` writes one file per kind and returns the kinds with
what the system must do with each: score it (``ok``) or give it an error row whose reason
contains the given text. Run as a script to write a corpus for manual tries:
``python -m tests.hostile OUT_DIR``.
"""

from __future__ import annotations

import io
import os
import struct
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from PIL import Image


@dataclass(frozen=True)
class Kind:
    name: str
    relpath: str
    expect: str  # "ok" or "error"
    reason: str = ""  # text the error reason must contain
    after_submit: str = ""  # "delete" or "unreadable": done between submit and scoring


def _png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header declaring a huge image, with almost no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")
    )


def _save(img: Image.Image, path: Path, fmt: str, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt, **kw)


KINDS = [
    Kind("zero-byte file", "empty.jpg", "error", "empty file"),
    Kind("truncated JPEG", "truncated.jpg", "error", "corrupt image"),
    Kind("random bytes named .jpg", "random.jpg", "error", "not an image"),
    Kind("text file named .png", "notes.png", "error", "not an image"),
    Kind("decompression bomb (60000x60000 declared)", "bomb.png", "error", "too large"),
    Kind("CMYK JPEG", "cmyk.jpg", "ok"),
    Kind("16-bit PNG", "sixteen_bit.png", "ok"),
    Kind("RGBA PNG", "rgba.png", "ok"),
    Kind("greyscale JPEG", "grey.jpg", "ok"),
    Kind("palette PNG", "palette.png", "ok"),
    Kind("EXIF-rotated JPEG", "exif_rotated.jpg", "ok"),
    Kind("multi-frame TIFF", "frames.tiff", "ok"),
    Kind("animated GIF named .png", "animated.png", "ok"),
    Kind("JPEG named .bmp", "really_a_jpeg.bmp", "ok"),
    Kind("file deleted between submit and scoring", "vanishing.jpg", "error", "file not found", "delete"),
    Kind("file without read permission", "locked.jpg", "error", "permission denied", "unreadable"),
    Kind("symlink to a file outside the allowed roots", "escape.jpg", "error", "outside the allowed roots"),
    Kind("non-ASCII name with spaces", "naïve lésion 皮膚 01.JPG", "ok"),
    Kind("very long path (deep folders, ~1,500 characters)", "", "ok"),
]


def make_corpus(folder: Path, base_jpeg: Path, outside: Path) -> dict[str, Kind]:
    """Write the corpus under ``folder``; ``outside`` is a folder outside the allowed roots."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    raw = base_jpeg.read_bytes()
    img = Image.open(base_jpeg).convert("RGB")
    out: dict[str, Kind] = {}
    for k in KINDS:
        rel = key = k.relpath or "deep"
        if k.name.startswith("very long path"):
            rel = "/".join([f"level-{i:02d}-" + "x" * 60 for i in range(22)]) + "/deep.jpg"
            k = Kind(k.name, rel, k.expect, k.reason)
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        match key:
            case "empty.jpg":
                p.write_bytes(b"")
            case "truncated.jpg":
                p.write_bytes(raw[: len(raw) // 3])
            case "random.jpg":
                p.write_bytes(os.urandom(5000))
            case "notes.png":
                p.write_text("patient notes, not an image\n")
            case "bomb.png":
                p.write_bytes(_png_bomb(60000, 60000))
            case "cmyk.jpg":
                _save(img.convert("CMYK"), p, "JPEG")
            case "sixteen_bit.png":
                import numpy as np

                grey = np.asarray(img.convert("L"), dtype=np.uint16) * 257
                _save(Image.fromarray(grey), p, "PNG")
            case "rgba.png":
                rgba = img.convert("RGBA")
                rgba.putalpha(200)
                _save(rgba, p, "PNG")
            case "grey.jpg":
                _save(img.convert("L"), p, "JPEG")
            case "palette.png":
                _save(img.convert("P", palette=Image.Palette.ADAPTIVE), p, "PNG")
            case "exif_rotated.jpg":
                exif = Image.Exif()
                exif[0x0112] = 6  # the viewer must rotate 90° clockwise
                _save(img.transpose(Image.Transpose.ROTATE_90), p, "JPEG", exif=exif, quality=95)
            case "frames.tiff":
                _save(img, p, "TIFF", save_all=True, append_images=[img.rotate(90), img.rotate(180)])
            case "animated.png":
                buf = io.BytesIO()
                img.save(buf, "GIF", save_all=True, append_images=[img.rotate(90)], duration=100, loop=0)
                p.write_bytes(buf.getvalue())
            case "really_a_jpeg.bmp":
                p.write_bytes(raw)
            case "vanishing.jpg" | "locked.jpg" | "naïve lésion 皮膚 01.JPG" | "deep":
                p.write_bytes(raw)
            case "escape.jpg":
                secret = outside / "secret.jpg"
                secret.write_bytes(raw)
                p.symlink_to(secret)
        out[str(p)] = k
    return out


def after_submit(corpus: dict[str, Kind]) -> None:
    """Do what happens to some files between submit and scoring."""
    for path, k in corpus.items():
        if k.after_submit == "delete":
            os.unlink(path)
        elif k.after_submit == "unreadable":
            os.chmod(path, 0)


if __name__ == "__main__":
    target = Path(sys.argv[1])
    base = Path(sys.argv[2]) if len(sys.argv) > 2 else next(Path("samples").rglob("*.jpg"))
    for path, kind in make_corpus(target / "corpus", base, target / "outside").items():
        print(f"{kind.expect:<6} {kind.name:<50} {path}")
