"""Database schema: typed SQLAlchemy 2 ORM classes. Changes go through Alembic migrations.

``predictions`` holds one row per image per job, created as ``pending`` when the job is
submitted and filled in by a worker (``ok`` with probabilities, or ``error`` with a reason).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS

# SQLite only auto-increments INTEGER PRIMARY KEY; PostgreSQL gets a 64-bit identity.
BigId = BigInteger().with_variant(Integer(), "sqlite")

STATUSES = ("pending", "ok", "error")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Job(Base):
    """One submitted folder."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(200))
    root: Mapped[str] = mapped_column(Text)
    n_images: Mapped[int] = mapped_column(Integer)
    # Images the producer has put on the queue so far (in path order): below n_images, the
    # producer failed or was killed part-way, and `melanoma requeue` queues the rest.
    enqueued: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    submitted_from: Mapped[str | None] = mapped_column(String(255))
    # The clinic the images come from (MELANOMA_SITE or `submit --site`): its reviews, local
    # operating point and training source are kept under this name.
    site: Mapped[str | None] = mapped_column(String(100), index=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)


class ModelVersion(Base):
    """A model version that produced predictions (registered by the worker that loads it)."""

    __tablename__ = "model_versions"

    version: Mapped[str] = mapped_column(String(100), primary_key=True)
    architecture: Mapped[str] = mapped_column(String(50))
    classes: Mapped[list[str]] = mapped_column(JSON)
    input_size: Mapped[list[int]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[str | None] = mapped_column(String(40))
    registered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Prediction(Base):
    """One image of one job and what the model said about it."""

    __tablename__ = "predictions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    image_path: Mapped[str] = mapped_column(Text)
    sha256: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    predicted_class: Mapped[str | None] = mapped_column(String(40))
    confidence: Mapped[float | None] = mapped_column(Float)
    # One column per class (see melanoma.core.labels.PROB_COLUMNS) so plain SQL can filter on them.
    p_actinic_keratosis: Mapped[float | None] = mapped_column(Float)
    p_basal_cell_carcinoma: Mapped[float | None] = mapped_column(Float)
    p_dermatofibroma: Mapped[float | None] = mapped_column(Float)
    p_melanoma: Mapped[float | None] = mapped_column(Float)
    p_nevus: Mapped[float | None] = mapped_column(Float)
    p_pigmented_benign_keratosis: Mapped[float | None] = mapped_column(Float)
    p_seborrheic_keratosis: Mapped[float | None] = mapped_column(Float)
    p_squamous_cell_carcinoma: Mapped[float | None] = mapped_column(Float)
    p_vascular_lesion: Mapped[float | None] = mapped_column(Float)
    # P(melanoma) >= the version's operating point (chosen on validation for a target
    # sensitivity); NULL for errors and for versions without an operating point.
    melanoma_flag: Mapped[bool | None] = mapped_column()
    # The threshold the flag was set at, and whose: ``version`` (the version's own operating point)
    # or a local one (``site NAME`` / ``root PATH``, melanoma.store.thresholds).
    flag_threshold: Mapped[float | None] = mapped_column(Float)
    flag_scope: Mapped[str | None] = mapped_column(String(300))
    # How unlike the version's own validation images the image is: the percentile (0-100) of its
    # familiarity score among theirs (melanoma.ml.familiarity); ``unfamiliar`` when above the
    # worker's MELANOMA_UNFAMILIAR_PERCENTILE. NULL for errors and versions without statistics.
    familiarity: Mapped[float | None] = mapped_column(Float)
    unfamiliar: Mapped[bool | None] = mapped_column()
    model_version: Mapped[str | None] = mapped_column(ForeignKey("model_versions.version"))
    # How the version scored the image when not as one plain view: ``views 4, scales 1,1.18``
    # (MELANOMA_TTA, MELANOMA_TTA_SCALES); NULL for one view at scale 1. An earlier prediction is
    # reused only when it was scored the same way.
    test_time: Mapped[str | None] = mapped_column(String(60))
    worker_host: Mapped[str | None] = mapped_column(String(255))
    reused: Mapped[bool] = mapped_column(default=False)
    # How many times a worker wrote this row's result: a re-delivered message must find the row
    # done and leave it alone, so every image scored exactly once has 1 here.
    writes: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    scored_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    __table_args__ = (
        # One row per image per job: the producer inserts it, workers only update it,
        # so a re-delivered message can never add a second one.
        UniqueConstraint("job_id", "image_path", name="uq_predictions_job_image"),
        CheckConstraint("status IN ('pending', 'ok', 'error')", name="ck_predictions_status"),
        # A job's progress, class counts, flags and versions, read from the index alone.
        Index("ix_predictions_job_summary", "job_id", "status", "predicted_class", "melanoma_flag", "model_version"),
        # "all melanoma above 0.8 this month"
        Index("ix_predictions_melanoma_time", "p_melanoma", "scored_at"),
        Index("ix_predictions_class_time", "predicted_class", "scored_at"),
        # reuse of an earlier prediction of the same content by the same model version
        Index("ix_predictions_sha_model", "sha256", "model_version"),
        # The viewer's grid: a job's images by any class probability, keyset-paginated.
        *(Index(f"ix_predictions_job_{col}", "job_id", col, "id") for col in PROB_COLUMNS),
    )


class Heatmap(Base):
    """A Grad-CAM overlay (PNG) of one image content under one model version, made once by the
    worker's ``melanoma.explain`` task and served by the viewer."""

    __tablename__ = "heatmaps"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64))
    model_version: Mapped[str] = mapped_column(String(100))
    class_name: Mapped[str] = mapped_column(String(40))
    png: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("sha256", "model_version", name="uq_heatmaps_sha_model"),)


