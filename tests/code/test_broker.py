"""Queueing (the message format itself is checked in test_kombu_internals.py)."""

from melanoma.broker import enqueue, make_celery
from melanoma.settings import Settings


def test_enqueue_nothing(redis_url):
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": "empty"}))
    assert enqueue(app, []) == 0
