"""The worker's Celery app (the producer builds the same configuration from melanoma.queue)."""

from melanoma.queue import make_celery

app = make_celery()
app.conf.include = ["worker.tasks"]
