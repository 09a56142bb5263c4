"""Jobs: find the images of a folder, record them, and answer "how far is job X" and "what did it find"."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from melanoma.core.errors import UserError
from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS, is_image_file, parse_class, prob_column
from melanoma.store.schema import Job, Prediction

RESULT_COLUMNS: tuple[str, ...] = (
    "image_path",
    "status",
    "error",
    "predicted_class",
    "confidence",
    *PROB_COLUMNS,
    "model_version",
    "melanoma_flag",
    "flag_threshold",
    "flag_scope",
    "familiarity",
    "unfamiliar",
    "test_time",
)
_INSERT_CHUNK = 5000


def discover(root: Path) -> list[str]:
    """Absolute paths of the image files under ``root``, recursively, sorted.

    Symlinked folders are not followed (a loop would never end); symlinked files are listed,
    and the worker checks where they really point.
    """
    if not root.exists():
        raise UserError(f"folder not found: {root}")
    if not root.is_dir():
        raise UserError(f"not a folder: {root}")
    if not os.access(root, os.R_OK | os.X_OK):
        raise UserError(f"folder not readable: {root}")
    base = os.path.abspath(root)
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames.sort()
        found.extend(os.path.join(dirpath, f) for f in filenames if is_image_file(f))
    return sorted(found)


def create_job(
    session: Session, root: Path, paths: list[str], name: str | None = None, site: str | None = None
) -> tuple[str, list[int]]:
    """Record a job (of ``site``, a clinic) and one ``pending`` row per image; returns the job id and
    the rows' ids in path order."""
    job_id = uuid.uuid4().hex
    where = {"root": os.path.abspath(root), "submitted_from": socket.gethostname(), "site": site}
    session.add(Job(id=job_id, name=name, n_images=len(paths), **where))
    session.flush()
    for start in range(0, len(paths), _INSERT_CHUNK):
        session.execute(
            insert(Prediction),
            [{"job_id": job_id, "image_path": p, "status": "pending"} for p in paths[start : start + _INSERT_CHUNK]],
        )
    ids = list(
        session.scalars(select(Prediction.id).where(Prediction.job_id == job_id).order_by(Prediction.image_path))
    )
    return job_id, ids


def find_job(session: Session, ref: str) -> Job:
    """The job whose id is ``ref`` or starts with it (at least 6 characters); else a one-line error."""
    ref = ref.strip().lower()
    job = session.get(Job, ref)
    if job is not None:
        return job
    if len(ref) >= 6 and all(c in "0123456789abcdef" for c in ref):
        matches = list(session.scalars(select(Job).where(Job.id.startswith(ref)).limit(2)))
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            raise UserError(f"job id prefix {ref!r} matches several jobs; give more characters")
    raise UserError(f"unknown job id {ref!r}")


def pending_ids(session: Session, job: Job) -> list[int]:
    """Row ids of the job's images that have no result yet."""
    return list(
        session.scalars(
            select(Prediction.id)
            .where(Prediction.job_id == job.id, Prediction.status == "pending")
            .order_by(Prediction.id)
        )
    )


def unqueued_ids(session: Session, job: Job) -> list[int]:
    """Row ids of the job's pending images that its producer never put on the queue (it stopped
    after ``job.enqueued`` images), in the order it queues them."""
    rows = session.execute(
        select(Prediction.id, Prediction.status).where(Prediction.job_id == job.id).order_by(Prediction.image_path)
    ).all()
    return [i for i, status in rows[job.enqueued :] if status == "pending"]


def set_enqueued(session: Session, job_id: str, n: int) -> None:
    """Record that the first ``n`` of the job's images (in path order) are on the queue."""
    session.execute(update(Job).where(Job.id == job_id).values(enqueued=n))


def mark_enqueued(session: Session, job_id: str, n: int) -> None:
    """Record that ``n`` more of the job's images are on the queue."""
    session.execute(update(Job).where(Job.id == job_id).values(enqueued=Job.enqueued + n))


@dataclass
class JobStatus:
    """Progress of one job."""

    job_id: str
    name: str | None
    root: str
    created_at: str
    total: int
    done: int
    failed: int
    pending: int
    classes: dict[str, int]
    enqueued: int = 0
    # Familiarity (melanoma.ml.familiarity) of the scored images that have it.
    measured: int = 0  # scored images with a familiarity percentile
    unfamiliar: int = 0
    median_familiarity: float | None = None
    site: str | None = None
    # The melanoma flag's thresholds in this job: (whose, threshold, images scored at it, flagged).
    flags: tuple[tuple[str, float, int, int], ...] = ()

    @property
    def complete(self) -> bool:
        return self.pending == 0

    @property
    def unfamiliar_share(self) -> float | None:
        """Share of the measured images that are unfamiliar; None when none was measured."""
        return self.unfamiliar / self.measured if self.measured else None

    def shift_warning(self, warn_share: float) -> str | None:
        """A one-line warning when more than ``warn_share`` of the measured images are unfamiliar."""
        share = self.unfamiliar_share
        if share is None or share <= warn_share:
            return None
        return (
            f"{share:.0%} of these images look unlike the images this model was validated on "
            f"({self.unfamiliar} of {self.measured}): expect lower accuracy"
        )

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d["complete"] = self.complete
        d["unfamiliar_share"] = self.unfamiliar_share
        return d


