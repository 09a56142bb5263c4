"""The Celery application's configuration, shared by the producer (which only sends) and the worker.

Importing this module does not import TensorFlow.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from celery import Celery

from melanoma.settings import Settings, get_settings

SCORE_TASK = "melanoma.score_image"


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
        # Prefetch enough for the batch being scored and the next; batching needs more than one.
        worker_prefetch_multiplier=s.prefetch_multiplier,
        broker_transport_options={"visibility_timeout": s.visibility_timeout},
        broker_connection_retry_on_startup=True,
        task_default_queue=s.queue,
        task_routes={SCORE_TASK: {"queue": s.queue}},
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


def enqueue(app: Celery, image_ids: Iterable[int], chunk: int = 1000,
            progress: Callable[[int], None] | None = None) -> int:
    """Send one scoring message per image id, pipelined ``chunk`` messages per broker round trip."""
    sent = 0
    with app.producer_or_acquire() as producer:
        with producer.batch(max_size=chunk):
            for image_id in image_ids:
                app.send_task(SCORE_TASK, args=[int(image_id)], producer=producer, ignore_result=True)
                sent += 1
                if progress is not None and sent % chunk == 0:
                    progress(chunk)
    if progress is not None and sent % chunk:
        progress(sent % chunk)
    return sent
