"""The confirmed cases of a job, folder or site: each reviewed image content once, with its current
diagnosis and one prediction of it (a given version's, else the newest)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from melanoma.core.labels import PROB_COLUMNS
from melanoma.store.reviews import CHUNK, newest_ids
from melanoma.store.schema import Job, Prediction, Review


@dataclass
class Cases:
    """Reviewed images of a scope with one prediction each (the newest of the scope, or ``version``'s)."""

    sha256: list[str]
    paths: list[str]
    jobs: list[str]
    diagnoses: list[str]
    probs: np.ndarray  # (N, 9); NaN where the chosen prediction has none
    flags: list[bool | None]
    versions: list[str | None]
    classes: list[str | None]  # the class each chosen prediction gave (None where it has none)

    def __len__(self) -> int:
        return len(self.sha256)


def _scope(job: Job | None, root: str | None, site: str | None) -> list[ColumnElement[bool]]:
    conds: list[ColumnElement[bool]] = [Prediction.status == "ok"]
    if job is not None:
        conds.append(Prediction.job_id == job.id)
    if root is not None:
        conds.append(Prediction.image_path.startswith(os.path.abspath(root).rstrip("/") + "/", autoescape=True))
    if site is not None:
        conds.append(Job.site == site)
    return conds


def cases(
    session: Session,
    job: Job | None = None,
    root: str | None = None,
    site: str | None = None,
    version: str | None = None,
    exclude: Iterable[str] = (),
) -> Cases:
    """The reviewed images scored in a job, under a folder or in a site's jobs (all when none is
    given), each with its current diagnosis and one prediction: ``version``'s when given (NaN
    probabilities where that version never scored the content), else the newest. ``exclude``:
    contents to leave out (a version's training images)."""
    # The current diagnosis of every reviewed content first (reviews are few), then the scope's
    # predictions of those contents through the sha256 index, a chunk at a time: one join of all
    # reviews with a job of 100,000 rows let SQLite scan for seconds.
    current = select(Review.sha256, Review.diagnosis).where(Review.id.in_(newest_ids()))
    diagnosis_of = {sha: diagnosis for sha, diagnosis in session.execute(current)}
    skip = set(exclude)
    wanted = sorted(set(diagnosis_of) - skip)
    found: list[Prediction] = []
    for start in range(0, len(wanted), CHUNK):
        q = (
            select(Prediction)
            .join(Job, Job.id == Prediction.job_id)
            .where(Prediction.sha256.in_(wanted[start : start + CHUNK]), *_scope(job, root, site))
            .order_by(Prediction.sha256, func.coalesce(Prediction.scored_at, Prediction.created_at).desc())
            .order_by(Prediction.id.desc())
        )
        found.extend(session.scalars(q))
    picked: dict[str, Prediction] = {}
    for pred in found:
        sha = pred.sha256 or ""
        have = picked.get(sha)
        # Per content: the wanted version's prediction if there is one, else the newest.
        if have is None or (version is not None and pred.model_version == version and have.model_version != version):
            picked[sha] = pred
    rows = list(picked.values())
    probs = np.full((len(rows), len(PROB_COLUMNS)), np.nan)
    flags: list[bool | None] = []
    versions: list[str | None] = []
    classes: list[str | None] = []
    for i, pred in enumerate(rows):
        mine = version is None or pred.model_version == version
        if mine:
            probs[i] = [getattr(pred, c) for c in PROB_COLUMNS]
        flags.append(pred.melanoma_flag if mine else None)
        versions.append(pred.model_version if mine else None)
        classes.append(pred.predicted_class if mine else None)
    return Cases(
        sha256=[p.sha256 or "" for p in rows],
        paths=[p.image_path for p in rows],
        jobs=[p.job_id for p in rows],
        diagnoses=[diagnosis_of[p.sha256 or ""] for p in rows],
        probs=probs,
        flags=flags,
        versions=versions,
        classes=classes,
    )
