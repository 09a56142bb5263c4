"""Rows whose message the broker lost are queued again, but only once the broker holds nothing."""

import json
import uuid
from datetime import timedelta

import pytest
import redis

from melanoma.core.settings import Settings
from melanoma.pipeline.broker import enqueue, make_celery, message_ids
from melanoma.pipeline.recovery import requeue_lost
from melanoma.store import db, jobs
from melanoma.store.schema import utcnow
from tests.conftest import copy_images

pytestmark = pytest.mark.e2e  # a real redis-server, and a worker in the last test


def _queued_ids(r: redis.Redis, queue: str) -> list[int]:
    import base64

    ids = []
    for raw in r.lrange(queue, 0, -1):
        body = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.extend(message_ids(body[0]))
    return sorted(ids)


def test_requeue_lost_waits_for_an_idle_broker(tmp_path, redis_url, sqlite_url):
    queue = "q-" + uuid.uuid4().hex[:8]
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": queue}))
    engine = db.make_engine(sqlite_url)
    db.ensure_schema(engine)
    copy_images(tmp_path / "imgs", 2, ["nevus", "melanoma"])
    with db.session_scope(engine) as s:
        _, ids = jobs.create_job(s, tmp_path / "imgs", jobs.discover(tmp_path / "imgs"), None)
    r = redis.Redis.from_url(redis_url)

    # A message still queued: the broker has not lost anything yet, so nothing is added.
    enqueue(r, queue, ids[:1])
    assert requeue_lost(app, engine, utcnow() + timedelta(seconds=1)) is None
    assert _queued_ids(r, queue) == ids[:1]

    # Unacknowledged (a worker holds it): still nothing. Another queue's entry does not count.
    r.delete(queue)
    r.hset("unacked", "tag-" + queue, json.dumps([{}, queue, queue]))
    assert requeue_lost(app, engine, utcnow() + timedelta(seconds=1)) is None
    r.hdel("unacked", "tag-" + queue)
    r.hset("unacked", "tag-other-" + queue, json.dumps([{}, "other", "other"]))

    # Queue drained, nothing unacknowledged, rows still pending: every one is queued again.
    assert requeue_lost(app, engine, utcnow() + timedelta(seconds=1)) == len(ids)
    assert _queued_ids(r, queue) == sorted(ids)

    # Rows created after the reconnect are not the broker's loss.
    r.delete(queue)
    assert requeue_lost(app, engine, utcnow() - timedelta(hours=1)) == 0
    assert r.llen(queue) == 0
    r.hdel("unacked", "tag-other-" + queue)


def test_a_running_worker_requeues_rows_whose_message_was_lost(
    tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker
):
    from tests.conftest import service_env, wait_complete

    copy_images(tmp_path / "imgs", 2, ["nevus", "melanoma"])
    env = service_env(
        tmp_path, sqlite_url, redis_url, shipped_model_dir, [tmp_path / "imgs"], MELANOMA_VISIBILITY_TIMEOUT="5"
    )
    engine = db.make_engine(sqlite_url)
    db.ensure_schema(engine)
    # Rows recorded, messages never sent: what a lost message leaves behind.
    with db.session_scope(engine) as s:
        job, ids = jobs.create_job(s, tmp_path / "imgs", jobs.discover(tmp_path / "imgs"), None)
    worker = start_worker(env)
    st = wait_complete(env, job, timeout=120)
    assert st["done"] == len(ids) and st["failed"] == 0
    assert "pending images again" in worker.log()


def test_reclaim_restores_only_messages_no_live_worker_holds(redis_url):
    import time

    from melanoma.pipeline.recovery import holder_key, publish_held, reclaim_dead

    queue = "q-" + uuid.uuid4().hex[:8]
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": queue}))
    r = redis.Redis.from_url(redis_url)
    old = time.time() - 100

    def unacked(tag: str, routing_key: str, at: float) -> None:
        body = {"body": tag, "properties": {"delivery_info": {}}, "headers": {}}
        r.hset("unacked", tag, json.dumps([body, "", routing_key]))
        r.zadd("unacked_index", {tag: at})

    unacked(f"dead-{queue}", queue, old)  # its worker's heartbeat stopped
    unacked(f"held-{queue}", queue, old)  # a live worker holds it
    unacked(f"young-{queue}", queue, time.time())  # too recent to judge
    unacked(f"other-{queue}", "other-queue", old)  # another queue's
    publish_held(r, queue, "live@host", [f"held-{queue}"], ttl=30)
    try:
        assert reclaim_dead(app, grace_s=30) == 1
        restored = [json.loads(m)["body"] for m in r.lrange(queue, 0, -1)]
        assert restored == [f"dead-{queue}"]
        assert not r.hexists("unacked", f"dead-{queue}") and r.zscore("unacked_index", f"dead-{queue}") is None
        for tag in (f"held-{queue}", f"young-{queue}", f"other-{queue}"):
            assert r.hexists("unacked", tag)
        # Once the live worker's heartbeat lapses, its message is reclaimed too.
        r.delete(holder_key(queue, "live@host"))
        assert reclaim_dead(app, grace_s=30) == 1
    finally:
        for tag in (f"held-{queue}", f"young-{queue}", f"other-{queue}", f"dead-{queue}"):
            r.hdel("unacked", tag)
            r.zrem("unacked_index", tag)
        r.delete(queue)
