"""Confirmed diagnoses (reviews): record and correct them (append-only), import a pathology export,
export them, and gather the reviewed cases of a job, folder or site with what the model said.

A review belongs to an image's *content* (SHA-256): the same lesion photo submitted again in a later
job is the same case. Every write leaves an :class:`~melanoma.store.schema.AuditEvent`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from melanoma.core.errors import UserError
from melanoma.core.labels import PROB_COLUMNS, parse_class
from melanoma.store.schema import REVIEW_BASES, AuditEvent, Job, Prediction, Review

EXPORT_COLUMNS = (
    "review_id",
    "sha256",
    "image_path",
    "job_id",
    "site",
    "diagnosis",
    "basis",
    "note",
    "reviewer",
    "via",
    "created_at",
    "supersedes",
    "current",
)
# Column names a pathology export may use for each field.
_ALIASES = {
    "image": ("image_path", "path", "image", "file"),
    "sha256": ("sha256", "hash", "content_sha256"),
    "diagnosis": ("diagnosis", "class", "dx"),
    "basis": ("basis", "confirmed_by", "method"),
    "note": ("note", "notes", "comment"),
}


def parse_diagnosis(text: str) -> str:
    """A diagnosis as a person writes it: one of the nine classes (any case, ``_`` for spaces) or ``other``."""
    if text.strip().lower() == "other":
        return "other"
    try:
        return parse_class(text)
    except ValueError:
        raise ValueError(f"unknown diagnosis {text.strip()!r}: one of the nine classes or 'other'") from None


def parse_basis(text: str) -> str:
    """``histopathology``, ``expert consensus`` or ``follow-up`` (any case, ``_``/``-``/space alike)."""
    wanted = text.strip().lower().replace("_", " ").replace("-", " ")
    for basis in REVIEW_BASES:
        if basis.replace("-", " ") == wanted:
            return basis
    raise ValueError(f"unknown basis {text.strip()!r}: one of {', '.join(REVIEW_BASES)}")


def audit(
    session: Session, actor: str, action: str, target: str | None, remote: str | None = None, **detail: Any
) -> None:
    """Add one audit event (committed with the write it describes)."""
    session.add(AuditEvent(actor=actor, action=action, target=target, remote=remote, detail=detail))


def current(session: Session, sha: str) -> Review | None:
    """The content's current review: its newest entry (each new entry supersedes the one before)."""
    return session.scalars(select(Review).where(Review.sha256 == sha).order_by(Review.id.desc()).limit(1)).first()


def history(session: Session, sha: str) -> list[Review]:
    """Every review of the content, oldest first (corrected entries included)."""
    return list(session.scalars(select(Review).where(Review.sha256 == sha).order_by(Review.id)))


def record(
    session: Session,
    row: Prediction,
    diagnosis: str,
    basis: str,
    note: str | None,
    reviewer: str,
    via: str,
    remote: str | None = None,
) -> Review | None:
    """Record a diagnosis of ``row``'s image; a different one than the current supersedes it.
    Returns None (and writes nothing) when it repeats the current diagnosis."""
    if row.sha256 is None or row.status == "pending":
        raise UserError("only a scored image can be reviewed (its content hash identifies the case)")
    note = (note or "").strip()[:2000] or None
    reviewer = reviewer.strip()[:100]
    if not reviewer:
        raise UserError("a review needs the reviewer's name")
    before = current(session, row.sha256)
    if before is not None and (before.diagnosis, before.basis, before.note) == (diagnosis, basis, note):
        return None
    entry = Review(
        sha256=row.sha256,
        job_id=row.job_id,
        image_path=row.image_path,
        diagnosis=diagnosis,
        basis=basis,
        note=note,
        reviewer=reviewer,
        via=via,
        supersedes=before.id if before is not None else None,
    )
    session.add(entry)
    session.flush()
    action = "review.correct" if before is not None else "review.record"
    detail: dict[str, Any] = {"review": entry.id, "diagnosis": diagnosis, "basis": basis, "via": via}
    if before is not None:
        detail.update(previous=before.id, previous_diagnosis=before.diagnosis)
    audit(session, reviewer, action, row.sha256, remote, **detail)
    return entry


@dataclass
class ImportReport:
    """What an import kept, left alone and refused (line by line)."""

    added: int = 0
    unchanged: int = 0
    problems: list[str] = field(default_factory=list)


def _column(header: list[str], key: str) -> str | None:
    names = {h.strip().lower(): h for h in header}
    return next((names[a] for a in _ALIASES[key] if a in names), None)


def _scored_by(session: Session, path: str | None, sha: str | None) -> Prediction | None:
    q = select(Prediction).where(Prediction.status == "ok")
    if sha:
        q = q.where(Prediction.sha256 == sha.strip().lower())
    else:
        q = q.where(Prediction.image_path == os.path.abspath(path or ""))
    return session.scalars(q.order_by(Prediction.scored_at.desc(), Prediction.id.desc()).limit(1)).first()


