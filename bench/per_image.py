"""The baseline to beat: the common design that runs one Celery task per image and calls the
model on one image at a time — done well (model loaded once per process, compiled call of fixed
shape, same decode and database code). It consumes the same messages as the real worker:

    celery -A bench.per_image worker -c 1
"""

from __future__ import annotations

from celery.signals import worker_process_init

from melanoma.core.settings import get_settings
from melanoma.pipeline.broker import SCORE_TASK, make_celery, message_ids
from melanoma.pipeline.progress import announce

app = make_celery()
app.conf.worker_prefetch_multiplier = 4  # Celery's default: no batching to feed
_scorer = None


def scorer():
    global _scorer
    if _scorer is None:
        from melanoma.ml.predict import Predictor, configure_tensorflow
        from melanoma.pipeline.scoring import Scorer
        from melanoma.store import db
        from melanoma.versions.registry import Registry

        s = get_settings()
        configure_tensorflow(s.tf_threads)
        predictor = Predictor(Registry(s.model_dir), batch_size=1, precision=s.precision)
        predictor.refresh()
        print("worker process ready", flush=True)
        _scorer = Scorer(db.get_engine(), predictor, s)
    return _scorer


@worker_process_init.connect
def _load(**_):
    scorer()


@app.task(name=SCORE_TASK, acks_late=True, ignore_result=True)
def score_one(image_ids, attempt: int = 0) -> None:
    # the benchmark queues one image per message (MELANOMA_IMAGES_PER_MESSAGE=1)
    for image_id in message_ids([image_ids]):
        report = scorer().score([image_id])
        # Announced as the real worker does, so the benchmark sees both designs' last row as soon.
        with app.connection_for_write() as conn:
            announce(conn.default_channel.client, get_settings().queue, report.jobs)
