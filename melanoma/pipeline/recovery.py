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

import logging
import time
from datetime import datetime
from typing import Any

from celery import Celery
from sqlalchemy import Engine, select

from melanoma.pipeline import transport
from melanoma.pipeline.broker import enqueue
from melanoma.store.db import session_scope
from melanoma.store.schema import Prediction

log = logging.getLogger(__name__)


def queued_messages(app: Celery) -> int:
    """Messages waiting in the app's queue (all priorities)."""
    with app.connection_for_write() as conn:
        return transport.queue_length(conn.default_channel, app.conf.task_default_queue)


def broker_holds_messages(app: Celery) -> bool:
    """True while the task queue has messages or one of its messages is unacknowledged."""
    queue = app.conf.task_default_queue
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return bool(transport.queue_length(channel, queue)) or transport.has_unacked(channel, queue)


def requeue_lost(app: Celery, engine: Engine, since: datetime) -> int | None:
    """Queue again the rows pending since before ``since`` if the broker holds no message at all.

    Returns how many were queued, or None when the broker still holds messages (ask again later).
    """
    if broker_holds_messages(app):
        return None
    with session_scope(engine) as s:
        ids = s.scalars(
            select(Prediction.id)
            .where(Prediction.status == "pending", Prediction.created_at < since)
            .order_by(Prediction.id)
        ).all()
    if ids:
        with app.connection_for_write() as conn:
            enqueue(conn.default_channel.client, app.conf.task_default_queue, ids)
        log.warning("queued %d pending images again: the broker had lost their messages", len(ids))
    return len(ids)


# --- Dead-worker reclaim -------------------------------------------------------------------------
# kombu returns a dead consumer's unacknowledged messages only after the visibility timeout (an
# hour by default). Each worker therefore publishes, every heartbeat, the delivery tags it holds
# under a key that expires after a few heartbeats. A message that has been unacknowledged for
# longer than that, and that no live worker claims, belongs to a dead worker: any live worker
# puts it back on the queue at once. A live worker that was merely slow would see its message
# scored twice, which the idempotent writes make harmless.

HOLDER_PREFIX = "melanoma:holder:"
RECLAIM_LOCK = "melanoma:reclaim-lock"


def holder_key(queue: str, node: str) -> str:
    """The Redis key under which worker ``node`` lists the delivery tags it holds from ``queue``."""
    return f"{HOLDER_PREFIX}{queue}:{node}"


def publish_held(client: Any, queue: str, node: str, tags: list[str], ttl: int) -> None:
    """Replace ``node``'s list of held delivery tags, expiring after ``ttl`` seconds without a refresh."""
    key = holder_key(queue, node)
    pipe = client.pipeline(transaction=True)
    pipe.delete(key)
    # A worker holding nothing still says it is alive (the empty string is never a tag).
    pipe.sadd(key, "", *tags)
    pipe.expire(key, ttl)
    pipe.execute()


def forget_held(client: Any, queue: str, node: str) -> None:
    """Drop ``node``'s list (a worker stopping cleanly has handed its messages back)."""
    client.delete(holder_key(queue, node))


def claimed_tags(client: Any, queue: str) -> set[str]:
    """Every delivery tag a live worker of ``queue`` holds."""
    tags: set[str] = set()
    for key in client.scan_iter(match=f"{HOLDER_PREFIX}{queue}:*", count=100):
        tags.update(t.decode() if isinstance(t, bytes) else t for t in client.smembers(key))
    tags.discard("")
    return tags


def reclaim_dead(app: Celery, grace_s: float) -> int:
    """Put back on the queue every message of this app's queue that has been unacknowledged for
    longer than ``grace_s`` and that no live worker holds. Returns how many were restored."""
    queue = app.conf.task_default_queue
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        client = channel.client
        # One reclaimer at a time; the lock expires by itself if its holder dies.
        if not client.set(RECLAIM_LOCK + ":" + queue, "1", nx=True, ex=max(5, int(grace_s))):
            return 0
        try:
            old = transport.unacked_since(channel, time.time() - grace_s)
            if not old:
                return 0
            live = claimed_tags(client, queue)
            restored = 0
            for tag in old:
                if tag in live or transport.unacked_queue_of(channel, tag) != queue:
                    continue  # a live worker's, acknowledged meanwhile, or another queue's message
                transport.restore(channel, tag)
                restored += 1
            if restored:
                log.warning("put %d messages of dead workers back on queue %s", restored, queue)
            return restored
        finally:
            client.delete(RECLAIM_LOCK + ":" + queue)
