"""The Celery app, for ``celery -A worker`` (it is :mod:`melanoma.worker.celery`'s)."""

from melanoma.worker.celery import app

__all__ = ["app"]
