"""The viewer's Grad-CAM heat maps: made once per image content and model version by the worker
(Celery task ``melanoma.explain``, which already holds TensorFlow; :func:`melanoma.ml.explain.store`),
kept in the ``heatmaps`` table and read here without TensorFlow. Asking a worker for one is the
pipeline's (:func:`melanoma.pipeline.broker.request_heatmap`)."""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select

from melanoma.store.db import session_scope
from melanoma.store.schema import Heatmap

log = logging.getLogger(__name__)
MAX_SIDE = 768


def stored(engine: Engine, sha256: str | None, version: str | None) -> Heatmap | None:
    """The stored heat map of this content under this version, if one was made."""
    if not sha256 or not version:
        return None
    with session_scope(engine) as s:
        row = s.scalars(select(Heatmap).where(Heatmap.sha256 == sha256, Heatmap.model_version == version)).first()
        if row is not None:
            s.expunge(row)
        return row