def job_status(session: Session, job: Job) -> JobStatus:
    """Counts of scored, failed and pending images and of each predicted class."""
    by_status = dict(
        session.execute(
            select(Prediction.status, func.count()).where(Prediction.job_id == job.id).group_by(Prediction.status)
        ).all()
    )
    by_class = dict(
        session.execute(
            select(Prediction.predicted_class, func.count())
            .where(Prediction.job_id == job.id, Prediction.status == "ok")
            .group_by(Prediction.predicted_class)
        ).all()
    )
    done, failed, pending = (by_status.get(k, 0) for k in ("ok", "error", "pending"))
    measured, unfamiliar = session.execute(
        select(func.count(Prediction.familiarity), func.count().filter(Prediction.unfamiliar.is_(True))).where(
            Prediction.job_id == job.id, Prediction.status == "ok"
        )
    ).one()
    median = None
    if measured:
        # The middle value by ORDER BY/OFFSET: the same SQL on SQLite and PostgreSQL.
        median = session.scalar(
            select(Prediction.familiarity)
            .where(Prediction.job_id == job.id, Prediction.familiarity.is_not(None))
            .order_by(Prediction.familiarity)
            .offset((measured - 1) // 2)
            .limit(1)
        )
    flags = session.execute(
        select(
            Prediction.flag_scope,
            Prediction.flag_threshold,
            func.count(),
            func.count().filter(Prediction.melanoma_flag.is_(True)),
        )
        .where(Prediction.job_id == job.id, Prediction.status == "ok", Prediction.flag_threshold.is_not(None))
        .group_by(Prediction.flag_scope, Prediction.flag_threshold)
    ).all()
    return JobStatus(
        site=job.site,
        flags=tuple((scope or "version", float(t or 0), n, k) for scope, t, n, k in flags),
        job_id=job.id,
        name=job.name,
        root=job.root,
        created_at=job.created_at.isoformat(),
        total=done + failed + pending,
        done=done,
        failed=failed,
        pending=pending,
        classes={c: by_class.get(c, 0) for c in CLASS_NAMES},
        enqueued=job.enqueued,
        measured=measured,
        unfamiliar=unfamiliar,
        median_familiarity=median,
    )


def job_results(
    session: Session,
    job: Job,
    class_name: str | None = None,
    min_prob: float | None = None,
    unfamiliar: bool = False,
) -> Iterator[dict]:
    """One record per image of the job, in :data:`RESULT_COLUMNS` order, sorted by path.

    ``class_name`` alone keeps images whose predicted class it is; with ``min_prob`` it keeps
    images whose probability *of that class* is at least ``min_prob`` (whatever the top class),
    which is how a clinic pulls every possible melanoma. ``min_prob`` alone filters on the
    confidence of the predicted class. ``unfamiliar`` keeps only images flagged unlike the model's
    validation images.
    """
    q = select(Prediction).where(Prediction.job_id == job.id)
    if unfamiliar:
        q = q.where(Prediction.unfamiliar.is_(True))
    if class_name is not None:
        try:
            name = parse_class(class_name)
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if min_prob is None:
            q = q.where(Prediction.predicted_class == name)
        else:
            q = q.where(getattr(Prediction, prob_column(name)) >= min_prob)
    elif min_prob is not None:
        q = q.where(Prediction.confidence >= min_prob)
    for row in session.scalars(q.order_by(Prediction.image_path).execution_options(yield_per=2000)):
        yield {col: getattr(row, col) for col in RESULT_COLUMNS}


def csv_row(record: dict) -> list[str]:
    """A result record as the results CSV writes it (the CLI and the viewer alike): booleans as
    ``1``/``0``, probabilities with six decimals, missing values empty."""

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, bool):
            return "1" if value else "0"
        if isinstance(value, float):
            return f"{value:.6f}"
        return str(value)

    return [cell(record[c]) for c in RESULT_COLUMNS]


def list_jobs(session: Session, limit: int = 20) -> list[dict]:
    """The newest ``limit`` jobs, newest first: name, folder, created (UTC, with its zone), progress
    (total, done, failed, pending), the model versions that scored them and counts per predicted class."""
    recent = list(session.scalars(select(Job).order_by(Job.created_at.desc(), Job.id).limit(limit)))
    out = []
    for job in recent:
        st = job_status(session, job)
        versions = sorted(
            v
            for v in session.scalars(select(Prediction.model_version).where(Prediction.job_id == job.id).distinct())
            if v
        )
        created = job.created_at if job.created_at.tzinfo else job.created_at.replace(tzinfo=UTC)
        out.append(
            {
                "id": job.id,
                "name": job.name,
                "folder": job.root,
                "site": job.site,
                "created_at": created.isoformat(),
                "total": st.total,
                "done": st.done,
                "failed": st.failed,
                "pending": st.pending,
                "queued": job.enqueued,
                "model_versions": versions,
                "classes": {c: n for c, n in st.classes.items() if n},
            }
        )
    return out


def image_paths(session: Session, job: Job) -> list[str]:
    """The job's image paths, in path order."""
    return list(
        session.scalars(
            select(Prediction.image_path).where(Prediction.job_id == job.id).order_by(Prediction.image_path)
        )
    )
