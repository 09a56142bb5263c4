"""Errors a user can cause; the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake the user can fix (missing folder, unknown job, unreachable server)."""


class ImageError(Exception):
    """An image cannot be scored; ``str(err)`` is the one-line reason stored in its row."""


def one_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message, or its type name when the message is empty."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
