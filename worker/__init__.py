"""The worker service's entry points. Its code is ``melanoma.worker`` (installed with the project,
so no generic top-level ``worker`` package lands in site-packages); from a checkout or the image's
``/app``, ``celery -A worker worker`` finds the Celery app in :mod:`worker.celery`."""
