"""Errors a user can cause; the CLI prints their message on one line and exits non-zero."""


class UserError(Exception):
    """A mistake the user can fix (missing folder, unknown job, unreachable server)."""
