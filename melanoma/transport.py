"""Everything this project relies on in kombu's Redis transport beyond its public API, in one place.

Two things: the stored-message format that :func:`melanoma.broker.enqueue` writes straight into a
queue (Celery's per-message publishing path caps a producer near 10,000 messages a second), and
the private structures the recovery reads (``melanoma.recovery``): the priority lists, the
``unacked`` hash and its ``unacked_index`` sorted set, the QoS's ``_delivered`` record and
``restore_by_tag``. ``tests/code/test_kombu_internals.py`` names each of them and compares a
hand-built message with one Celery publishes, so a kombu or Celery upgrade that changes any of
them fails there, loudly, instead of silently breaking submission or recovery.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from celery import Celery

# The keyword arguments of a Celery task message's third body element (protocol 2).
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def message_template(app: Celery, task: str) -> tuple[dict[str, Any], str]:
    """A stored-message dict as kombu's Redis transport writes it for ``task``, and the queue key.

    Built once from Celery's own ``as_task_v2``, so headers and properties are what ``send_task``
    would send; per message only the ids and the argument change.
    """
    queue = app.conf.task_default_queue
    tm = app.amqp.as_task_v2("00000000-0000-0000-0000-000000000000", task, args=[[0]], kwargs={}, ignore_result=True)
    properties = dict(tm.properties)
    properties.update(
        delivery_mode=2, delivery_info={"exchange": "", "routing_key": queue}, priority=0, body_encoding="base64"
    )
    message = {
        "body": None,
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": dict(tm.headers),
        "properties": properties,
    }
    return message, queue


def stored_message(template: dict[str, Any], image_ids: list[int]) -> str:
    """One score message for ``image_ids``, serialised as the transport stores it in a queue list."""
    task_id, tag = str(uuid.uuid4()), str(uuid.uuid4())
    body = json.dumps([[image_ids], {}, _EMBED])
    return json.dumps(
        {
            **template,
            "body": base64.b64encode(body.encode()).decode(),
            "headers": {**template["headers"], "id": task_id, "root_id": task_id, "argsrepr": f"[{image_ids}]"},
            "properties": {**template["properties"], "correlation_id": task_id, "delivery_tag": tag},
        }
    )


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
