"""Prometheus metrics of the workers (``MELANOMA_METRICS_PORT``; off when unset).

Celery's prefork pool scores in child processes, so the metrics use prometheus_client's
multiprocess mode: every process writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` and
the worker's main process serves them all on ``/metrics``. prometheus_client picks that mode when
it is first imported, so :func:`prepare_multiprocess_dir` must run before anything here is used.
Names follow Prometheus conventions: base units (seconds), ``_total`` for counters.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from functools import lru_cache
from types import SimpleNamespace
from typing import Any


def prepare_multiprocess_dir() -> str:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an empty, writable folder (the one it names, or a new
    temporary one, removed when this process exits) before prometheus_client is imported. Returns it."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not path:
        path = tempfile.mkdtemp(prefix="melanoma-metrics-")
        atexit.register(_remove_if_owner, path, os.getpid())
    os.makedirs(path, exist_ok=True)
    for name in os.listdir(path):
        if name.endswith(".db"):
            os.remove(os.path.join(path, name))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
    return path


def _remove_if_owner(path: str, owner: int) -> None:
    # Forked pool processes inherit atexit handlers: only the process that made the folder removes it,
    # since the others end while it still serves their samples.
    if os.getpid() == owner:
        shutil.rmtree(path, ignore_errors=True)


def enabled() -> bool:
    """True in a process whose metrics are collected (the worker set up the multiprocess folder)."""
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


@lru_cache(maxsize=1)
def metrics() -> SimpleNamespace:
    """The worker metrics (created once per process)."""
    from prometheus_client import Counter, Gauge, Histogram

    return SimpleNamespace(
        images=Counter("melanoma_images_scored_total", "Images written by the workers, by outcome", ["status"]),
        unfamiliar=Counter(
            "melanoma_unfamiliar_images_total",
            "Scored images unlike the model version's validation images, by version",
            ["version"],
        ),
        batch_size=Histogram(
            "melanoma_batch_size", "Images per worker batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
        ),
        batch_seconds=Histogram("melanoma_batch_seconds", "Seconds to score and write one worker batch"),
        decode_seconds=Histogram("melanoma_decode_seconds", "Seconds a worker batch waited for decoded images"),
        model_seconds=Histogram("melanoma_model_seconds", "Seconds a worker batch spent in the model"),
        model_info=Gauge(
            "melanoma_model_info",
            "The model version a worker process scores with (value 1)",
            ["version"],
            multiprocess_mode="liveall",
        ),
        last_success=Gauge(
            "melanoma_last_batch_success_timestamp_seconds",
            "Unix time of the last batch written",
            multiprocess_mode="max",
        ),
    )


def record_batch(report: Any, seconds: float) -> None:
    """Count one written batch (a melanoma.pipeline.scoring.BatchReport) if metrics are collected."""
    if not enabled():
        return
    m = metrics()
    for status, n in (("ok", report.scored), ("reused", report.reused), ("error", report.errors)):
        if n:
            m.images.labels(status=status).inc(n)
    if report.unfamiliar and report.model_version:
        m.unfamiliar.labels(version=report.model_version).inc(report.unfamiliar)
    m.batch_size.observe(report.scored + report.reused + report.errors)
    m.batch_seconds.observe(seconds)
    m.decode_seconds.observe(report.decode_seconds)
    m.model_seconds.observe(report.model_seconds)
    if report.model_version:
        m.model_info.labels(version=report.model_version).set(1)
    m.last_success.set(time.time())


def serve(port: int, queue_depth: Callable[[], int] | None = None) -> None:
    """Serve every process's metrics on port ``port`` (``/metrics``, all interfaces: a scrape target);
    ``queue_depth`` (a callable giving the number of queued messages) adds ``melanoma_queue_messages``."""
    from prometheus_client import CollectorRegistry, multiprocess, start_http_server
    from prometheus_client.core import GaugeMetricFamily

    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    if queue_depth is not None:
        depth_of_queue = queue_depth

        class QueueDepth:
            def collect(self) -> Any:
                try:
                    depth = depth_of_queue()
                except Exception:  # the broker may be away; the scrape still answers
                    return
                yield GaugeMetricFamily("melanoma_queue_messages", "Messages waiting in the queue", depth)

        registry.register(QueueDepth())
    start_http_server(port, registry=registry)


def mark_process_dead(pid: int) -> None:
    """Drop a finished pool process's live gauges."""
    if enabled():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid)
