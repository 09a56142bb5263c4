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


def _key(prediction_id: int) -> str:
    return f"melanoma:explain:{prediction_id}"


FAILED = "failed: "


def request(app: Any, prediction_id: int) -> str | None:
    """Ask a worker to make the heat map of one prediction, unless one was asked for recently.
    Returns why a recent attempt made none (for the viewer to say), else None."""
    from melanoma.broker import EXPLAIN_TASK

    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        fresh = client.set(_key(prediction_id), "asked", nx=True, ex=REQUEST_TTL_S)
        state = None if fresh else client.get(_key(prediction_id))
    if fresh:
        app.send_task(EXPLAIN_TASK, args=[prediction_id], ignore_result=True)
        return None
    text = state.decode() if isinstance(state, bytes) else (state or "")
    return text.removeprefix(FAILED) if text.startswith(FAILED) else None


def report_failure(client: Any, prediction_id: int, reason: str) -> None:
    """Record why no heat map could be made (the viewer shows it; asking again after
    ``REQUEST_TTL_S`` seconds retries, in case the file came back)."""
    client.set(_key(prediction_id), FAILED + reason, ex=REQUEST_TTL_S)
