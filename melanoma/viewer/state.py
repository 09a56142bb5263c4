"""The viewer's state and helpers shared by its routes: settings, database engine, templates,
metrics, the lazily made broker client, password checks and the image cache."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import secrets
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from fastapi import HTTPException, Request
from fastapi.templating import Jinja2Templates
from prometheus_client import CollectorRegistry, Counter, Histogram
from sqlalchemy import Engine

from melanoma.core import files, images
from melanoma.core.errors import ImageError, UserError
from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS, slug
from melanoma.core.settings import Settings
from melanoma.store import db, jobs
from melanoma.store.schema import Job, Prediction
from melanoma.versions.registry import Registry, RegistryError

HERE = Path(__file__).resolve().parent
THUMB_SIDE = 256
PREVIEW_SIDE = 1024
# Patient images: nothing from another origin, no framing, no inline script or style.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}
OPEN_PATHS = ("/healthz",)


def read_password(settings: Settings) -> str | None:
    """The viewer's password from ``MELANOMA_WEB_PASSWORD_FILE``, or None when unset."""
    if settings.web_password_file is None:
        return None
    try:
        password = settings.web_password_file.read_text().strip()
    except OSError as exc:
        raise UserError(
            f"MELANOMA_WEB_PASSWORD_FILE: cannot read {settings.web_password_file}: {exc.strerror}"
        ) from None
    if len(password) < 8:
        raise UserError("MELANOMA_WEB_PASSWORD_FILE: the password must have at least 8 characters")
    return password


def credentials(header: str | None) -> tuple[str, str | None, str] | None:
    """``(scheme, user name or None, password)`` of an Authorization header; None if malformed."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return "bearer", None, value.strip()
    if scheme.lower() == "basic":
        try:
            user, _, given = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        return "basic", user, given
    return None


def authorised(header: str | None, password: str) -> bool:
    found = credentials(header)
    return found is not None and secrets.compare_digest(found[2].encode(), password.encode())


def reviewer(header: str | None, password: str | None) -> str:
    """The reviewer's name (the basic-auth user name) of a request allowed to write; else an
    HTTPException saying what is missing. Writes need the viewer's password on every address."""
    if password is None:
        raise HTTPException(403, "recording diagnoses needs the viewer's password (MELANOMA_WEB_PASSWORD_FILE)")
    if not authorised(header, password):
        raise HTTPException(401, "authentication required", headers={"WWW-Authenticate": 'Basic realm="melanoma"'})
    found = credentials(header)
    name = (found[1] or "").strip() if found else ""
    if not name or not name.isprintable():
        raise HTTPException(403, "recording a diagnosis needs basic auth with your name as the user name")
    return name[:100]


CSRF_LIFETIME_S = 12 * 3600


def _csrf_key(password: str) -> bytes:
    # Derived from the password: every replica of the viewer agrees, and a page on another site
    # (which never sees the password) cannot compute a token.
    return hashlib.sha256(b"melanoma viewer csrf\0" + password.encode()).digest()


def csrf_token(password: str, name: str, now: float | None = None) -> str:
    """A token for ``name``'s forms, valid CSRF_LIFETIME_S: ``issued.hmac``."""
    issued = str(int(time.time() if now is None else now))
    mac = hmac.new(_csrf_key(password), f"{name}\n{issued}".encode(), hashlib.sha256).hexdigest()
    return f"{issued}.{mac}"


def csrf_ok(password: str, name: str, token: str, now: float | None = None) -> bool:
    """True when ``token`` was made for ``name`` by this viewer's password and has not expired."""
    issued, _, _ = token.partition(".")
    if not issued.isdigit() or len(token) > 100:
        return False
    age = (time.time() if now is None else now) - int(issued)
    return 0 <= age <= CSRF_LIFETIME_S and hmac.compare_digest(token, csrf_token(password, name, int(issued)))


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site. Browsers send
    Sec-Fetch-Site; older ones only Origin (``null`` under this viewer's no-referrer policy, so only a
    named other origin is refused there). A client that is no browser sends neither, and still
    needs the password and the form's token."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        return fetch_site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    return urlsplit(origin).netloc == request.headers.get("host")


