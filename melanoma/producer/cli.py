"""``melanoma submit | requeue | rescore``: the producer's commands that queue images, thin over
:mod:`melanoma.store.jobs` and :mod:`melanoma.pipeline.broker`. The commands that answer
"how far is job X" and "what did it find" are in :mod:`melanoma.producer.report`."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click

from melanoma.core.errors import UserError
from melanoma.core.startup import preload

# What the producer's commands import before they can answer, loaded at once by preload: the
# database's (every command) and the broker's (the commands that queue).
_DATABASE = ("melanoma.store.jobs", "melanoma.store.db", "melanoma.core.settings")
_QUEUEING = (*_DATABASE, "melanoma.pipeline.broker", "redis", "tqdm")


def _checked_broker():
    """A client for the broker, after checking that it answers (one line if not)."""
    from melanoma.pipeline.broker import broker_client, check_broker

    client = broker_client()
    check_broker(client)
    return client


def _queue_with_progress(client, ids: list[int], db=None, engine=None, job_id: str | None = None) -> None:
    """Queue ``ids`` with a progress bar on stderr; with a job, record after every chunk how many
    are on the queue, so that a producer that fails or is killed part-way leaves a job that
    `melanoma requeue` completes without queueing anything twice.

    A broker that refuses the messages (Redis at ``maxmemory``, connection lost) gives a one-line
    error naming the job and how many of its images were queued.
    """
    import redis
    from tqdm import tqdm

    from melanoma.core.errors import one_line
    from melanoma.core.settings import get_settings
    from melanoma.pipeline.broker import enqueue
    from melanoma.store import jobs

    settings = get_settings()
    queued = 0

    def chunk_done(n: int) -> None:
        nonlocal queued
        queued += n
        bar.update(n)
        if job_id is not None and db is not None:
            with db.session_scope(engine) as session:
                jobs.mark_enqueued(session, job_id, n)

    with tqdm(total=len(ids), desc="enqueue", unit="img", file=sys.stderr, disable=None) as bar:
        try:
            enqueue(
                client,
                settings.queue,
                ids,
                chunk=settings.enqueue_chunk,
                per_message=settings.images_per_message,
                progress=chunk_done,
            )
        except redis.RedisError as exc:
            where = f"job {job_id}: " if job_id else ""
            raise UserError(
                f"{where}the broker refused the messages after {queued} of {len(ids)} images "
                f"({one_line(exc)}); the job is saved: run `melanoma requeue {job_id or 'JOB'}` "
                "once the broker has room"
            ) from None


def _session_and_schema():
    from melanoma.store import db

    engine = db.get_engine()
    db.ensure_schema(engine)
    return db, engine


@click.command("submit")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--name", default=None, help="A name for the job, shown by `status`.")
@click.option("--wait", is_flag=True, help="Follow the job until every image has a result.")
@click.option("--timeout", default=None, type=float, help="With --wait: give up after this many seconds.")
@click.option("--site", default=None, help="The clinic the images come from (default MELANOMA_SITE).")
def submit_command(folder: Path, name: str | None, wait: bool, timeout: float | None, site: str | None):
    """Submit every image under FOLDER (recursively) for scoring; print the job id."""
    preload(*_QUEUEING)
    from melanoma.core.labels import IMAGE_EXTENSIONS
    from melanoma.core.settings import get_settings
    from melanoma.store import jobs

    if name is not None and len(name) > 200:
        raise UserError("job name longer than 200 characters")
    site = (site if site is not None else get_settings().site) or None
    if site is not None and not 0 < len(site.strip()) <= 100:
        raise UserError("--site: a name of 1 to 100 characters")
    paths = jobs.discover(folder)
    if not paths:
        raise UserError(f"no image files ({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))}) under {folder}")
    # Check the broker before any row is written, so an unreachable one leaves no orphan job.
    client = _checked_broker()
    db, engine = _session_and_schema()
    with db.session_scope(engine) as session:
        job_id, ids = jobs.create_job(session, folder, paths, name, site=site and site.strip())
    # Subscribed before the first message is queued, so no announcement of this job is missed.
    listener = _listener(client) if wait else None
    try:
        _queue_with_progress(client, ids, db, engine, job_id)
        click.echo(f"job {job_id}: {len(ids)} images queued", err=True)
        if wait:
            _follow(db, engine, job_id, timeout, listener)
    finally:
        if listener is not None:
            listener.close()
    click.echo(job_id)


def _listener(client):
    """A subscription to the workers' progress announcements, or None (then `--wait` polls)."""
    from melanoma.core.settings import get_settings
    from melanoma.pipeline.progress import Listener

    try:
        return Listener(client, get_settings().queue)
    except Exception:  # the broker was reachable a moment ago; polling still works without it
        return None


