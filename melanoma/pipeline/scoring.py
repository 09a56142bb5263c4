"""Score a batch of queued images and write their rows: the worker's logic, without Celery.

Per batch: look up the rows, skip those already scored (a re-delivered message); then, one
model batch at a time and overlapped with the model, check each path against the allowed roots,
read and hash the file, reuse an earlier prediction of the same content by the same model
version, decode the rest and run the model; finally write every row of the batch in one
transaction. A bad image becomes an ``error`` row; the batch goes on.
"""

from __future__ import annotations

import logging
import socket
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
from sqlalchemy import Engine, Table, bindparam, select, update
from sqlalchemy.exc import IntegrityError

from melanoma.core import images
from melanoma.core.errors import ImageError
from melanoma.core.files import read_file, resolve_allowed, sha256
from melanoma.core.labels import PROB_COLUMNS
from melanoma.core.settings import Settings
from melanoma.pipeline import rows
from melanoma.store import thresholds
from melanoma.store.db import retry_db, session_scope
from melanoma.store.schema import ModelVersion, Prediction, utcnow

log = logging.getLogger(__name__)


@dataclass
class BatchReport:
    """What one call of :meth:`Scorer.score` did."""

    scored: int = 0
    reused: int = 0
    errors: int = 0
    skipped: int = 0
    unfamiliar: int = 0  # scored rows flagged unlike the version's validation images
    model_version: str | None = None
    reasons: dict[int, str] = field(default_factory=dict)
    decode_seconds: float = 0.0  # waiting for decoded images (not overlapped with the model)
    model_seconds: float = 0.0  # while at least one model call was running
    jobs: list[str] = field(default_factory=list)  # the jobs whose rows this batch wrote


