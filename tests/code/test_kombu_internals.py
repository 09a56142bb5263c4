"""What melanoma/pipeline/transport.py relies on in kombu and Celery beyond their public API: the
hand-built queue messages and the Redis transport's internals the recovery reads. Each is named
here, so that a kombu or Celery upgrade that changes one fails here, loudly, instead of silently
breaking submission, dead-worker reclaim or lost-message recovery."""

import base64
import inspect
import json
import re
import socket
import uuid

import redis
from kombu.transport import redis as kombu_redis

from melanoma.core.settings import Settings
from melanoma.pipeline.broker import SCORE_TASK, broker_client, enqueue, make_celery
from melanoma.pipeline.transport import FLUSH_HEADER

IDS = ("id", "root_id", "argsrepr", "correlation_id", "delivery_tag", "origin", "reply_to")


def _strip(m: dict) -> dict:
    m = json.loads(json.dumps(m))
    for part in ("headers", "properties"):
        for k in IDS:
            m[part].pop(k, None)
    m["headers"].pop(FLUSH_HEADER, None)
    m["body"] = json.loads(base64.b64decode(m["body"]))
    return m


def test_pipelined_messages_match_celerys(redis_url):
    queue = "q-" + uuid.uuid4().hex[:8]
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": queue}))
    progress = []
    client = broker_client(redis_url)
    assert enqueue(client, queue, [11, 12, 13, 14, 15], chunk=2, per_message=2, progress=progress.append) == 5
    assert progress == [2, 2, 1]
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
    # The origin is gen<pid>@<host>, as Celery writes it (the pids differ: another process here).
    origin = re.compile(r"gen\d+@" + re.escape(socket.gethostname()))
    assert origin.fullmatch(reference["headers"]["origin"]) and origin.fullmatch(stored[0]["headers"]["origin"])
    assert len({m["properties"]["delivery_tag"] for m in stored}) == 3


def test_redis_channel_still_has_what_recovery_reads():
    channel = kombu_redis.Channel
    assert channel.unacked_key == "unacked"
    assert channel.unacked_index_key == "unacked_index"
    assert hasattr(channel, "_q_for_pri") and hasattr(channel, "priority_steps")
    assert "leftmost" in inspect.signature(channel._do_restore_message).parameters


def test_redis_qos_still_restores_by_tag_and_tracks_delivered_messages():
    qos = kombu_redis.QoS
    assert list(inspect.signature(qos.restore_by_tag).parameters)[:3] == ["self", "tag", "client"]
    # The QoS records delivered, unacknowledged messages in _delivered (virtual transport base).
    from kombu.transport.virtual.base import QoS as VirtualQoS

    assert "_delivered" in inspect.getsource(VirtualQoS.__init__)
    assert "self.unacked_key" in inspect.getsource(qos.append)  # the hash entry recovery parses
    assert "dumps([message._raw, EX, RK])" in inspect.getsource(qos.append)


def test_transport_reads_what_kombu_wrote(redis_url):
    """Deliver a message without acknowledging it, as a worker holds one, and read it back through
    melanoma.pipeline.transport: the queue length, the unacknowledged record and kombu's restore."""
    import time

    from melanoma.pipeline import transport

    queue = "q-" + uuid.uuid4().hex[:8]
    app = make_celery(Settings.from_env({"MELANOMA_BROKER_URL": redis_url, "MELANOMA_QUEUE": queue}))
    enqueue(broker_client(redis_url), queue, [1, 2, 3], per_message=1)
    with app.connection_for_write() as conn, app.connection_for_write() as reader:
        channel = conn.default_channel
        assert transport.queue_length(channel, queue) == 3 and not transport.has_unacked(channel, queue)
        held = reader.SimpleQueue(queue, no_ack=False)
        message = held.get(timeout=5)
        tag = str(message.delivery_tag)
        assert transport.delivered_tags(held.channel) == [tag]
        assert transport.queue_length(channel, queue) == 2 and transport.has_unacked(channel, queue)
        assert tag in transport.unacked_since(channel, time.time() + 1)
        assert tag not in transport.unacked_since(channel, time.time() - 3600)
        assert transport.unacked_queue_of(channel, tag) == queue
        transport.restore(channel, tag)
        assert transport.queue_length(channel, queue) == 3 and not transport.has_unacked(channel, queue)
        assert transport.unacked_queue_of(channel, tag) is None
        held.close()
        channel.client.delete(queue)
