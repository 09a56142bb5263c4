"""The producer's pipelined messages are the messages Celery itself would send."""

import base64
import json
import uuid

import redis

from melanoma.broker import SCORE_TASK, enqueue, make_celery
from melanoma.settings import Settings

IDS = ("id", "root_id", "argsrepr", "correlation_id", "delivery_tag", "origin", "reply_to")


def _strip(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    for part in ("headers", "properties"):
        for k in IDS:
            m[part].pop(k, None)
    m["body"] = json.loads(base64.b64decode(m["body"]))
    return m


def test_pipelined_messages_match_celerys(redis_url):
    queue = "q-" + uuid.uuid4().hex[:8]
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": queue}))
    progress = []
    assert enqueue(app, [11, 12, 13, 14, 15], chunk=2, per_message=2, progress=progress.append) == 5
    assert sum(progress) == 5
    r = redis.Redis.from_url(redis_url)
    stored = [json.loads(m) for m in reversed(r.lrange(queue, 0, -1))]  # LPUSH: newest first
    r.delete(queue)
    app.send_task(SCORE_TASK, args=[[16, 17]], ignore_result=True)
    reference = json.loads(r.lrange(queue, 0, -1)[0])
    r.delete(queue)
    assert [json.loads(base64.b64decode(m["body"]))[0] for m in stored] == [[[11, 12]], [[13, 14]], [[15]]]
    for m in stored:
        got, want = _strip(m), _strip(reference)
        got["body"][0] = want["body"][0] = None
        assert got == want
        assert m["headers"]["id"] == m["headers"]["root_id"] == m["properties"]["correlation_id"]
    assert len({m["headers"]["id"] for m in stored}) == 3
    assert len({m["properties"]["delivery_tag"] for m in stored}) == 3


def test_enqueue_nothing(redis_url):
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": "empty"}))
    assert enqueue(app, []) == 0
