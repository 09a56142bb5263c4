"""Which files the worker may read, and reading them: the path rules (``MELANOMA_ALLOWED_ROOTS``,
symlinks and ``..`` resolved first), size limits, one-line reasons, the content hash."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from melanoma.core.errors import ImageError


def _within(path: Path, roots: tuple[Path, ...]) -> bool:
    return any(path == root or path.is_relative_to(root) for root in roots)


def resolve_allowed(path: str, roots: tuple[Path, ...]) -> Path:
    """Return the real path of ``path`` if it lies under one of ``roots``, else raise :class:`ImageError`.

    Symlinks and ``..`` are resolved first, so neither can lead outside the roots.
    """
    if not os.path.isabs(path):
        raise ImageError("path is not absolute")
    real = Path(os.path.realpath(path))
    if not _within(real, tuple(Path(os.path.realpath(r)) for r in roots)):
        raise ImageError("path is outside the allowed roots (MELANOMA_ALLOWED_ROOTS)")
    return real


def read_file(path: Path, max_bytes: int) -> bytes:
    """Read an image file's bytes, turning OS errors into one-line reasons."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise ImageError("file not found") from None
    except PermissionError:
        raise ImageError("permission denied") from None
    except IsADirectoryError:
        raise ImageError("is a directory, not a file") from None
    except OSError as exc:
        raise ImageError(f"cannot read file: {exc.strerror or exc}") from None
    if len(data) > max_bytes:
        raise ImageError(f"file larger than {max_bytes} bytes")
    if not data:
        raise ImageError("empty file")
    return data


def sha256(data: bytes) -> str:
    """Hex SHA-256 of a file's content, the key for reusing predictions across jobs."""
    return hashlib.sha256(data).hexdigest()


def read_unchanged(path: str, sha: str, roots: tuple[Path, ...], max_bytes: int) -> tuple[Path, bytes]:
    """The real path and bytes of ``path`` (under ``roots``), only while its content still has the
    hash ``sha`` it was reviewed with; else an :class:`ImageError` saying why."""
    real = resolve_allowed(path, roots)
    data = read_file(real, max_bytes)
    if sha256(data) != sha:
        raise ImageError("the file changed since it was reviewed")
    return real, data
