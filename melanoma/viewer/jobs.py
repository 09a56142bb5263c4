"""The viewer's job routes: the job list, a job's grid with filters and keyset paging, its progress,
and its results streamed as CSV or JSON from the database."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy import Engine

from melanoma.ml import clinic
from melanoma.store import browse, confirmed, db, jobs, reviews
from melanoma.store.schema import Job
from melanoma.viewer.state import Viewer, viewer

router = APIRouter()
Current = Annotated[Viewer, Depends(viewer)]


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit", "50")
    if not raw.isdigit() or not 1 <= int(raw) <= 1000:
        raise browse.BadView("limit must be a whole number from 1 to 1000")
    return int(raw)


@router.get("/")
def jobs_page(request: Request, v: Current) -> Response:
    with db.session_scope(v.engine) as session:
        listing = jobs.list_jobs(session, _limit(request))
    return v.templates.TemplateResponse(request, "jobs.html", {"jobs": listing})


@router.get("/jobs.json")
def jobs_json(request: Request, v: Current) -> Response:
    with db.session_scope(v.engine) as session:
        return Response(json.dumps(jobs.list_jobs(session, _limit(request))), media_type="application/json")


@router.get("/jobs/{ref}")
def job_page(request: Request, ref: str, v: Current) -> Response:
    job = v.job(ref)
    params = dict(request.query_params)
    view = browse.View.parse(params)
    with db.session_scope(v.engine) as session:
        status = jobs.job_status(session, job)
        page = browse.page(session, job.id, view, params.get("after"))
        on_page = reviews.reviewed_shas(session, [r.sha256 for r in page.rows if r.sha256])
        cases = confirmed.cases(session, job=job)
        session.expunge_all()
    figures = clinic.figures(cases.diagnoses, cases.probs, cases.flags, given=cases.classes) if len(cases) else None
    return v.templates.TemplateResponse(
        request,
        "job.html",
        {
            "job": job,
            "status": status,
            "view": view,
            "page": page,
            "confirmed": {sha: r.diagnosis for sha, r in on_page.items()},
            "figures": figures,
            "figures_text": clinic.format_figures(figures, " at the flag") if figures else "",
            "figures_versions": sorted({v for v in cases.versions if v}),
        },
    )


@router.get("/jobs/{ref}/progress.json")
def job_progress(ref: str, v: Current) -> Response:
    job = v.job(ref)
    with db.session_scope(v.engine) as session:
        return Response(json.dumps(jobs.job_status(session, job).as_dict()), media_type="application/json")


def _results(engine: Engine, job_id: str) -> Iterator[dict[str, Any]]:
    with db.session_scope(engine) as session:
        yield from jobs.job_results(session, session.get(Job, job_id))  # type: ignore[arg-type]


@router.get("/jobs/{ref}/results.csv")
def results_csv(ref: str, v: Current) -> Response:
    job = v.job(ref)

    def rows() -> Iterator[str]:
        buf = io.StringIO()
        out = csv.writer(buf)
        out.writerow(jobs.RESULT_COLUMNS)
        for n, record in enumerate(_results(v.engine, job.id), 1):
            out.writerow(jobs.csv_row(record))
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


@router.get("/jobs/{ref}/results.json")
def results_json(ref: str, v: Current) -> Response:
    job = v.job(ref)

    def rows() -> Iterator[str]:
        yield "["
        for n, record in enumerate(_results(v.engine, job.id)):
            yield ("," if n else "") + json.dumps(record)
        yield "]\n"

    return StreamingResponse(
        rows(),
        media_type="application/json",
        headers={"Content-Disposition": f'attachment; filename="job-{job.id}.json"'},
    )
