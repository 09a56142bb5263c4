"""The broker: the Celery application's configuration (the worker's) and the producer's side,
which queues images with redis-py alone.

Importing this module imports neither TensorFlow nor Celery: the producer never needs Celery
(kombu's Redis transport alone takes a quarter of a second to import).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from melanoma.core.settings import Settings, get_settings
from melanoma.pipeline import transport

if TYPE_CHECKING:
    import redis
    from celery import Celery

SCORE_TASK = "melanoma.score_image"
# Grad-CAM heat map of one scored image, for the viewer (melanoma.store.heatmaps).
EXPLAIN_TASK = "melanoma.explain"


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured for scoring: JSON only, late acks, no result backend."""
    from celery import Celery

    s = settings or get_settings()
    app = Celery("melanoma", broker=s.broker_url, set_as_current=False)
    app.conf.update(
        # JSON only: a pickled message from anyone who can reach Redis would be code execution.
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        event_serializer="json",
        # The SQL table is the result.
        task_ignore_result=True,
        result_backend=None,
        # Ack only after the batch's rows are committed; a killed worker's messages come back.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # Prefetch enough messages for the batch being scored and the next; batching needs more than one.
        worker_prefetch_multiplier=s.prefetch_multiplier,
        # After a broker reconnect Celery would shrink the prefetch count and grow it back as
        # tasks finish; with batched tasks it stayed shrunk and the worker stopped consuming
        # (seen in our Redis-restart fault test; celery/celery#8030, #10205).
        worker_enable_prefetch_count_reduction=False,
        broker_transport_options={
            "visibility_timeout": s.visibility_timeout,
            # The lock that guards re-queueing of unacknowledged messages is kept in Redis with
            # this expiry; after a Redis restart (AOF) a stale lock blocked recovery for its full
            # default of 5 minutes. It need not outlive one visibility timeout.
            "unacked_mutex_expire": min(300, s.visibility_timeout),
            # Look for expired unacknowledged messages every few seconds (kombu's default sweep is
            # about every 100 s), so that recovery takes about one visibility timeout.
            "unacked_restore_interval": max(1, min(30, s.visibility_timeout // 4)),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        task_default_queue=s.queue,
        task_routes={SCORE_TASK: {"queue": s.queue}, EXPLAIN_TASK: {"queue": s.queue}},
        # TensorFlow and the model load in each pool process at start-up; that takes longer
        # than Celery's default 4 s start-up allowance.
        worker_proc_alive_timeout=120,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
    )
    return app


def broker_client(url: str | None = None, timeout: float = 5.0) -> redis.Redis:
    """A redis-py client for the broker at ``url`` (default: the settings'), with ``timeout``
    seconds to connect and per command."""
    import redis

    return redis.Redis.from_url(
        url or get_settings().broker_url, socket_connect_timeout=timeout, socket_timeout=timeout
    )


def check_broker(client: redis.Redis) -> None:
    """Raise if the broker cannot be reached (fails fast instead of retrying for minutes)."""
    client.ping()


def _groups(ids: Iterable[int], size: int) -> Iterator[list[int]]:
    group: list[int] = []
    for i in ids:
        group.append(int(i))
        if len(group) == size:
            yield group
            group = []
    if group:
        yield group


def enqueue(
    client: redis.Redis,
    queue: str,
    image_ids: Iterable[int],
    chunk: int = 1000,
    per_message: int = 8,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Queue the images on ``queue``, ``per_message`` row ids per message and ``chunk`` images per
    Redis round trip; returns the number of images queued.

    A message holds a few images so that a worker's per-message cost is shared; workers still
    batch messages together, and a small job's images are not held back: the last message carries
    the flush header, so the worker that takes it scores what it holds without waiting for more.
    Messages are written straight into the queue's Redis list in pipelined batches, in the format
    kombu's Redis transport reads (:mod:`melanoma.pipeline.transport`).
    """
    template = transport.message_template(SCORE_TASK, queue)
    key = transport.queue_key(queue)
    sent = pending = 0
    pipe = client.pipeline(transaction=False)
    groups = _groups(image_ids, max(1, per_message))
    group = next(groups, None)
    while group is not None:
        following = next(groups, None)
        pipe.lpush(key, transport.stored_message(template, group, flush=following is None))
        pending += len(group)
        if pending >= chunk or following is None:
            pipe.execute()
            sent += pending
            if progress is not None:
                progress(pending)
            pending = 0
        group = following
    return sent


def message_ids(args: list) -> list[int]:
    """The row ids a score message carries (a list of ids; a bare id from older producers)."""
    first = args[0] if args else []
    return [int(i) for i in first] if isinstance(first, list) else [int(first)]


# A heat-map request for the same image within this many seconds is not queued again.
REQUEST_TTL_S = 120


def _heatmap_key(prediction_id: int) -> str:
    return f"melanoma:explain:{prediction_id}"


HEATMAP_FAILED = "failed: "


def request_heatmap(app: Any, prediction_id: int) -> str | None:
    """Ask a worker to make the heat map of one prediction, unless one was asked for recently.
    Returns why a recent attempt made none (for the viewer to say), else None."""
    with app.connection_for_write() as conn:
        client = conn.default_channel.client
        fresh = client.set(_heatmap_key(prediction_id), "asked", nx=True, ex=REQUEST_TTL_S)
        state = None if fresh else client.get(_heatmap_key(prediction_id))
    if fresh:
        app.send_task(EXPLAIN_TASK, args=[prediction_id], ignore_result=True)
        return None
    text = state.decode() if isinstance(state, bytes) else (state or "")
    return text.removeprefix(HEATMAP_FAILED) if text.startswith(HEATMAP_FAILED) else None


def report_heatmap_failure(client: Any, prediction_id: int, reason: str) -> None:
    """Record why no heat map could be made (the viewer shows it; asking again after
    ``REQUEST_TTL_S`` seconds retries, in case the file came back)."""
    client.set(_heatmap_key(prediction_id), HEATMAP_FAILED + reason, ex=REQUEST_TTL_S)
