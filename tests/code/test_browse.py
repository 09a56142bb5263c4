"""Keyset pagination of a job's grid returns exactly the rows a full sort would, in order."""

from __future__ import annotations

import random
import uuid
from pathlib import Path

import pytest
from sqlalchemy import update

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.store import browse, db, jobs
from melanoma.store.schema import Prediction


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def job(request, tmp_path_factory):
    """A job of 230 rows: scored ones with tied and distinct probabilities, failed and pending ones;
    in SQLite and in a fresh PostgreSQL database (the keyset queries must agree on both)."""
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path_factory.mktemp('browse') / 'db.sqlite'}")
    else:
        from sqlalchemy import create_engine, text

        server = request.getfixturevalue("postgres_url")
        name = "browse_" + uuid.uuid4().hex[:10]
        with create_engine(server, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        engine = db.make_engine(server.rsplit("/", 1)[0] + "/" + name)
    db.ensure_schema(engine)
    rng = random.Random(7)
    paths = [f"/data/clinic/{rng.randrange(10**6):06d}-{i}.jpg" for i in range(230)]
    with db.session_scope(engine) as s:
        job_id, ids = jobs.create_job(s, Path("/data/clinic"), sorted(paths))
        for i in ids:
            kind = rng.random()
            if kind < 0.1:
                s.execute(update(Prediction).where(Prediction.id == i).values(status="error", error="corrupt image"))
            elif kind < 0.2:
                continue  # pending
            else:
                # Few distinct values, so ties are common and the id decides.
                probs = [rng.choice([0.0, 0.1, 0.25, 0.5]) for _ in CLASS_NAMES]
                top = max(range(len(probs)), key=probs.__getitem__)
                values = dict(zip(PROB_COLUMNS, probs))
                s.execute(
                    update(Prediction)
                    .where(Prediction.id == i)
                    .values(
                        status="ok",
                        predicted_class=CLASS_NAMES[top],
                        confidence=probs[top],
                        melanoma_flag=values["p_melanoma"] >= 0.25,
                        **values,
                    )
                )
    with db.session_scope(engine) as s:
        rows = list(s.query(Prediction).filter(Prediction.job_id == job_id))
        s.expunge_all()
    return engine, job_id, rows


def _expected(rows, view: browse.View) -> list[int]:
    keep = [r for r in rows if _matches(r, view)]
    attr = "image_path" if view.sort == "path" else view.sort
    valued = sorted((r for r in keep if getattr(r, attr) is not None), key=lambda r: (getattr(r, attr), r.id))
    if view.order == "desc":
        valued.reverse()
    valueless = sorted((r for r in keep if getattr(r, attr) is None), key=lambda r: r.id)
    return [r.id for r in valued + valueless]


def _matches(r, view: browse.View) -> bool:
    if view.predicted and r.predicted_class != view.predicted:
        return False
    if view.flagged and r.melanoma_flag is not True:
        return False
    if view.errors and r.status != "error":
        return False
    if view.min_prob is not None:
        p = getattr(r, "p_" + (view.sort_class or "melanoma").replace(" ", "_"))
        return p is not None and p >= view.min_prob
    return True


VIEWS = [
    {},
    {"order": "asc"},
    {"sort": "path"},
    {"sort": "path", "order": "desc"},
    {"sort": "p_nevus", "predicted": "nevus"},
    {"flagged": "1"},
    {"errors": "1"},
    {"sort": "p_basal_cell_carcinoma", "min_prob": "0.25"},
    {"predicted": "vascular_lesion", "order": "asc", "min_prob": "0.1"},
]


@pytest.mark.parametrize("params", VIEWS, ids=[str(v) or "default" for v in VIEWS])
def test_pages_concatenate_to_the_full_sort(job, params):
    engine, job_id, rows = job
    view = browse.View.parse(params)
    want = _expected(rows, view)
    got, cursor = [], None
    with db.session_scope(engine) as s:
        for _ in range(100):
            p = browse.page(s, job_id, view, cursor, size=7)
            assert p.matching == len(want)
            got += [r.id for r in p.rows]
            cursor = p.next_cursor
            if cursor is None:
                break
        assert got == want
        # previous / next of every row are its neighbours in the full order
        by_id = {r.id: r for r in s.query(Prediction).filter(Prediction.job_id == job_id)}
        for i, rid in enumerate(want):
            before, after = browse.neighbours(s, by_id[rid], view)
            assert (before.id if before else None) == (want[i - 1] if i else None)
            assert (after.id if after else None) == (want[i + 1] if i + 1 < len(want) else None)


@pytest.mark.parametrize(
    "params",
    [
        {"sort": "p_melanoma; DROP TABLE jobs"},
        {"sort": "image_path"},
        {"order": "sideways"},
        {"predicted": "../../etc/passwd"},
        {"min_prob": "2"},
        {"min_prob": "nan"},
        {"flagged": "yes please"},
        {"page": "2"},
    ],
)
def test_bad_views_are_refused(params):
    with pytest.raises(browse.BadView):
        browse.View.parse(params)


@pytest.mark.parametrize(
    "cursor", ["", "%%%", "bm90IGpzb24", browse.encode_cursor((False, "x", 1)), "WzEsMiwzXQ", "WyJhIl0"]
)
def test_bad_cursors_are_refused(job, cursor):
    engine, job_id, _ = job
    with db.session_scope(engine) as s, pytest.raises(browse.BadView):
        browse.page(s, job_id, browse.View(), cursor or "!", size=5)


def test_view_round_trips_through_its_query():
    from urllib.parse import parse_qsl

    view = browse.View.parse(
        {"sort": "p_nevus", "order": "asc", "predicted": "nevus", "flagged": "1", "min_prob": "0.3"}
    )
    assert browse.View.parse(dict(parse_qsl(view.query()[1:]))) == view
    assert browse.View().query() == ""
