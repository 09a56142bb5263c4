"""Confirmed diagnoses (reviews): record and correct them (append-only), import a pathology export,
and export them (:mod:`melanoma.store.confirmed` gathers a job's, folder's or site's cases).

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

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from melanoma.core.errors import UserError
from melanoma.core.labels import parse_class
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


def newest_ids() -> Select[int]:
    """The id of each content's current review (its newest entry), as a subquery."""
    return select(func.max(Review.id)).group_by(Review.sha256)


def current(session: Session, sha: str) -> Review | None:
    """The content's current review: its newest entry (each new entry supersedes the one before)."""
    return session.scalars(select(Review).where(Review.sha256 == sha).order_by(Review.id.desc()).limit(1)).first()


def history(session: Session, sha: str) -> list[Review]:
    """Every review of the content, oldest first (corrected entries included)."""
    return list(session.scalars(select(Review).where(Review.sha256 == sha).order_by(Review.id)))


_LOOK_UP = object()
# Keys looked up per query (one IN list each, not a query per row; within every database's limit).
CHUNK = 2000


def record(
    session: Session,
    row: Prediction,
    diagnosis: str,
    basis: str,
    note: str | None,
    reviewer: str,
    via: str,
    remote: str | None = None,
    before: Review | None | object = _LOOK_UP,
) -> Review | None:
    """Record a diagnosis of ``row``'s image; a different one than the current supersedes it.
    Returns None (and writes nothing) when it repeats the current diagnosis. ``before``: the
    content's current review when the caller has looked it up already (None: it has none)."""
    if row.sha256 is None or row.status == "pending":
        raise UserError("only a scored image can be reviewed (its content hash identifies the case)")
    note = (note or "").strip()[:2000] or None
    reviewer = reviewer.strip()[:100]
    if not reviewer:
        raise UserError("a review needs the reviewer's name")
    if before is _LOOK_UP:
        before = current(session, row.sha256)
    assert before is None or isinstance(before, Review)
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


def _newest_scored(session: Session, column: Any, keys: set[str]) -> dict[str, Prediction]:
    """The newest scored prediction for each of these paths (or content hashes)."""
    found: dict[str, Prediction] = {}
    ordered = sorted(keys)
    for start in range(0, len(ordered), CHUNK):
        q = (
            select(Prediction)
            .where(
                Prediction.status == "ok", Prediction.sha256.is_not(None), column.in_(ordered[start : start + CHUNK])
            )
            .order_by(func.coalesce(Prediction.scored_at, Prediction.created_at), Prediction.id)
        )
        for row in session.scalars(q):
            found[getattr(row, column.key)] = row  # oldest first: the newest stays
    return found


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
    parsed: list[tuple[int, str, str, str, str, str]] = []  # line, path, sha, diagnosis, basis, note
    for row in reader:
        line = reader.line_num
        path = (row.get(image_col) or "").strip() if image_col else ""
        sha = (row.get(sha_col) or "").strip().lower() if sha_col else ""
        try:
            diagnosis = parse_diagnosis(row.get(diag_col) or "")
            basis = parse_basis(row.get(basis_col) or "")
        except ValueError as exc:
            report.problems.append(f"line {line}: {exc}")
            continue
        if not path and not sha:
            report.problems.append(f"line {line}: neither an image path nor a sha256")
            continue
        note = (row.get(note_col) or "") if note_col else ""
        parsed.append((line, os.path.abspath(path) if path and not sha else "", sha, diagnosis, basis, note))
    by_sha = _newest_scored(session, Prediction.sha256, {p[2] for p in parsed if p[2]})
    by_path = _newest_scored(session, Prediction.image_path, {p[1] for p in parsed if p[1]})
    before = reviewed_shas(session, {r.sha256 for r in (*by_sha.values(), *by_path.values()) if r.sha256})
    seen: dict[str, int] = {}
    for line, path, sha, diagnosis, basis, note in parsed:
        scored = by_sha.get(sha) if sha else by_path.get(path)
        if scored is None or scored.sha256 is None:
            report.problems.append(f"line {line}: no scored image with {'sha256' if sha else 'path'} {sha or path}")
            continue
        if scored.sha256 in seen:
            report.problems.append(f"line {line}: the same image as line {seen[scored.sha256]}; skipped")
            continue
        seen[scored.sha256] = line
        entry = record(session, scored, diagnosis, basis, note, reviewer, "import", remote, before.get(scored.sha256))
        if entry is None:
            report.unchanged += 1
        else:
            report.added += 1
    report.problems.sort(key=lambda problem: int(problem.split(":", 1)[0].removeprefix("line ")))
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
    q = select(Review, Job.site).outerjoin(Job, Job.id == Review.job_id).order_by(Review.id)
    current_ids = set(session.scalars(newest_ids()))
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


def reviewed_shas(session: Session, shas: Iterable[str]) -> dict[str, Review]:
    """The current review of each of these contents that has one."""
    wanted = sorted({s for s in shas if s})
    out: dict[str, Review] = {}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        q = select(Review).where(Review.id.in_(newest_ids().where(Review.sha256.in_(chunk))))
        out.update((review.sha256, review) for review in session.scalars(q))
    return out