def _follow(db, engine, job_id: str, timeout: float | None, listener=None) -> None:
    from tqdm import tqdm

    from melanoma.store import jobs

    deadline = None if timeout is None else time.monotonic() + timeout
    with db.session_scope(engine) as session:
        job = jobs.find_job(session, job_id)
        st = jobs.job_status(session, job)
    # Workers announce each batch they write (melanoma.pipeline.progress): wait for that, and look at the
    # database at least every half second in case an announcement was lost. Without a listener,
    # poll fast at first (a small job is done in well under a second), then every half second.
    delay = 0.5 if listener is not None else 0.05
    with tqdm(total=st.total, desc="scored", unit="img", file=sys.stderr, disable=None) as bar:
        while True:
            with db.session_scope(engine) as session:
                st = jobs.job_status(session, session.get(jobs.Job, job_id))
            bar.update(st.done + st.failed - bar.n)
            if st.complete:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise UserError(f"job {job_id} not finished after {timeout:g} s: {st.pending} images still pending")
            if listener is not None:
                try:
                    listener.wait(job_id, delay)
                except Exception:  # the broker went away: fall back to polling
                    listener = None
                    delay = 0.05
            else:
                time.sleep(delay)
                delay = min(delay * 1.5, 0.5)
    click.echo(f"job {job_id}: {st.done} scored, {st.failed} failed", err=True)


@click.command("requeue")
@click.argument("job")
def requeue_command(job: str):
    """Send JOB's images that have no result to the queue again.

    A job whose producer failed or was killed part-way gets the images it never queued; a job
    that was queued whole gets every pending image again (after the broker lost its messages).
    Safe at any time: an image that is scored twice keeps one row and one result.
    """
    preload(*_QUEUEING)
    from melanoma.store import jobs

    db, engine = _session_and_schema()
    with db.session_scope(engine) as session:
        j = jobs.find_job(session, job)
        job_id, incomplete = j.id, j.enqueued < j.n_images
        ids = jobs.unqueued_ids(session, j) if incomplete else jobs.pending_ids(session, j)
        n_images = j.n_images
    # What was queued before is not queued twice; should this fail too, the next requeue
    # starts again from the same place (a message sent twice is harmless).
    _queue_with_progress(_checked_broker(), ids, job_id=job_id)
    with db.session_scope(engine) as session:
        jobs.set_enqueued(session, job_id, n_images)
    what = "images the producer had not queued" if incomplete else "pending images queued again"
    click.echo(f"job {job_id}: {len(ids)} {what}" + (" now queued" if incomplete else ""), err=True)


@click.command("rescore")
@click.argument("job")
@click.option("--name", default=None, help="A name for the new job (default: 'rescore of <job>').")
def rescore_command(job: str, name: str | None):
    """Score JOB's images again as a new job, with the current model version.

    Earlier predictions are reused only for the same content and the same version, so images the
    current version has already scored are not run through the model again. Prints the new job id.
    """
    preload(*_QUEUEING)
    from melanoma.store import jobs

    client = _checked_broker()
    db, engine = _session_and_schema()
    with db.session_scope(engine) as session:
        old = jobs.find_job(session, job)
        paths = jobs.image_paths(session, old)
        new_id, ids = jobs.create_job(
            session, Path(old.root), paths, name or f"rescore of {old.id[:12]}", site=old.site
        )
    _queue_with_progress(client, ids, db, engine, new_id)
    click.echo(f"job {new_id}: {len(ids)} images of job {old.id} queued again", err=True)
    click.echo(new_id)