def import_csv(session: Session, text: str, reviewer: str, remote: str | None = None) -> ImportReport:
    """Import a pathology export (columns: ``image_path`` or ``sha256``, ``diagnosis``, ``basis``,
    optional ``note``). Rows that match no scored image, name an unknown class or basis, or repeat an
    image already in the file are reported by line and skipped; the rest are recorded in the caller's
    transaction, so a failure writes nothing. A row equal to the current diagnosis adds nothing."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = list(reader.fieldnames or [])
    image_col, sha_col = _column(header, "image"), _column(header, "sha256")
    diag_col, basis_col, note_col = (_column(header, k) for k in ("diagnosis", "basis", "note"))
    if (image_col is None and sha_col is None) or diag_col is None or basis_col is None:
        raise UserError(
            "the file needs a header with image_path (or sha256), diagnosis and basis columns; found: "
            + (", ".join(header) or "no header")
        )
    report = ImportReport()
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        path = (row.get(image_col) or "").strip() if image_col else ""
        sha = (row.get(sha_col) or "").strip() if sha_col else ""
        try:
            diagnosis = parse_diagnosis(row.get(diag_col) or "")
            basis = parse_basis(row.get(basis_col) or "")
        except ValueError as exc:
            report.problems.append(f"line {line}: {exc}")
            continue
        if not path and not sha:
            report.problems.append(f"line {line}: neither an image path nor a sha256")
            continue
        scored = _scored_by(session, path or None, sha or None)
        if scored is None or scored.sha256 is None:
            report.problems.append(f"line {line}: no scored image with {'sha256' if sha else 'path'} {sha or path}")
            continue
        if scored.sha256 in seen:
            report.problems.append(f"line {line}: the same image as line {seen[scored.sha256]}; skipped")
            continue
        seen[scored.sha256] = line
        note = (row.get(note_col) or "") if note_col else ""
        if record(session, scored, diagnosis, basis, note, reviewer, "import", remote) is None:
            report.unchanged += 1
        else:
            report.added += 1
    audit(
        session,
        reviewer,
        "review.import",
        None,
        remote,
        added=report.added,
        unchanged=report.unchanged,
        refused=len(report.problems),
    )
    return report


def export_rows(session: Session, include_superseded: bool = False) -> Iterator[dict[str, Any]]:
    """Reviews in :data:`EXPORT_COLUMNS` order, oldest first: the current ones, or every entry."""
    newest = select(func.max(Review.id)).group_by(Review.sha256)
    q = select(Review, Job.site).outerjoin(Job, Job.id == Review.job_id).order_by(Review.id)
    current_ids = set(session.scalars(newest))
    for review, site in session.execute(q):
        is_current = review.id in current_ids
        if not include_superseded and not is_current:
            continue
        yield {
            "review_id": review.id,
            "sha256": review.sha256,
            "image_path": review.image_path,
            "job_id": review.job_id or "",
            "site": site or "",
            "diagnosis": review.diagnosis,
            "basis": review.basis,
            "note": review.note or "",
            "reviewer": review.reviewer,
            "via": review.via,
            "created_at": review.created_at.isoformat(),
            "supersedes": review.supersedes or "",
            "current": int(is_current),
        }


@dataclass
class Cases:
    """Reviewed images of a scope with one prediction each (the newest of the scope, or ``version``'s)."""

    sha256: list[str]
    paths: list[str]
    jobs: list[str]
    diagnoses: list[str]
    sites: list[str | None]
    probs: np.ndarray  # (N, 9); NaN where the chosen prediction has none
    flags: list[bool | None]
    thresholds: list[float | None]
    versions: list[str | None]

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
    latest = select(Review.sha256, func.max(Review.id).label("rid")).group_by(Review.sha256).subquery()
    q = (
        select(Prediction, Job.site, Review.diagnosis)
        .join(Job, Job.id == Prediction.job_id)
        .join(latest, latest.c.sha256 == Prediction.sha256)
        .join(Review, Review.id == latest.c.rid)
        .where(*_scope(job, root, site))
        .order_by(Prediction.sha256, Prediction.scored_at.desc(), Prediction.id.desc())
    )
    skip = set(exclude)
    picked: dict[str, tuple[Prediction, str | None, str]] = {}
    for pred, pred_site, diagnosis in session.execute(q):
        sha = pred.sha256 or ""
        if sha in skip:
            continue
        have = picked.get(sha)
        # Per content: the wanted version's prediction if there is one, else the newest.
        if have is None or (version is not None and pred.model_version == version and have[0].model_version != version):
            picked[sha] = (pred, pred_site, diagnosis)
    rows = list(picked.values())
    probs = np.full((len(rows), len(PROB_COLUMNS)), np.nan)
    flags: list[bool | None] = []
    thresholds: list[float | None] = []
    versions: list[str | None] = []
    for i, (pred, _, _) in enumerate(rows):
        mine = version is None or pred.model_version == version
        if mine:
            probs[i] = [getattr(pred, c) for c in PROB_COLUMNS]
        flags.append(pred.melanoma_flag if mine else None)
        thresholds.append(pred.flag_threshold if mine else None)
        versions.append(pred.model_version if mine else None)
    return Cases(
        sha256=[p.sha256 or "" for p, _, _ in rows],
        paths=[p.image_path for p, _, _ in rows],
        jobs=[p.job_id for p, _, _ in rows],
        diagnoses=[d for _, _, d in rows],
        sites=[s for _, s, _ in rows],
        probs=probs,
        flags=flags,
        thresholds=thresholds,
        versions=versions,
    )


def reviewed_shas(session: Session, shas: Iterable[str]) -> dict[str, Review]:
    """The current review of each of these contents that has one."""
    wanted = [s for s in set(shas) if s]
    if not wanted:
        return {}
    out: dict[str, Review] = {}
    for review in session.scalars(select(Review).where(Review.sha256.in_(wanted)).order_by(Review.id)):
        out[review.sha256] = review
    return out