class Scorer:
    """One worker process's model, database engine and settings."""

    def __init__(
        self, engine: Engine, predictor: Any, settings: Settings, host: str | None = None, db_retry_s: float = 300.0
    ) -> None:
        self.engine = engine
        self.predictor = predictor
        self.settings = settings
        self.host = host or socket.gethostname()
        self.db_retry_s = db_retry_s
        self._registered: set[str] = set()
        self.timing = {"decode": 0.0, "model": 0.0}
        self.limits = images.DecodeLimits(max_pixels=settings.max_image_pixels)
        # Pillow releases the GIL while it decodes and resizes: images decode in parallel on
        # every core the worker may use, while the model runs on the previous batch.
        self._decoder = ThreadPoolExecutor(max_workers=settings.decode_threads, thread_name_prefix="decode")
        # A second model call in flight keeps both cores busy: one call alone leaves them idle
        # between its layers (measured: +13-28 % images/s on 2 cores, identical outputs).
        self._model = ThreadPoolExecutor(max_workers=settings.model_calls, thread_name_prefix="model")

    def _register_version(self, session: Any) -> None:
        version = self.predictor.version
        if version in self._registered:
            return
        if session.get(ModelVersion, version) is None:
            meta = self.predictor.meta
            try:
                with session.begin_nested():
                    session.add(
                        ModelVersion(
                            version=version,
                            architecture=meta.architecture,
                            classes=list(meta.classes),
                            input_size=list(meta.input_size),
                            metrics=_summary(meta.metrics),
                            created_at=meta.created_at,
                        )
                    )
            except IntegrityError:
                pass  # another worker registered it first

    def score(self, image_ids: Sequence[int], worker: str | None = None) -> BatchReport:
        """Score the images with these row ids and write their rows; safe to call twice with the same ids.

        ``worker`` names who scored them in ``worker_host`` (default: this machine's host name).
        """
        report = BatchReport()
        host = worker or self.host
        ids = sorted(set(int(i) for i in image_ids))

        def load_rows() -> Any:
            with session_scope(self.engine) as s:
                return s.execute(
                    select(Prediction.id, Prediction.job_id, Prediction.image_path, Prediction.status).where(
                        Prediction.id.in_(ids)
                    )
                ).all()

        found = retry_db(load_rows, self.db_retry_s, "reading the batch")
        pending = [r for r in found if r.status == "pending"]
        report.skipped = len(ids) - len(pending)
        report.jobs = sorted({r.job_id for r in pending})
        if not pending:
            return report

        # Between batches is the one safe moment to switch to a newly promoted version.
        self.predictor.refresh()
        version = self.predictor.version
        report.model_version = version

        where = {r.id: (r.job_id, r.image_path) for r in pending}
        own = self.predictor.meta.melanoma_threshold
        weights = self.predictor.meta.decision_weights
        test_time = self.predictor.test_time

        def local_thresholds() -> thresholds.Thresholds:
            with session_scope(self.engine) as s:
                return thresholds.for_version(s, version, own, set(report.jobs))

        limits = retry_db(local_thresholds, self.db_retry_s, "reading the operating points")
        updates: dict[int, dict] = {}
        self.timing = {"decode": 0.0, "model": 0.0}
        for row_id, sha, outcome in self._run_model(pending, version):
            if isinstance(outcome, ImageError):
                updates[row_id] = rows.error_row(row_id, str(outcome), sha, host)
            else:
                at = limits.resolve(*where[row_id])
                percentile = self.settings.unfamiliar_percentile
                updates[row_id] = rows.ok_row(
                    row_id, sha, outcome[:2], version, host, outcome[2], at, percentile, weights, test_time
                )

        table = cast(Table, Prediction.__table__)
        columns = [k for k in next(iter(updates.values())) if k != "id"]
        # The status condition keeps a row that a twin delivery already wrote untouched.
        statement = (
            update(table)
            .where(table.c.id == bindparam("row_id"), table.c.status == "pending")
            .values(writes=table.c.writes + 1, **{c: bindparam(f"new_{c}") for c in columns})
        )
        params = [{"row_id": u["id"], **{f"new_{c}": u[c] for c in columns}} for u in updates.values()]

        def write() -> None:
            with session_scope(self.engine) as s:
                self._register_version(s)
                s.execute(statement, params)

        retry_db(write, self.db_retry_s, "writing results")
        report.decode_seconds, report.model_seconds = self.timing["decode"], self.timing["model"]
        # Only now is the version's row committed (a rolled-back attempt must register it again).
        self._registered.add(version)
        for u in updates.values():
            if u["status"] == "error":
                report.errors += 1
                report.reasons[u["id"]] = u["error"]
            elif u["reused"]:
                report.reused += 1
            else:
                report.scored += 1
            report.unfamiliar += bool(u.get("unfamiliar"))
        return report

    def _read(self, path: str) -> tuple[bytes, str] | ImageError:
        try:
            data = read_file(resolve_allowed(path, self.settings.allowed_roots), self.settings.max_file_bytes)
            return data, sha256(data)
        except ImageError as exc:
            return exc

    def _decode_one(self, data: bytes, size: tuple[int, int] = images.IMAGE_SIZE) -> np.ndarray | ImageError:
        try:
            return images.decode(data, size, limits=self.limits)
        except ImageError as exc:
            return exc

    def _stage(self, rows: Sequence[Any], version: str) -> list[tuple[int, str | None, Any]]:
        """Read and hash one model batch's files, look up earlier predictions of the same content,
        and start decoding the rest. Runs on a decode thread, so that it overlaps the model.
        Returns ``(row_id, sha, ImageError | (probabilities, familiarity) | Future of the decoded image)``."""
        read = [(r.id, self._read(r.image_path)) for r in rows]
        size = (int(self.predictor.meta.input_size[0]), int(self.predictor.meta.input_size[1]))
        shas = {x[1] for _, x in read if not isinstance(x, ImageError)}
        known = retry_db(lambda: self._known(version, shas), self.db_retry_s, "looking up earlier predictions")
        staged: list[tuple[int, str | None, Any]] = []
        for row_id, x in read:
            if isinstance(x, ImageError):
                staged.append((row_id, None, x))
            elif x[1] in known:
                staged.append((row_id, x[1], known[x[1]]))
            else:
                # Only the decode holds the file's bytes from here: a batch of full-size originals
                # is never all in memory at once.
                staged.append((row_id, x[1], self._decoder.submit(self._decode_one, x[0], size)))
        return staged

    def _predict(self, batch: np.ndarray, spans: list[tuple[float, float]]) -> Any:
        """``(row, (probabilities, familiarity percentile or None))`` pairs' second halves, one per image."""
        t0 = time.perf_counter()
        try:
            probs, familiarity = self.predictor.assess(batch)
            return list(zip(probs, familiarity if familiarity is not None else [None] * len(probs)))
        finally:
            spans.append((t0, time.perf_counter()))

    def _run_model(self, rows: Sequence[Any], version: str) -> Any:
        """Score ``rows`` a model batch at a time, overlapping every step with the model: while it
        runs, the decode threads read, hash and decode the next model batches' files, and up to
        ``MELANOMA_MODEL_CALLS`` model calls run at once (file reads, hashlib, Pillow and
        TensorFlow all release the GIL). Yields ``(row_id, sha, ImageError)`` or
        ``(row_id, sha, (probabilities, familiarity percentile or None, reused))``."""
        size = self.predictor.batch_size
        chunks = [rows[i : i + size] for i in range(0, len(rows), size)]
        if not chunks:
            return
        spans: list[tuple[float, float]] = []  # this call's own: a failed batch's stray calls stay out
        running: deque[tuple[list[tuple[int, str | None]], Future]] = deque()
        upcoming = self._decoder.submit(self._stage, chunks[0], version)
        for k in range(len(chunks)):
            t0 = time.perf_counter()
            staged = upcoming.result()
            # Queued behind this batch's decodes: the next batch's reads never delay them.
            if k + 1 < len(chunks):
                upcoming = self._decoder.submit(self._stage, chunks[k + 1], version)
            ok: list[tuple[int, str | None, np.ndarray]] = []
            for row_id, sha, x in staged:
                if isinstance(x, Future):
                    x = x.result()
                    if isinstance(x, np.ndarray):
                        ok.append((row_id, sha, x))
                        continue
                yield row_id, sha, x if isinstance(x, ImageError) else (*x, True)
            self.timing["decode"] += time.perf_counter() - t0
            if len(running) >= self.settings.model_calls:
                done, future = running.popleft()
                yield from ((row_id, sha, (*p, False)) for (row_id, sha), p in zip(done, future.result()))
            if ok:
                batch = np.stack([a for _, _, a in ok])
                running.append(
                    ([(row_id, sha) for row_id, sha, _ in ok], self._model.submit(self._predict, batch, spans))
                )
        while running:
            done, future = running.popleft()
            yield from ((row_id, sha, (*p, False)) for (row_id, sha), p in zip(done, future.result()))
        self.timing["model"] += _covered(spans)

    def _known(self, version: str, shas: set[str]) -> dict[str, tuple[np.ndarray, float | None]]:
        """Probabilities and familiarity of earlier predictions of these contents by ``version``,
        scored the way this worker scores (its views and scales)."""
        if not shas:
            return {}
        cols = [getattr(Prediction, c) for c in PROB_COLUMNS]
        test_time = self.predictor.test_time
        same_way = Prediction.test_time.is_(None) if test_time is None else Prediction.test_time == test_time
        with session_scope(self.engine) as s:
            found = s.execute(
                select(Prediction.sha256, Prediction.familiarity, *cols).where(
                    Prediction.sha256.in_(shas),
                    Prediction.model_version == version,
                    Prediction.status == "ok",
                    same_way,
                )
            ).all()
        return {row[0]: (np.asarray(row[2:], dtype=np.float64), row[1]) for row in found}

    def fail(self, image_ids: Sequence[int], reason: str) -> None:
        """Give still-pending rows an error after scoring them failed for good."""
        ids = [int(i) for i in image_ids]
        with session_scope(self.engine) as s:
            s.execute(
                update(Prediction)
                .where(Prediction.id.in_(ids), Prediction.status == "pending")
                .values(status="error", error=reason[:500], worker_host=self.host, scored_at=utcnow())
                .values(writes=Prediction.writes + 1)
            )


def _covered(spans: list[tuple[float, float]]) -> float:
    """Seconds during which at least one of the ``(start, end)`` spans was running."""
    total, reached = 0.0, float("-inf")
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total


def _summary(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
