"""Turn low-level connection failures into one-line messages that name the server."""

from __future__ import annotations

import sys

from melanoma.core.errors import one_line
from melanoma.core.settings import get_settings


def describe_connection_error(exc: BaseException) -> str | None:
    """A one-line message for a broker or database connection failure, or None for other errors."""
    settings = get_settings()
    try:
        import sqlalchemy.exc as sa_exc

        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return f"cannot use the database {settings.redacted_database_url()}: {one_line(exc.orig or exc)}"
    except ImportError:  # pragma: no cover
        pass
    import redis.exceptions

    # kombu's errors count only where kombu is in use (the worker); the producer never imports it.
    kombu_exceptions = sys.modules.get("kombu.exceptions")
    broker_errors: tuple[type[BaseException], ...] = (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.AuthenticationError,
        ConnectionError,
    )
    if kombu_exceptions is not None:
        broker_errors += (kombu_exceptions.OperationalError,)
    if isinstance(exc, broker_errors):
        return f"cannot reach the broker {settings.redacted_broker_url()}: {one_line(exc)}"
    return None
