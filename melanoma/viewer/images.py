"""The viewer's image routes: an image's page with its nine probabilities, its thumbnail and
preview (made once per content, from the allowed roots only), and its Grad-CAM heat map (asked of a
worker, which holds TensorFlow)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import PlainTextResponse, Response

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.pipeline import broker
from melanoma.store import browse, db, heatmaps, reviews
from melanoma.store.schema import REVIEW_BASES, REVIEW_CLASSES
from melanoma.viewer import reviews as review_form
from melanoma.viewer.state import PREVIEW_SIDE, THUMB_SIDE, Viewer, prediction_id, viewer

router = APIRouter()
Current = Annotated[Viewer, Depends(viewer)]


@router.get("/images/{pid}")
def image_page(request: Request, pid: str, v: Current) -> Response:
    row = v.row(prediction_id(pid))
    view = browse.View.parse({k: val for k, val in request.query_params.items()})
    with db.session_scope(v.engine) as session:
        before, after = browse.neighbours(session, row, view)
        history = reviews.history(session, row.sha256) if row.sha256 else []
        session.expunge_all()
    threshold: float | None = row.flag_threshold
    scope = row.flag_scope
    if threshold is None:  # scored before thresholds were stored per row: the version's own
        threshold, scope = v.threshold(row.model_version), "version"
    return v.templates.TemplateResponse(
        request,
        "image.html",
        {
            "row": row,
            "view": view,
            "before": before,
            "after": after,
            "threshold": threshold,
            "threshold_scope": scope,
            "history": history,
            "review": review_form.form_state(v, request) if row.status == "ok" else {},
            "diagnoses": REVIEW_CLASSES,
            "bases": REVIEW_BASES,
            "probs": [(c, getattr(row, col)) for c, col in zip(CLASS_NAMES, PROB_COLUMNS)],
        },
    )


def _jpeg(body: bytes) -> Response:
    return Response(body, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


@router.get("/images/{pid}/thumb.jpg")
def thumb(pid: str, v: Current) -> Response:
    return _jpeg(v.derived(v.row(prediction_id(pid)), "thumbs", THUMB_SIDE))


@router.get("/images/{pid}/preview.jpg")
def preview(pid: str, v: Current) -> Response:
    return _jpeg(v.derived(v.row(prediction_id(pid)), "previews", PREVIEW_SIDE))


@router.get("/images/{pid}/heatmap.png")
def heatmap(pid: str, v: Current) -> Response:
    row = v.row(prediction_id(pid))
    if row.status != "ok":
        raise HTTPException(404, "no heat map: the image has no prediction")
    made = heatmaps.stored(v.engine, row.sha256, row.model_version)
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
