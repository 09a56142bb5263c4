"""Turn low-level connection failures into one-line messages that name the server."""

from __future__ import annotations

from melanoma.errors import one_line
from melanoma.settings import get_settings


def describe_connection_error(exc: BaseException) -> str | None:
    """A one-line message for a broker or database connection failure, or None for other errors."""
    settings = get_settings()
    try:
        import sqlalchemy.exc as sa_exc

        if isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return f"cannot use the database {settings.redacted_database_url()}: {one_line(exc.orig or exc)}"
    except ImportError:  # pragma: no cover
        pass
    try:
        import kombu.exceptions
        import redis.exceptions

        if isinstance(
            exc,
            (
                kombu.exceptions.OperationalError,
                redis.exceptions.ConnectionError,
                redis.exceptions.AuthenticationError,
                ConnectionError,
            ),
        ):
            return f"cannot reach the broker {_redact(settings.broker_url)}: {one_line(exc)}"
    except ImportError:  # pragma: no cover
        pass
    return None


def _redact(url: str) -> str:
    from kombu.utils.url import maybe_sanitize_url

    return maybe_sanitize_url(url)
