"""The viewer's Grad-CAM heat maps: made once per image content and model version by the worker
(Celery task ``melanoma.explain``, which already holds TensorFlow; :func:`melanoma.explain.store`),
kept in the ``heatmaps`` table, read and requested here without TensorFlow."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Engine, select

from melanoma.db import session_scope
from melanoma.schema import Heatmap

log = logging.getLogger(__name__)
MAX_SIDE = 768
# A request for the same image within this many seconds is not queued again.
REQUEST_TTL_S = 120


def stored(engine: Engine, sha256: str | None, version: str | None) -> Heatmap | None:
    """The stored heat map of this content under this version, if one was made."""
    if not sha256 or not version:
        return None
    with session_scope(engine) as s:
        row = s.scalars(select(Heatmap).where(Heatmap.sha256 == sha256, Heatmap.model_version == version)).first()
        if row is not None:
            s.expunge(row)
        return row


def request(app: Any, prediction_id: int) -> bool:
    """Ask a worker to make the heat map of one prediction; False when one was asked for recently."""
    from melanoma.broker import EXPLAIN_TASK

    with app.connection_for_write() as conn:
        fresh = conn.default_channel.client.set(f"melanoma:explain:{prediction_id}", "1", nx=True, ex=REQUEST_TTL_S)
    if fresh:
        app.send_task(EXPLAIN_TASK, args=[prediction_id], ignore_result=True)
    return bool(fresh)
