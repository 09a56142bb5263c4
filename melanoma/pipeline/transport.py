"""Everything this project relies on in kombu's Redis transport beyond its public API, in one place.

Two things: the stored-message format that :func:`melanoma.pipeline.broker.enqueue` writes straight into a
queue with redis-py (Celery's per-message publishing path caps a producer near 10,000 messages a
second, and importing Celery and kombu costs every ``melanoma submit`` a third of a second), and
the private structures the recovery reads (``melanoma.pipeline.recovery``): the priority lists, the
``unacked`` hash and its ``unacked_index`` sorted set, the QoS's ``_delivered`` record and
``restore_by_tag``. ``tests/code/test_kombu_internals.py`` names each of them and compares a
hand-built message with one Celery publishes, so a kombu or Celery upgrade that changes any of
them fails there, loudly, instead of silently breaking submission or recovery.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import uuid
from typing import Any

# The keyword arguments of a Celery task message's third body element (protocol 2).
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}
# A header the worker reads on a job's last message: score what it holds now instead of waiting
# MELANOMA_BATCH_WAIT for more (melanoma.worker.tasks). Celery passes unknown headers through.
FLUSH_HEADER = "melanoma_flush"


def message_template(task: str, queue: str) -> dict[str, Any]:
    """A stored-message dict as kombu's Redis transport writes one for ``task`` on ``queue``.

    Written out here rather than built by Celery (``app.amqp.as_task_v2``), so that the producer
    queues a job without importing Celery or kombu (a third of a second of every ``melanoma
    submit``); ``tests/code/test_kombu_internals.py`` compares it with what Celery itself sends.
    Per message only the ids and the argument change.
    """
    return {
        "body": None,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": None,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": None,
            "parent_id": None,
            "argsrepr": None,
            "kwargsrepr": "{}",
            "origin": f"gen{os.getpid()}@{socket.gethostname()}",
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": None,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
        },
    }


def stored_message(template: dict[str, Any], image_ids: list[int], flush: bool = False) -> str:
    """One score message for ``image_ids``, serialised as the transport stores it in a queue list;
    ``flush`` marks a job's last message."""
    task_id, tag = str(uuid.uuid4()), str(uuid.uuid4())
    body = json.dumps([[image_ids], {}, _EMBED])
    headers = {**template["headers"], "id": task_id, "root_id": task_id, "argsrepr": f"[{image_ids}]"}
    if flush:
        headers[FLUSH_HEADER] = True
    return json.dumps(
        {
            **template,
            "body": base64.b64encode(body.encode()).decode(),
            "headers": headers,
            "properties": {**template["properties"], "correlation_id": task_id, "delivery_tag": tag},
        }
    )


def queue_key(queue: str) -> str:
    """The Redis list that holds ``queue``'s messages of the default priority (kombu's ``_q_for_pri``
    for priority 0 is the queue's own name)."""
    return queue


def queue_length(channel: Any, queue: str) -> int:
    """Messages waiting in ``queue`` over all of kombu's priority lists."""
    return sum(int(channel.client.llen(channel._q_for_pri(queue, pri))) for pri in channel.priority_steps)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def unacked_queue(entry: bytes | str | None) -> str | None:
    """The queue of an ``unacked`` hash entry: each is ``[message, exchange, routing key]``, and
    this project's routing key is the queue name."""
    return None if entry is None else str(json.loads(entry)[2])


def has_unacked(channel: Any, queue: str) -> bool:
    """True while one of ``queue``'s messages is delivered and not yet acknowledged. kombu keeps one
    unacknowledged hash per Redis database, shared by every queue in it."""
    return any(unacked_queue(v) == queue for v in channel.client.hvals(channel.unacked_key))


def unacked_since(channel: Any, before: float) -> list[str]:
    """Delivery tags of every message (any queue) unacknowledged since before the Unix time ``before``."""
    return [_text(t) for t in channel.client.zrangebyscore(channel.unacked_index_key, "-inf", before)]


def unacked_queue_of(channel: Any, tag: str) -> str | None:
    """The queue of the unacknowledged message ``tag``; None once it has been acknowledged."""
    return unacked_queue(channel.client.hget(channel.unacked_key, tag))


def restore(channel: Any, tag: str) -> None:
    """Put the unacknowledged message ``tag`` back on its queue (kombu's own restore)."""
    channel.qos.restore_by_tag(tag, client=channel.client)


def delivered_tags(channel: Any) -> list[str]:
    """Delivery tags of the messages a kombu channel has received and not yet acknowledged
    (kept in its virtual QoS's private ``_delivered``)."""
    return [str(t) for t in list(channel.qos._delivered)]
