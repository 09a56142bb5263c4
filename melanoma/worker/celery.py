"""The worker's Celery app (the producer builds the same configuration from melanoma.pipeline.broker)."""

from melanoma.core.settings import get_settings
from melanoma.pipeline import telemetry
from melanoma.pipeline.broker import make_celery

if get_settings().metrics_port:
    # Before prometheus_client is first imported here or in a forked pool process.
    telemetry.prepare_multiprocess_dir()

app = make_celery()
app.conf.include = ["melanoma.worker.tasks"]
