"""Workers announce which jobs a batch advanced (Redis pub/sub on the broker), so that whoever
follows a job (``submit --wait``) looks at the database the moment a batch is written instead of
polling it. Announcements are hints: a follower that misses one still checks every half second."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def channel(queue: str) -> str:
    """The pub/sub channel of a queue's job progress."""
    return f"melanoma:progress:{queue}"


def announce(client: Any, queue: str, job_ids: Iterable[str]) -> None:
    """Tell followers that rows of these jobs were written (best effort: never raises)."""
    ids = sorted(set(job_ids))
    if not ids:
        return
    try:
        client.publish(channel(queue), json.dumps(ids))
    except Exception as exc:  # the result is in the database; followers also poll
        log.debug("could not announce progress of %s: %s", ids, exc)


class Listener:
    """A subscription to a queue's progress announcements (open it before queueing a job)."""

    def __init__(self, client: Any, queue: str):
        # A redis-py client for the broker (melanoma.pipeline.broker.broker_client); the subscription
        # takes a connection of its own from the client's pool.
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(channel(queue))

    def wait(self, job_id: str, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for an announcement naming ``job_id``; True if one came."""
        import time

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            message = self._pubsub.get_message(timeout=left)
            if message is None:
                continue
            try:
                if job_id in json.loads(message["data"]):
                    return True
            except (TypeError, ValueError):
                continue
        return False

    def close(self) -> None:
        """Unsubscribe and drop the subscription's connection."""
        try:
            self._pubsub.close()
        except Exception:  # closing a broken connection is not an error worth reporting
            pass
