"""The results viewer: a read-only web app over the results database (``melanoma serve``).

Jobs newest first, a job's images as a grid sorted by P(melanoma) with filters and keyset paging,
an image page with the nine probabilities and the Grad-CAM heat map, CSV/JSON downloads streamed
from the database. It never imports TensorFlow: heat maps are made by a worker (``melanoma.explain``)
and thumbnails by Pillow, once, then served from the cache. Images are served by database id only,
and only when their real path is under ``MELANOMA_ALLOWED_ROOTS``; no URL part becomes a path.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import os
import secrets
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from sqlalchemy import Engine

from melanoma.core import files, images
from melanoma.core.errors import ImageError, UserError
from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS, slug
from melanoma.core.settings import Settings, get_settings
from melanoma.pipeline import broker
from melanoma.store import browse, db, heatmaps, jobs
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


def _authorised(header: str | None, password: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (binascii.Error, UnicodeDecodeError):
            return False
    else:
        return False
    return secrets.compare_digest(given.encode(), password.encode())


def _prediction_id(text: str) -> int:
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
        self._celery: Any = None
        self.metrics = CollectorRegistry()
        self.requests = Counter("melanoma_web_requests", "Viewer requests", ["route", "status"], registry=self.metrics)
        self.seconds = Histogram(
            "melanoma_web_request_seconds",
            "Viewer request duration",
            ["route"],
            registry=self.metrics,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1, 2.5, 5, 10),
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


def create_app(settings: Settings | None = None) -> FastAPI:
    """The viewer's ASGI app over ``settings``' database."""
    s = settings or get_settings()
    engine = db.make_engine(s.database_url)
    db.ensure_schema(engine)
    password = read_password(s)
    v = Viewer(s, engine)
    templates = Jinja2Templates(directory=HERE / "templates")
    templates.env.filters["when"] = _when
    templates.env.globals.update(classes=CLASS_NAMES, slug=slug, prob_columns=PROB_COLUMNS)

    app = FastAPI(title="melanoma viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.viewer = v
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        if password is not None and request.url.path not in OPEN_PATHS:
            if not _authorised(request.headers.get("authorization"), password):
                response: Response = PlainTextResponse(
                    "authentication required\n", 401, headers={"WWW-Authenticate": 'Basic realm="melanoma"'}
                )
            else:
                response = await call_next(request)
        else:
            response = await call_next(request)
        response.headers.update(SECURITY_HEADERS)
        response.headers.setdefault("Cache-Control", "no-store")
        route = getattr(request.scope.get("route"), "path", "unmatched")
        v.requests.labels(route, str(response.status_code)).inc()
        v.seconds.labels(route).observe(time.perf_counter() - started)
        return response

    @app.exception_handler(HTTPException)
    async def one_line(request: Request, exc: HTTPException) -> Response:
        return PlainTextResponse(f"{exc.detail}\n", exc.status_code, headers=exc.headers)

    @app.exception_handler(browse.BadView)
    async def bad_view(request: Request, exc: browse.BadView) -> Response:
        return PlainTextResponse(f"bad request: {exc}\n", 400)

    @app.get("/healthz")
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(generate_latest(v.metrics), media_type=CONTENT_TYPE_LATEST)

    def _limit(request: Request) -> int:
        raw = request.query_params.get("limit", "50")
        if not raw.isdigit() or not 1 <= int(raw) <= 1000:
            raise browse.BadView("limit must be a whole number from 1 to 1000")
        return int(raw)

    @app.get("/")
    def jobs_page(request: Request) -> Response:
        with db.session_scope(engine) as session:
            listing = jobs.list_jobs(session, _limit(request))
        return templates.TemplateResponse(request, "jobs.html", {"jobs": listing})

    @app.get("/jobs.json")
    def jobs_json(request: Request) -> Response:
        with db.session_scope(engine) as session:
            return Response(json.dumps(jobs.list_jobs(session, _limit(request))), media_type="application/json")

    @app.get("/jobs/{ref}")
    def job_page(request: Request, ref: str) -> Response:
        job = v.job(ref)
        params = dict(request.query_params)
        view = browse.View.parse(params)
        with db.session_scope(engine) as session:
            status = jobs.job_status(session, job)
            page = browse.page(session, job.id, view, params.get("after"))
            session.expunge_all()
        return templates.TemplateResponse(
            request, "job.html", {"job": job, "status": status, "view": view, "page": page}
        )

    @app.get("/jobs/{ref}/progress.json")
    def job_progress(ref: str) -> Response:
        job = v.job(ref)
        with db.session_scope(engine) as session:
            return Response(json.dumps(jobs.job_status(session, job).as_dict()), media_type="application/json")

    def _results(job_id: str) -> Iterator[dict[str, Any]]:
        with db.session_scope(engine) as session:
            yield from jobs.job_results(session, session.get(Job, job_id))  # type: ignore[arg-type]

    @app.get("/jobs/{ref}/results.csv")
    def results_csv(ref: str) -> Response:
        job = v.job(ref)

        def rows() -> Iterator[str]:
            buf = io.StringIO()
            out = csv.writer(buf)
            out.writerow(jobs.RESULT_COLUMNS)
            for n, record in enumerate(_results(job.id), 1):
                out.writerow(record.values())
                if n % 1000 == 0:
                    yield buf.getvalue()
                    buf.seek(0)
                    buf.truncate()
            yield buf.getvalue()

        return StreamingResponse(
            rows(),
            media_type="text/csv",
            headers={"Content-Disposition": f'attachment; filename="job-{job.id}.csv"'},
        )

    @app.get("/jobs/{ref}/results.json")
    def results_json(ref: str) -> Response:
        job = v.job(ref)

        def rows() -> Iterator[str]:
            yield "["
            for n, record in enumerate(_results(job.id)):
                yield ("," if n else "") + json.dumps(record)
            yield "]\n"

        return StreamingResponse(
            rows(),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="job-{job.id}.json"'},
        )

    @app.get("/images/{pid}")
    def image_page(request: Request, pid: str) -> Response:
        row = v.row(_prediction_id(pid))
        view = browse.View.parse({k: val for k, val in request.query_params.items()})
        with db.session_scope(engine) as session:
            before, after = browse.neighbours(session, row, view)
            session.expunge_all()
        threshold = v.threshold(row.model_version)
        return templates.TemplateResponse(
            request,
            "image.html",
            {
                "row": row,
                "view": view,
                "before": before,
                "after": after,
                "threshold": threshold,
                "probs": [(c, getattr(row, col)) for c, col in zip(CLASS_NAMES, PROB_COLUMNS)],
            },
        )

    def _jpeg(body: bytes) -> Response:
        return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})

    @app.get("/images/{pid}/thumb.jpg")
    def thumb(pid: str) -> Response:
        return _jpeg(v.derived(v.row(_prediction_id(pid)), "thumbs", THUMB_SIDE))

    @app.get("/images/{pid}/preview.jpg")
    def preview(pid: str) -> Response:
        return _jpeg(v.derived(v.row(_prediction_id(pid)), "previews", PREVIEW_SIDE))

    @app.get("/images/{pid}/heatmap.png")
    def heatmap(pid: str) -> Response:
        row = v.row(_prediction_id(pid))
        if row.status != "ok":
            raise HTTPException(404, "no heat map: the image has no prediction")
        made = heatmaps.stored(engine, row.sha256, row.model_version)
        if made is not None:
            return Response(
                made.png,
                media_type="image/png",
                headers={"Cache-Control": "private, max-age=86400", "X-Explained-Class": made.class_name},
            )
        try:
            failed = broker.request_heatmap(v.celery(), row.id)
        except Exception as exc:  # the broker is away: say so, the page still works
            from melanoma.core.connectivity import describe_connection_error

            raise HTTPException(503, describe_connection_error(exc) or "cannot ask a worker for the heat map") from None
        if failed:
            raise HTTPException(404, f"no heat map: {failed}")
        return PlainTextResponse("a worker is making the heat map\n", 202, headers={"Retry-After": "2"})

    return app