REVIEW_CLASSES: tuple[str, ...] = (*CLASS_NAMES, "other")
REVIEW_BASES: tuple[str, ...] = ("histopathology", "expert consensus", "follow-up")


class Review(Base):
    """A confirmed diagnosis of one image content, append-only: a correction is a new row that
    names the row it supersedes, and both stay. The current diagnosis of a content is its newest
    row that nothing supersedes."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # The job in which the image was reviewed (its site is the job's).
    job_id: Mapped[str | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"), index=True)
    image_path: Mapped[str] = mapped_column(Text)
    diagnosis: Mapped[str] = mapped_column(String(40))
    basis: Mapped[str] = mapped_column(String(30))
    note: Mapped[str | None] = mapped_column(Text)
    reviewer: Mapped[str] = mapped_column(String(100))
    via: Mapped[str] = mapped_column(String(20))  # viewer | import
    supersedes: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"), unique=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (
        CheckConstraint(
            "diagnosis IN (" + ", ".join(f"'{c}'" for c in REVIEW_CLASSES) + ")", name="ck_reviews_diagnosis"
        ),
        CheckConstraint("basis IN (" + ", ".join(f"'{b}'" for b in REVIEW_BASES) + ")", name="ck_reviews_basis"),
    )


class OperatingPoint(Base):
    """A clinic's own melanoma flag threshold for one model version, chosen on its reviewed cases
    for a target sensitivity. ``scope`` is ``site NAME`` or ``root PATH``; the worker applies it to
    the images of that site's jobs (or under that folder) that this version scores."""

    __tablename__ = "operating_points"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    scope: Mapped[str] = mapped_column(String(300))
    model_version: Mapped[str] = mapped_column(String(100))
    threshold: Mapped[float] = mapped_column(Float)
    target_sensitivity: Mapped[float] = mapped_column(Float)
    cases: Mapped[int] = mapped_column(Integer)
    melanomas: Mapped[int] = mapped_column(Integer)
    set_by: Mapped[str] = mapped_column(String(100))
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (UniqueConstraint("scope", "model_version", name="uq_operating_points_scope_version"),)


class AuditEvent(Base):
    """Who changed what, when and from where: every review written (viewer or import), every
    operating point set or cleared, and every refused write."""

    __tablename__ = "audit_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(100))
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str | None] = mapped_column(Text)
    remote: Mapped[str | None] = mapped_column(String(100))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
