"""The batched scoring task. TensorFlow and the model load once per worker process, after fork."""

from __future__ import annotations

import logging
import os
import threading
import time

from celery import bootsteps
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready
from celery_batches import Batches

from melanoma.core.errors import one_line
from melanoma.core.settings import get_settings
from melanoma.pipeline import telemetry
from melanoma.pipeline.broker import EXPLAIN_TASK, SCORE_TASK, message_ids
from melanoma.pipeline.transport import FLUSH_HEADER
from melanoma.worker.celery import app

log = logging.getLogger("melanoma.worker")
_settings = get_settings()
_scorer = None
_lock = threading.Lock()
# A batch that fails as a whole (not one bad image: those get error rows) is sent back to the
# queue this many times, with growing delays, before its rows are marked as errors.
MAX_ATTEMPTS = 5


class ReconnectSafeBatches(Batches):
    """celery-batches 0.11, safe across broker reconnects, that scores a job's last message at once.

    The library arms its repeating flush timer once per task instance, but the timer belongs to
    the consumer, which Celery rebuilds on reconnect: the old entry is gone while ``_tref`` still
    points at it, so a partial batch never flushes again (clokep/celery-batches#107, fixed after
    0.11). ``Strategy`` runs on every consumer (re)start, so the timer is re-armed there.
    """

    def Strategy(self, task, app, consumer):  # noqa: N802 (Celery's name)
        # Requests still buffered from the lost connection stay: they flush on the new timer.
        # Their acks fail (logged), and the broker may redeliver them; writes are idempotent.
        # Dropping them instead would lose a message that kombu popped from Redis but could not
        # yet record as unacknowledged when the connection died.
        self._tref = None
        buffer = super().Strategy(task, app, consumer)

        def buffer_or_flush(message, body, ack, reject, callbacks, **kw):
            buffer(message, body, ack, reject, callbacks, **kw)
            # A job's last message (melanoma.pipeline.broker.enqueue): nothing more of that job is coming,
            # so score what is held now rather than after MELANOMA_BATCH_WAIT. A one-image job
            # saves the whole wait; a large job's last partial batch goes at once.
            if (message.headers or {}).get(FLUSH_HEADER):
                self._do_flush()

        return buffer_or_flush


@worker_ready.connect
def _start_sweeper(**_kwargs):
    # Once per worker, in the main process (pool processes score; this one only watches).
    threading.Thread(target=_sweep_lost_messages, args=(app,), name="sweep-lost", daemon=True).start()
    threading.Thread(target=_reclaim_from_dead_workers, args=(app,), name="reclaim-dead", daemon=True).start()
    if _settings.metrics_port:
        telemetry.serve(_settings.metrics_port, queue_depth=_queue_depth)
        log.info("metrics on port %d (/metrics)", _settings.metrics_port)


def _queue_depth() -> int:
    from melanoma.pipeline.recovery import queued_messages

    return queued_messages(app)


@worker_process_shutdown.connect
def _forget_process_metrics(pid=None, **_kwargs):
    telemetry.mark_process_dead(pid or os.getpid())


class HeldMessages(bootsteps.StartStopStep):
    """Every heartbeat, publish the delivery tags this worker holds (melanoma.pipeline.recovery.publish_held),
    so that other workers can tell its messages from a dead worker's.

    A consumer step: it runs in the worker's event loop, where kombu's record of delivered
    messages lives, and restarts with the consumer after a broker reconnect.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent, **kwargs):
        super().__init__(parent, **kwargs)
        self.tref = None
        self.client = None

    def start(self, c):
        import redis

        self.client = redis.Redis.from_url(_settings.broker_url, socket_timeout=5)
        self.beat(c)
        self.tref = c.timer.call_repeatedly(_settings.heartbeat, self.beat, (c,))

    def beat(self, c):
        from melanoma.pipeline.recovery import publish_held
        from melanoma.pipeline.transport import delivered_tags

        try:
            publish_held(
                self.client,
                _settings.queue,
                c.hostname,
                delivered_tags(c.task_consumer.channel),
                ttl=_settings.reclaim_after,
            )
        except Exception as exc:  # the broker may be away; the next beat tries again
            log.warning("could not publish held messages: %s", one_line(exc))

    def stop(self, c):
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, c):
        # On a clean stop kombu hands the unacknowledged messages back itself.
        from melanoma.pipeline.recovery import forget_held

        self.stop(c)
        if self.client is not None:
            try:
                forget_held(self.client, _settings.queue, c.hostname)
            except Exception as exc:
                log.warning("could not drop held-message list: %s", one_line(exc))


app.steps["consumer"].add(HeldMessages)


def _reclaim_from_dead_workers(app) -> None:
    """Every heartbeat, put back on the queue the messages of workers whose heartbeat stopped
    (melanoma.pipeline.recovery.reclaim_dead); the first pass runs as the worker starts."""
    from melanoma.pipeline.recovery import reclaim_dead

    while True:
        try:
            reclaim_dead(app, grace_s=_settings.reclaim_after)
        except Exception as exc:
            log.warning("reclaiming dead workers' messages failed (trying again): %s", one_line(exc))
        time.sleep(_settings.heartbeat)


def _sweep_lost_messages(app) -> None:
    """Every ``lost_after`` seconds, while the broker holds none of the queue's messages, queue again
    the rows pending for longer than that (their messages were lost: a worker killed, or Redis
    restarted, between taking a message and recording it as unacknowledged; a producer killed
    while enqueueing)."""
    from datetime import timedelta

    from melanoma.pipeline.recovery import requeue_lost
    from melanoma.store import db
    from melanoma.store.schema import utcnow

    period = max(5, _settings.lost_after)
    engine = None
    while True:
        time.sleep(period)
        try:
            # An engine of this parent process's own; pool processes make theirs after fork.
            engine = engine or db.make_engine(_settings.database_url)
            requeue_lost(app, engine, utcnow() - timedelta(seconds=period))
        except Exception:
            log.exception("checking for messages lost by the broker failed; trying again")


def scorer():
    """This process's :class:`melanoma.pipeline.scoring.Scorer`, created on first use."""
    global _scorer
    with _lock:
        if _scorer is None:
            from melanoma.ml.predict import Predictor, configure_tensorflow
            from melanoma.pipeline.scoring import Scorer
            from melanoma.store import db
            from melanoma.versions.registry import Registry

            devices = configure_tensorflow(_settings.tf_threads)
            engine = db.get_engine()
            db.ensure_schema(engine)
            predictor = Predictor(
                Registry(_settings.model_dir),
                batch_size=_settings.batch_size,
                precision=_settings.precision,
                tta=_settings.tta,
                scales=_settings.tta_scales,
            )
            predictor.refresh()
            log.info(
                "worker process ready: model %s on %s, %s, test-time augmentation: %s",
                predictor.version,
                ", ".join(devices),
                _settings.precision,
                predictor.test_time or "off (one view at scale 1)",
            )
            _scorer = Scorer(engine, predictor, _settings)
        return _scorer


