"""Queueing (the message format itself is checked in test_kombu_internals.py)."""

import json
import uuid

import redis

from melanoma.pipeline.broker import broker_client, enqueue
from melanoma.pipeline.transport import FLUSH_HEADER


def test_enqueue_nothing(redis_url):
    assert enqueue(broker_client(redis_url), "empty", []) == 0


def test_only_a_jobs_last_message_asks_the_worker_to_flush(redis_url):
    queue = "q-" + uuid.uuid4().hex[:8]
    assert enqueue(broker_client(redis_url), queue, range(20), chunk=8, per_message=8) == 20
    r = redis.Redis.from_url(redis_url)
    stored = [json.loads(m) for m in reversed(r.lrange(queue, 0, -1))]  # LPUSH: newest first
    r.delete(queue)
    assert [FLUSH_HEADER in m["headers"] for m in stored] == [False, False, True]
    assert stored[-1]["headers"][FLUSH_HEADER] is True