def prediction_id(text: str) -> int:
    # Ids are database keys: anything else is simply not found (never a path, never SQL).
    if not text.isascii() or not text.isdigit() or len(text) > 18:
        raise HTTPException(404, "no such image")
    return int(text)


def _when(iso: str | datetime | None) -> str:
    if iso is None:
        return ""
    t = datetime.fromisoformat(iso) if isinstance(iso, str) else iso
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class Viewer:
    """The app's state: settings, database engine, caches, metrics and (lazily) the broker."""

    def __init__(self, settings: Settings, engine: Engine):
        self.settings = settings
        self.engine = engine
        self.templates = Jinja2Templates(directory=HERE / "templates")
        self.templates.env.filters["when"] = _when
        self.templates.env.globals.update(
            classes=CLASS_NAMES,
            slug=slug,
            prob_columns=PROB_COLUMNS,
            unfamiliar_warn_share=settings.unfamiliar_warn_share,
        )
        self._celery: Any = None
        self.password: str | None = None  # the viewer's password (None: reading open, writing refused)
        self.metrics = CollectorRegistry()
        self.requests = Counter("melanoma_web_requests", "Viewer requests", ["route", "status"], registry=self.metrics)
        self.seconds = Histogram(
            "melanoma_web_request_seconds",
            "Viewer request duration",
            ["route"],
            registry=self.metrics,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
        )
        self.refused = Counter(
            "melanoma_web_refused_writes", "Writes the viewer refused, by reason", ["reason"], registry=self.metrics
        )

    def celery(self) -> Any:
        if self._celery is None:
            from melanoma.pipeline.broker import make_celery

            self._celery = make_celery(self.settings)
        return self._celery

    def threshold(self, version: str | None) -> float | None:
        """The version's melanoma operating point, from the registry's metadata (no model load)."""
        if not version:
            return None
        try:
            return Registry(self.settings.model_dir).meta(version).melanoma_threshold
        except RegistryError:
            return None  # a version this machine's registry does not hold

    def row(self, pid: int) -> Prediction:
        with db.session_scope(self.engine) as s:
            row = s.get(Prediction, pid)
            if row is None:
                raise HTTPException(404, "no such image")
            s.expunge(row)
            return row

    def job(self, ref: str) -> Job:
        with db.session_scope(self.engine) as s:
            try:
                job = jobs.find_job(s, ref)
            except UserError:
                raise HTTPException(404, "no such job") from None
            s.expunge(job)
            return job

    def derived(self, row: Prediction, kind: str, side: int) -> bytes:
        """A JPEG of the row's image at most ``side`` pixels a side, made once per content."""
        cache = self.settings.cache_dir / kind
        if row.sha256:
            cached = cache / row.sha256[:2] / f"{row.sha256}.jpg"
            if cached.is_file():
                return cached.read_bytes()
        try:
            real = files.resolve_allowed(row.image_path, self.settings.allowed_roots)
            data = files.read_file(real, self.settings.max_file_bytes)
        except ImageError as exc:
            raise HTTPException(404, f"image not available: {exc}") from None
        sha = files.sha256(data)
        if row.sha256 and sha != row.sha256:
            raise HTTPException(409, "the file changed since it was scored; not showing a different image")
        try:
            jpeg = images.preview(data, side, images.DecodeLimits(self.settings.max_image_pixels))
        except ImageError as exc:
            raise HTTPException(422, f"cannot show the image: {exc}") from None
        target = cache / sha[:2] / f"{sha}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            fh.write(jpeg)
        os.replace(tmp, target)  # atomic: a concurrent reader sees the whole file or none
        return jpeg


def viewer(request: Request) -> Viewer:
    """The app's :class:`Viewer` (a FastAPI dependency of every route)."""
    return request.app.state.viewer  # type: ignore[no-any-return]
