"""Worker service: Celery workers that score queued images in batches.

Run with ``celery -A worker worker`` (Celery finds the app in :mod:`worker.celery`) or
``melanoma worker``. Importing this package creates nothing, so the CLI can import its
commands without reading settings.
"""
