"""The Celery application's configuration, shared by the producer (which only sends) and the worker.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from celery import Celery

from melanoma import transport
from melanoma.settings import Settings, get_settings

SCORE_TASK = "melanoma.score_image"
# Grad-CAM heat map of one scored image, for the viewer (melanoma.heatmaps).
EXPLAIN_TASK = "melanoma.explain"


def make_celery(settings: Settings | None = None) -> Celery:
    """A Celery app configured for scoring: JSON only, late acks, no result backend."""
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


def check_broker(app: Celery, timeout: float = 5.0) -> None:
    """Raise if the broker cannot be reached (fails fast instead of retrying for minutes)."""
    with app.connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=timeout)
        conn.default_channel.client.ping()


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
    app: Celery,
    image_ids: Iterable[int],
    chunk: int = 1000,
    per_message: int = 8,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Queue the images, ``per_message`` row ids per message and ``chunk`` images per Redis round trip.

    A message holds a few images so that a worker's per-message cost is shared; workers still
    batch messages together, and a small job's images are not held back. The first message goes
    through ``send_task`` (which also declares the queue); the rest are the same message with new
    ids, written straight into the queue in pipelined batches (:mod:`melanoma.transport`):
    Celery's per-message publishing path caps a producer near 10,000 messages a second. Returns the
    number of images queued.
    """
    groups = _groups(image_ids, max(1, per_message))
    first = next(groups, None)
    if first is None:
        return 0
    sent = 0

    def done(n: int) -> None:
        nonlocal sent
        sent += n
        if progress is not None:
            progress(n)

    app.send_task(SCORE_TASK, args=[first], ignore_result=True)
    done(len(first))
    template, queue = transport.message_template(app, SCORE_TASK)
    with app.connection_for_write() as conn:
        pipe = conn.default_channel.client.pipeline(transaction=False)
        pending = 0
        for group in groups:
            pipe.lpush(queue, transport.stored_message(template, group))
            pending += len(group)
            if pending >= chunk:
                pipe.execute()
                done(pending)
                pending = 0
        if pending:
            pipe.execute()
            done(pending)
    return sent


def message_ids(args: list) -> list[int]:
    """The row ids a score message carries (a list of ids; a bare id from older producers)."""
    first = args[0] if args else []
    return [int(i) for i in first] if isinstance(first, list) else [int(first)]
