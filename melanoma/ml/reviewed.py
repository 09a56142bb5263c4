"""A clinic's confirmed cases as a training source of their own (``melanoma train --reviews-site``):
each reviewed image of the site's jobs, labelled with its current diagnosis, named by its content
hash (so it is split by image, and a later gate knows which cases a version was trained on)."""

from __future__ import annotations

import hashlib
import re

from melanoma.core import files
from melanoma.core.errors import ImageError
from melanoma.core.labels import CLASS_NAMES
from melanoma.core.settings import Settings
from melanoma.ml.data import Sample
from melanoma.store import confirmed, db
from melanoma.store.schema import Job, Prediction, Review


def source_of(site: str) -> str:
    """The source name of a site's confirmed cases: ``reviews-<site>`` (file-name safe)."""
    return "reviews-" + (re.sub(r"[^A-Za-z0-9_.-]+", "-", site.strip()).strip("-") or "site")


def review_samples(sites: tuple[str, ...], settings: Settings) -> tuple[list[Sample], list[str]]:
    """The confirmed cases of ``sites`` with one of the nine diagnoses, and why others were left out
    (``other``, a file moved, changed since it was reviewed, or outside the allowed roots)."""
    engine = db.get_engine(settings.database_url)
    db.ensure_schema(engine)
    samples: list[Sample] = []
    skipped: list[str] = []
    with db.session_scope(engine) as session:
        for site in sites:
            cases = confirmed.cases(session, site=site)
            if not len(cases):
                raise ValueError(f"--reviews-site {site}: no confirmed diagnoses of scored images in its jobs")
            for sha, path, diagnosis in zip(cases.sha256, cases.paths, cases.diagnoses):
                if diagnosis not in CLASS_NAMES:
                    skipped.append(f"{path}: diagnosis {diagnosis!r} is none of the nine classes")
                    continue
                try:
                    real, data = files.read_unchanged(path, sha, settings.allowed_roots, settings.max_file_bytes)
                except ImageError as exc:
                    skipped.append(f"{path}: {exc}")
                    continue
                samples.append(
                    Sample(
                        path=real,
                        label=diagnosis,
                        image_id=sha,
                        md5=hashlib.md5(data).hexdigest(),
                        source=source_of(site),
                    )
                )
    return samples, skipped


def reviews_fingerprint(sites: tuple[str, ...], settings: Settings) -> str:
    """Changes whenever a diagnosis of one of ``sites``' images is recorded or corrected (the trainer
    service retrains on new confirmed cases as on new image files)."""
    from sqlalchemy import func, select

    engine = db.get_engine(settings.database_url)
    db.ensure_schema(engine)
    with db.session_scope(engine) as session:
        newest, count = session.execute(
            select(func.max(Review.id), func.count(func.distinct(Review.id)))
            .join(Prediction, Prediction.sha256 == Review.sha256)
            .join(Job, Job.id == Prediction.job_id)
            .where(Job.site.in_(sites))
        ).one()
    return hashlib.sha256(f"{sorted(sites)}|{newest}|{count}".encode()).hexdigest()
