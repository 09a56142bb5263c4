"""Passwords for the broker and database URLs: read from secret files (Docker/Kubernetes secrets)
so that they never sit in the environment, and put into a URL's user part."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit


def read_secret(path: Path | None, name: str) -> str | None:
    """The content of a secret file (Docker/Kubernetes secret), if one is named."""
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"{name}: cannot read {path}: {exc.strerror}") from None


def with_password(url: str, password: str | None) -> str:
    """``url`` with ``password`` (percent-encoded) in its user part, when one is given."""
    if not password:
        return url
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"cannot add a password to a URL without a host: {url!r}")
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    return urlunsplit(parts._replace(netloc=f"{user}:{quote(password, safe='')}@{host}"))
