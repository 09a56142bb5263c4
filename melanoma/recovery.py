"""Queue again the images whose message the broker lost.

kombu's Redis transport takes a message off the queue and records it as unacknowledged in two
steps. A message caught between them when the worker is killed, or when Redis goes away (kombu's
attempt to put it back then fails too), is gone from Redis, while the database still says
"pending". Once the queue has drained and none of its messages is unacknowledged (every message
that survived has been delivered and finished, or restored after the visibility timeout), a row
that has been pending for longer than that has no message anywhere: it is queued again. A
duplicate would be harmless: writes are idempotent and only touch pending rows.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime

from celery import Celery
from sqlalchemy import Engine, select

from melanoma.db import session_scope
from melanoma.queue import enqueue
from melanoma.schema import Prediction

log = logging.getLogger(__name__)


def broker_holds_messages(app: Celery) -> bool:
    """True while the task queue has messages or one of its messages is unacknowledged."""
    queue = app.conf.task_default_queue
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        if any(client.llen(channel._q_for_pri(queue, pri)) for pri in channel.priority_steps):
            return True
        # kombu keeps one unacknowledged hash per Redis database, shared by every queue in it;
        # each entry is [message, exchange, routing key], and our routing key is the queue name.
        return any(json.loads(v)[2] == queue for v in client.hvals(channel.unacked_key))


def requeue_lost(app: Celery, engine: Engine, since: datetime) -> int | None:
    """Queue again the rows pending since before ``since`` if the broker holds no message at all.

    Returns how many were queued, or None when the broker still holds messages (ask again later).
    """
    if broker_holds_messages(app):
        return None
    with session_scope(engine) as s:
        ids = s.scalars(select(Prediction.id).where(Prediction.status == "pending", Prediction.created_at < since)
                        .order_by(Prediction.id)).all()
    if ids:
        enqueue(app, ids)
        log.warning("queued %d pending images again: the broker had lost their messages", len(ids))
    return len(ids)