def _announce(job_ids: list[str]) -> None:
    # Wake whoever follows these jobs (`submit --wait`) now rather than at their next poll.
    from melanoma.pipeline.progress import announce

    if job_ids:
        with app.connection_for_write() as conn:
            announce(conn.default_channel.client, _settings.queue, job_ids)


@worker_process_init.connect
def _load_in_child(**_kwargs):
    # Load in each forked pool process, never in the parent: TensorFlow does not survive fork.
    try:
        scorer()
    except Exception:
        log.exception("worker process could not load the model; will retry on the first batch")


@app.task(
    base=ReconnectSafeBatches,
    name=SCORE_TASK,
    flush_every=_settings.messages_per_batch,
    flush_interval=_settings.batch_wait,
    acks_late=True,
    ignore_result=True,
)
def score_image(requests):
    """Score a batch of queued messages; each message's first argument lists ``predictions`` row ids."""
    by_attempt: dict[int, list[int]] = {}
    for r in requests:
        by_attempt.setdefault(int(r.kwargs.get("attempt", 0)), []).extend(message_ids(r.args))
    ids = [i for group in by_attempt.values() for i in group]
    started = time.monotonic()
    try:
        # The Celery node name (name@host) says which worker scored each row.
        report = scorer().score(ids, worker=getattr(requests[0], "hostname", None))
    except Exception as exc:
        # celery-batches acknowledges the messages whatever happens, so nothing may be
        # dropped here: send the ids back, or give up on them with an error row.
        reason = one_line(exc)
        log.exception("batch of %d images failed", len(ids))
        for attempt, group in by_attempt.items():
            if attempt + 1 < MAX_ATTEMPTS:
                app.send_task(
                    SCORE_TASK, args=[group], kwargs={"attempt": attempt + 1}, countdown=min(2**attempt * 5, 120)
                )
            else:
                try:
                    scorer().fail(group, f"scoring failed after {MAX_ATTEMPTS} attempts: {reason}")
                except Exception:
                    log.exception("could not mark %d images as failed", len(group))
        return None
    seconds = time.monotonic() - started
    telemetry.record_batch(report, seconds)
    _announce(report.jobs)
    log.info(
        "batch of %d images: %d scored, %d reused, %d errors, %d already done (model %s) in %.3f s: "
        "model %.3f s, waiting for decoding %.3f s",
        len(ids),
        report.scored,
        report.reused,
        report.errors,
        report.skipped,
        report.model_version,
        seconds,
        report.model_seconds,
        report.decode_seconds,
    )
    return None


_cams: dict = {}


def _cam_for(version: str):
    # One Grad-CAM model per version in this process (float32, whatever the scoring precision).
    if version not in _cams:
        from melanoma.ml.explain import GradCam
        from melanoma.versions.registry import Registry

        _cams[version] = GradCam(Registry(_settings.model_dir).load(version))
    return _cams[version]


@app.task(name=EXPLAIN_TASK, acks_late=True, ignore_result=True)
def explain_image(prediction_id: int) -> None:
    """Make the Grad-CAM heat map of one scored image for the viewer (stored in ``heatmaps``)."""
    from melanoma.ml.explain import store
    from melanoma.pipeline.broker import report_heatmap_failure

    made, outcome = store(scorer().engine, int(prediction_id), _settings, _cam_for)
    log.info("heat map of prediction %s: %s", prediction_id, outcome)
    if not made:
        with app.connection_for_write() as conn:
            report_heatmap_failure(conn.default_channel.client, int(prediction_id), outcome)
