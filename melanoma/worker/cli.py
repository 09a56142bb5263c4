"""Worker-side commands: ``melanoma worker``, ``melanoma ping``, ``melanoma db``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("worker", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--concurrency",
    "-c",
    default=1,
    show_default=True,
    type=click.IntRange(1),
    help="Worker processes; each loads TensorFlow and the model once.",
)
@click.option("--loglevel", "-l", default="INFO", show_default=True)
@click.option("--hostname", "-n", default=None, help="Celery node name (default celery@<host>).")
@click.pass_context
def worker_command(ctx, concurrency, loglevel, hostname):
    """Start a scoring worker (shortcut for `celery -A melanoma.worker worker`); extra options go to Celery."""
    from melanoma.core.settings import get_settings
    from melanoma.versions.registry import MODEL_FILE, Registry, RegistryError

    # Fail here, in one line, rather than in every pool process after Celery has started.
    registry = Registry(get_settings().model_dir)
    current = registry.current()
    if current is None or not (registry.path(current) / MODEL_FILE).is_file():
        raise RegistryError(
            f"no current model version in {registry.root} (set MELANOMA_MODEL_DIR or run "
            "`melanoma train --data DIR`, which promotes through the gate)"
        )
    from melanoma.worker.celery import app

    argv = ["worker", f"--concurrency={concurrency}", f"--loglevel={loglevel}", "--pool=prefork"]
    if hostname:
        argv.append(f"--hostname={hostname}")
    app.worker_main(argv + list(ctx.args))


@click.command("ping")
@click.option("--node", default=None, help="Celery node name (default celery@<this host>, the worker's default).")
@click.option(
    "--timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(0, min_open=True),
    help="Seconds to wait for the answer.",
)
def ping_command(node, timeout):
    """Health check: exit 0 when the worker NODE answers a Celery ping, 1 when it does not."""
    import socket

    from melanoma.core.errors import UserError
    from melanoma.pipeline.broker import broker_client, check_broker, make_celery

    # The node name is worked out here, not by the shell: not every container runtime sets
    # $HOSTNAME (podman does not), and a healthcheck that pings "celery@" is never healthy.
    node = node or f"celery@{socket.gethostname()}"
    app = make_celery()
    check_broker(broker_client())
    replies = app.control.ping(destination=[node], timeout=timeout)
    if not any(node in reply for reply in replies):
        raise UserError(f"worker {node} did not answer a ping within {timeout:g} s")
    click.echo(f"{node}: pong")


@click.command("explain")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--out",
    "out_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the heat-map PNGs (<image name>.gradcam.png).",
)
@click.option("--version", default=None, help="Model version (default: the current one).")
@click.option(
    "--model-dir", type=click.Path(path_type=Path), default=None, help="Registry folder (default: MELANOMA_MODEL_DIR)."
)
def explain_command(images, out_dir, version, model_dir):
    """Write a Grad-CAM heat map over each IMAGE: where the model looked for the class it predicted."""
    from melanoma.core.errors import ImageError, UserError
    from melanoma.core.labels import CLASS_NAMES
    from melanoma.core.settings import get_settings
    from melanoma.versions.registry import Registry

    registry = Registry(model_dir or get_settings().model_dir)
    version = version or registry.current()
    if version is None:
        raise UserError(f"no current model version in {registry.root}")
    registry.meta(version)  # one line for an unknown version
    from melanoma.ml.explain import GradCam, explain_file

    cam = GradCam(registry.load(version))
    out_dir.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in images:
        try:
            written, index = explain_file(cam, path, out_dir)
        except ImageError as exc:
            click.echo(f"{path}: {exc}", err=True)
            failed += 1
            continue
        click.echo(f"{path}: {CLASS_NAMES[index]} -> {written}")
    if failed:
        raise UserError(f"{failed} of {len(images)} images could not be explained")


@click.group("db")
def db_command():
    """Database schema management."""


@db_command.command("upgrade")
def db_upgrade():
    """Create the tables or apply pending migrations."""
    from melanoma.store import db

    db.ensure_schema(db.get_engine())
    click.echo("database schema is at the latest revision", err=True)
