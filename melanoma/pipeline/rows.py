"""The columns a worker writes for one image: a scored row (class, probabilities, flag at the
threshold that applies, familiarity) or an error row (the reason)."""

from __future__ import annotations

from typing import Any

import numpy as np

from melanoma.core.decision import predicted_classes
from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.store.schema import utcnow

MELANOMA = CLASS_NAMES.index("melanoma")
_EMPTY = (
    "predicted_class",
    "confidence",
    "model_version",
    "melanoma_flag",
    "flag_threshold",
    "flag_scope",
    "familiarity",
    "unfamiliar",
    "test_time",
)


def ok_row(
    row_id: int,
    sha: str | None,
    scored: tuple[Any, float | None],
    version: str,
    host: str,
    reused: bool,
    threshold: tuple[float | None, str | None],
    unfamiliar_percentile: float,
    weights: list[float] | None = None,
    test_time: str | None = None,
) -> dict[str, Any]:
    """The row of a scored image; ``scored`` is (probabilities, familiarity percentile or None),
    ``threshold`` the melanoma flag's threshold and whose it is (melanoma.store.thresholds),
    ``weights`` the version's decision weights (the class given; melanoma.core.decision),
    ``test_time`` how it was scored when not as one plain view (the predictor's ``test_time``)."""
    probs, familiarity = np.asarray(scored[0], dtype=np.float64), scored[1]
    top = int(predicted_classes(probs, weights))
    at, scope = threshold
    row = {
        "id": row_id,
        "status": "ok",
        "error": None,
        "sha256": sha,
        "predicted_class": CLASS_NAMES[top],
        "confidence": float(probs[top]),
        "model_version": version,
        "test_time": test_time,
        "worker_host": host,
        "reused": reused,
        "scored_at": utcnow(),
        "melanoma_flag": None if at is None else bool(probs[MELANOMA] >= at),
        "flag_threshold": at,
        "flag_scope": scope,
        "familiarity": None if familiarity is None else float(familiarity),
        "unfamiliar": None if familiarity is None else bool(familiarity > unfamiliar_percentile),
    }
    row.update({c: float(v) for c, v in zip(PROB_COLUMNS, probs)})
    return row


def error_row(row_id: int, reason: str, sha: str | None, host: str) -> dict[str, Any]:
    """The row of an image that could not be scored, with the reason."""
    return {
        "id": row_id,
        "status": "error",
        "error": reason[:500],
        "sha256": sha,
        "worker_host": host,
        "reused": False,
        "scored_at": utcnow(),
        **{c: None for c in (*_EMPTY, *PROB_COLUMNS)},
    }
