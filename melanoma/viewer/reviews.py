"""The viewer's one write: recording or correcting an image's confirmed diagnosis.

Every write needs the viewer's password with the reviewer's name as the basic-auth user name (on
loopback too), a same-origin request, and the form's CSRF token (made for that reviewer by this
viewer's password); anything else is refused, counted and logged, and writes nothing. What is
written is append-only and audited (melanoma.store.reviews).
"""

from __future__ import annotations

import logging
from typing import Annotated
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response

from melanoma.core.errors import UserError
from melanoma.store import browse, db, reviews
from melanoma.store.schema import Prediction
from melanoma.viewer.state import Viewer, csrf_ok, csrf_token, prediction_id, reviewer, same_origin, viewer

log = logging.getLogger(__name__)
router = APIRouter()
Current = Annotated[Viewer, Depends(viewer)]
MAX_FORM_BYTES = 16 * 1024


def _refuse(v: Viewer, request: Request, status: int, reason: str, message: str) -> HTTPException:
    v.refused.labels(reason).inc()
    log.warning("refused a review from %s: %s", request.client.host if request.client else "?", message)
    return HTTPException(status, message)


@router.post("/images/{pid}/review")
async def record_review(request: Request, pid: str, v: Current) -> Response:
    view = browse.View.parse(dict(request.query_params))
    try:
        name = reviewer(request.headers.get("authorization"), v.password)
    except HTTPException as exc:
        raise _refuse(v, request, exc.status_code, "auth", str(exc.detail)) from None
    if not same_origin(request):
        raise _refuse(v, request, 403, "cross-site", "refused: the form was posted from another site")
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        raise _refuse(v, request, 415, "content-type", "send the review as an HTML form")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise _refuse(v, request, 413, "size", "the form is too large")
    try:
        form = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise _refuse(v, request, 400, "form", "malformed form") from None

    def field(key: str) -> str:
        values = form.get(key, [""])
        return values[0] if len(values) == 1 else ""

    assert v.password is not None  # reviewer() refused otherwise
    if not csrf_ok(v.password, name, field("csrf_token")):
        raise _refuse(v, request, 403, "csrf", "refused: the form's token is missing or expired; reload the page")
    try:
        diagnosis = reviews.parse_diagnosis(field("diagnosis"))
        basis = reviews.parse_basis(field("basis"))
    except ValueError as exc:
        raise _refuse(v, request, 400, "value", str(exc)) from None
    row_id = prediction_id(pid)
    with db.session_scope(v.engine) as session:
        row = session.get(Prediction, row_id)
        if row is None:
            raise HTTPException(404, "no such image")
        try:
            remote = request.client.host if request.client else None
            reviews.record(session, row, diagnosis, basis, field("note"), name, "viewer", remote)
        except UserError as exc:
            raise HTTPException(409, str(exc)) from None
    return RedirectResponse(f"/images/{row_id}{view.query()}#review", status_code=303)


def form_state(v: Viewer, request: Request) -> dict[str, str]:
    """What the image page's review form needs: the reviewer and a CSRF token, or why the form is
    not offered (no password set, or signed in without a name)."""
    try:
        name = reviewer(request.headers.get("authorization"), v.password)
    except HTTPException as exc:
        return {"why": str(exc.detail)}
    assert v.password is not None
    return {"reviewer": name, "token": csrf_token(v.password, name)}
