"""Worker service: Celery workers that score queued images in batches.

Run with ``melanoma worker``, ``celery -A melanoma.worker worker`` (Celery finds the app in
:mod:`melanoma.worker.celery`), or ``celery -A worker worker`` from a checkout. Importing this
package creates nothing, so the CLI can import its commands without reading settings.
"""
