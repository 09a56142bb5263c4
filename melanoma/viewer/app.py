"""The results viewer: a read-only web app over the results database (``melanoma serve``).

Jobs newest first, a job's images as a grid sorted by P(melanoma) with filters and keyset paging,
an image page with the nine probabilities and the Grad-CAM heat map, CSV/JSON downloads streamed
from the database. It never imports TensorFlow: heat maps are made by a worker (``melanoma.explain``)
and thumbnails by Pillow, once, then served from the cache. Images are served by database id only,
and only when their real path is under ``MELANOMA_ALLOWED_ROOTS``; no URL part becomes a path.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from melanoma.core.settings import Settings, get_settings
from melanoma.store import browse, db
from melanoma.viewer import images, jobs, reviews
from melanoma.viewer.state import HERE, OPEN_PATHS, SECURITY_HEADERS, Viewer, authorised, read_password

__all__ = ["create_app", "read_password"]


def create_app(settings: Settings | None = None) -> FastAPI:
    """The viewer's ASGI app over ``settings``' database."""
    s = settings or get_settings()
    engine = db.make_engine(s.database_url)
    db.ensure_schema(engine)
    password = read_password(s)
    v = Viewer(s, engine)
    v.password = password

    app = FastAPI(title="melanoma viewer", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.viewer = v
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def guard(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        if password is not None and request.url.path not in OPEN_PATHS:
            if not authorised(request.headers.get("authorization"), password):
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

    app.include_router(jobs.router)
    app.include_router(images.router)
    app.include_router(reviews.router)
    return app
