"""The worker's Celery app (the producer builds the same configuration from melanoma.broker)."""

from melanoma import telemetry
from melanoma.broker import make_celery
from melanoma.settings import get_settings

if get_settings().metrics_port:
    # Before prometheus_client is first imported here or in a forked pool process.
    telemetry.prepare_multiprocess_dir()

app = make_celery()
app.conf.include = ["melanoma.worker.tasks"]
