"""Progress announcements over a real redis-server: a follower wakes on its own job only."""

import logging
import threading
import time
import uuid

import redis

from melanoma.pipeline.progress import Listener, announce


def test_follower_wakes_on_its_job_and_not_on_others(redis_url):
    queue = "q-" + uuid.uuid4().hex[:8]
    client = redis.Redis.from_url(redis_url)
    listener = Listener(client, queue)
    try:
        announce(client, queue, ["other-job"])
        assert listener.wait("my-job", 0.3) is False
        announce(client, "another-queue", ["my-job"])  # another queue's workers
        assert listener.wait("my-job", 0.3) is False
        timer = threading.Timer(0.2, announce, (client, queue, ["my-job", "other-job"]))
        started = time.monotonic()
        timer.start()
        assert listener.wait("my-job", 10) is True
        assert time.monotonic() - started < 2  # woken by the announcement, not the timeout
    finally:
        listener.close()


def test_announcing_never_raises_when_the_broker_is_away(caplog):
    """Best effort: the rows are already in the database, so a broker that is away is logged and the
    batch goes on after redis-py's few connection retries; announcing no job does not even try."""
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    caplog.set_level(logging.DEBUG, logger="melanoma.pipeline.progress")
    started = time.monotonic()
    announce(dead, "q", ["job"])
    assert time.monotonic() - started < 15
    assert [r.getMessage() for r in caplog.records if "could not announce progress of ['job']" in r.getMessage()]
    caplog.clear()
    announce(dead, "q", [])
    assert not [r for r in caplog.records if r.name == "melanoma.pipeline.progress"]
