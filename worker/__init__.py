"""Worker service: Celery workers that score queued images in batches (``celery -A worker worker``)."""

from worker.celery import app

__all__ = ["app"]
