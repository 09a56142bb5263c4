"""Nothing lost, nothing duplicated: real processes, a fault injected mid-job, recovery, then every
image must have exactly one row. The session prints a summary table (fault, images, rows, lost, duplicated)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from sqlalchemy import create_engine, select

from melanoma.lifecycle.promotion import gate
from melanoma.store.schema import Prediction
from melanoma.versions.registry import ModelMeta, Registry
from tests.conftest import LIB, REPO, _missing, free_port, queued_image_ids, run_cli, service_env, submit
from tests.faults.conftest import assert_exactly_once, counts, fault_settings, wait_until

pytestmark = pytest.mark.e2e


def n_images(folder) -> int:
    return sum(1 for _ in folder.rglob("*.jpg"))


def test_worker_killed_mid_batch(tmp_path, redis_url, sqlite_url, fault_model_dir, fault_images, start_worker):
    """kill -9 (OOM killer, node lost) with a replacement started at once: the dead worker's
    prefetched messages come back through the heartbeat reclaim, not after the one-hour visibility
    timeout. Done when every row is done within 2 minutes of the kill."""
    env = service_env(tmp_path, sqlite_url, redis_url, fault_model_dir, [fault_images], **fault_settings())
    first = start_worker(env, "victim")
    job = submit(env, fault_images)
    wait_until(sqlite_url, job, 12)
    os.killpg(first.proc.pid, signal.SIGKILL)  # the main process and its pool child, no goodbye
    killed = time.monotonic()
    first.proc.wait()
    assert counts(sqlite_url, job)["pending"] > 0
    replacement = start_worker(env, "replacement")
    assert_exactly_once(
        "worker killed (kill -9), replacement started",
        sqlite_url,
        job,
        n_images(fault_images),
        since=killed,
        within=120,
    )
    assert "messages of dead workers back on queue" in replacement.log()


def test_worker_stopped_with_sigterm_mid_job(
    tmp_path, redis_url, sqlite_url, fault_model_dir, fault_images, start_worker
):
    """SIGTERM, as Kubernetes and compose stop a container: the worker hands its unacknowledged
    messages back as it stops (kombu restores them at shutdown), so a second worker finishes the
    job at once; nothing is reclaimed, nothing waits for a timeout."""
    env = service_env(tmp_path, sqlite_url, redis_url, fault_model_dir, [fault_images], **fault_settings())
    first = start_worker(env, "stopped")
    job = submit(env, fault_images)
    wait_until(sqlite_url, job, 12)
    os.kill(first.proc.pid, signal.SIGTERM)  # the main process only, as a container runtime does
    first.proc.wait(timeout=60)
    stopped = time.monotonic()
    assert first.proc.returncode == 0, first.log()[-2000:]
    assert counts(sqlite_url, job)["pending"] > 0
    client = redis.Redis.from_url(redis_url)
    assert not client.exists(f"melanoma:holder:{env['MELANOMA_QUEUE']}:{first.node}")  # said goodbye
    second = start_worker(env, "second")
    assert_exactly_once(
        "worker stopped (SIGTERM) mid-job", sqlite_url, job, n_images(fault_images), since=stopped, within=120
    )
    assert "messages of dead workers back on queue" not in second.log()


def _lib(call: str) -> None:
    subprocess.run(["bash", "-c", f'source "{LIB}"; {call}'], check=True)


def _start_redis_aof(rdir, port: int) -> list[str]:
    # As in docker-compose.yml: append-only file, fsync every second.
    cmd = [
        "redis-server",
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(rdir),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--daemonize",
        "yes",
        "--pidfile",
        str(rdir / "redis.pid"),
    ]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    client = redis.Redis.from_url(f"redis://127.0.0.1:{port}/0")
    for _ in range(100):
        try:
            client.ping()
            return cmd
        except redis.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("redis-server did not start")


@pytest.fixture
def aof_redis(tmp_path):
    """A redis-server of the test's own, configured like compose's (AOF), shut down afterwards."""
    rdir, port = tmp_path / "redis", free_port()
    rdir.mkdir()
    cmd = _start_redis_aof(rdir, port)
    url = f"redis://127.0.0.1:{port}/0"
    yield SimpleNamespace(url=url, client=redis.Redis.from_url(url), dir=rdir, cmd=cmd)
    try:
        redis.Redis.from_url(url).shutdown(nosave=True)
    except redis.RedisError:
        pass


@pytest.mark.parametrize("how", ["restarted", "killed"])
def test_redis_restarted_mid_job(tmp_path, aof_redis, sqlite_url, fault_model_dir, fault_images, start_worker, how):
    """Redis shut down cleanly (`docker compose restart redis`) or killed -9, then started again on
    its append-only file. kill -9 loses up to a second of writes: messages kombu had taken off the
    queue but not yet recorded as unacknowledged are gone, and the lost-row sweeper queues their
    rows again once the broker is idle."""
    url, client = aof_redis.url, aof_redis.client
    cmd = aof_redis.cmd
    rdir = aof_redis.dir
    env = service_env(tmp_path, sqlite_url, url, fault_model_dir, [fault_images], **fault_settings())
    start_worker(env)
    job = submit(env, fault_images)
    wait_until(sqlite_url, job, 40)
    if how == "restarted":
        client.shutdown()  # writes the AOF and exits
    else:
        os.kill(int((rdir / "redis.pid").read_text()), signal.SIGKILL)
    time.sleep(2)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    back = time.monotonic()
    assert_exactly_once(
        f"Redis {how} mid-job{' (kill -9)' if how == 'killed' else ''}, AOF",
        sqlite_url,
        job,
        n_images(fault_images),
        since=back,
        within=180,
    )


def _many_paths(folder, n: int, real) -> None:
    """``n`` image paths (links to real images) under ``folder``, in sub-folders of 1,000."""
    sources = sorted(real.rglob("*.jpg"))
    for i in range(n):
        sub = folder / f"part{i // 1000:02d}"
        sub.mkdir(parents=True, exist_ok=True)
        os.symlink(sources[i % len(sources)], sub / f"img{i:05d}.jpg")


def _job_row(db_url: str, job: str):
    from melanoma.store.schema import Job

    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return c.execute(select(Job.n_images, Job.enqueued).where(Job.id == job)).one()
    finally:
        engine.dispose()


def _only_job(db_url: str) -> str:
    from melanoma.store.schema import Job

    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return c.execute(select(Job.id)).scalar_one()
    finally:
        engine.dispose()


def _all_ids(db_url: str, job: str) -> list[int]:
    engine = create_engine(db_url)
    try:
        with engine.connect() as c:
            return sorted(c.execute(select(Prediction.id).where(Prediction.job_id == job)).scalars())
    finally:
        engine.dispose()


def test_redis_at_maxmemory_refuses_a_submit(
    tmp_path, aof_redis, sqlite_url, fault_model_dir, fault_images, start_worker
):
    """Redis full (maxmemory, noeviction): submit stops with a one-line error naming the job and how
    much was queued; `requeue` queues the rest once there is room, nothing twice; a worker then
    finishes the job."""
    from melanoma.core.settings import Settings
    from melanoma.pipeline.broker import make_celery

    url, client = aof_redis.url, aof_redis.client
    folder = tmp_path / "many"
    _many_paths(folder, 3000, fault_images)
    env = service_env(tmp_path, sqlite_url, url, fault_model_dir, [folder, fault_images])
    used = client.info("memory")["used_memory"]
    client.config_set("maxmemory-policy", "noeviction")
    client.config_set("maxmemory", used + 250_000)  # room for about a third of the messages
    r = run_cli(["submit", str(folder)], env)
    assert r.returncode == 1, r.stdout + r.stderr
    err = r.stderr.strip().splitlines()[-1]
    assert "broker refused the messages" in err and "melanoma requeue" in err and "Traceback" not in r.stderr
    job = _only_job(sqlite_url)
    n, enqueued = _job_row(sqlite_url, job)
    assert n == 3000 and 0 < enqueued < n, (n, enqueued)
    st = run_cli(["status", job], env)
    assert f"queued   {enqueued} of 3000" in st.stdout
    client.config_set("maxmemory", 0)
    start = time.monotonic()
    r = run_cli(["requeue", job], env)
    assert r.returncode == 0, r.stderr
    assert _job_row(sqlite_url, job)[1] == 3000
    queued = queued_image_ids(url, env["MELANOMA_QUEUE"])
    assert set(queued) == set(_all_ids(sqlite_url, job))
    # At most the chunk that was being written when Redis refused is queued twice.
    assert len(queued) - len(set(queued)) <= Settings.from_env(env).enqueue_chunk
    assert make_celery(Settings.from_env(env))  # settings still valid
    start_worker(env)
    assert_exactly_once(
        "Redis at maxmemory during submit, then requeue", sqlite_url, job, 3000, since=start, within=300
    )


def test_producer_killed_while_enqueueing(tmp_path, aof_redis, sqlite_url, fault_images):
    """A producer killed (kill -9) part-way through queueing a 20,000-image job: the job records how
    far it got; `requeue` queues exactly the rest, so every image is on the queue and none of the
    images queued before the kill is queued again."""
    url, client = aof_redis.url, aof_redis.client
    folder = tmp_path / "big"
    _many_paths(folder, 20_000, fault_images)
    env = service_env(tmp_path, sqlite_url, url, Path("/nonexistent"), [folder], MELANOMA_ENQUEUE_CHUNK="200")
    proc = subprocess.Popen(
        [sys.executable, "-m", "melanoma", "submit", str(folder)],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    # Watched on the queue itself: Redis answers at once, where reading the SQLite file the producer
    # is writing can wait on its lock long enough for the whole job to be queued meanwhile.
    while client.llen(env["MELANOMA_QUEUE"]) < 2000 // 8:  # 2,000 images, 8 to a message
        assert proc.poll() is None, "the producer finished before it could be killed"
        assert time.monotonic() < deadline, "the producer never started queueing"
        time.sleep(0.002)
    client.client_pause(30_000, all=False)  # writes wait: the producer is caught mid-way
    proc.kill()
    proc.wait()
    client.client_unpause()
    killed = time.monotonic()
    job = _only_job(sqlite_url)
    n, enqueued = _job_row(sqlite_url, job)
    assert 0 < enqueued < n == 20_000
    before = queued_image_ids(url, env["MELANOMA_QUEUE"])
    r = run_cli(["requeue", job], env)
    assert r.returncode == 0, r.stderr
    recovered = time.monotonic() - killed
    queued = queued_image_ids(url, env["MELANOMA_QUEUE"])
    ids = _all_ids(sqlite_url, job)
    assert set(queued) == set(ids)
    duplicated = len(queued) - len(set(queued))
    # The chunk being written at the kill is the only thing that may be queued twice.
    assert duplicated <= 200 and len(before) >= enqueued
    from tests.faults.conftest import REPORT

    REPORT.append(("producer killed while enqueueing 20,000, requeue", n, len(ids), 0, 0, recovered))


def test_sqlite_disk_full_mid_job(tmp_path, redis_url, fault_model_dir, fault_images, start_worker):
    """The disk holding the SQLite file fills up mid-job: the workers' writes fail and are retried
    (one line in the log), nothing is lost, and the job completes once there is space again."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    worker = None
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)], stderr=subprocess.DEVNULL
        ).returncode
        != 0
    ):
        _missing("a small tmpfs to fill (mounting one needs root)")
    try:
        url = f"sqlite:///{disk / 'melanoma.db'}"
        env = service_env(tmp_path, url, redis_url, fault_model_dir, [fault_images], **fault_settings())
        worker = start_worker(env)
        job = submit(env, fault_images)
        wait_until(url, job, 12)
        filler = disk / "filler"
        # Unbuffered: a buffered file keeps the bytes a full disk refused and raises again on close
        # when the free space was not a multiple of the chunk (seen in CI).
        with open(filler, "wb", buffering=0) as fh:  # take every free byte
            try:
                while True:
                    fh.write(b"\0" * 65536)
            except OSError:
                pass
        full_at = counts(url, job)["done"]
        time.sleep(10)
        assert counts(url, job)["done"] - full_at <= 8, "writes went on with a full disk"
        filler.unlink()
        freed = time.monotonic()
        assert_exactly_once(
            "disk with the SQLite file full for 10 s", url, job, n_images(fault_images), since=freed, within=360
        )
        assert "disk is full" in worker.log()
    finally:
        if worker is not None:
            worker.stop()
        subprocess.run(["umount", "-l", str(disk)], check=False)


@pytest.mark.postgres
@pytest.mark.parametrize("outage_s", [30, pytest.param(360, marks=pytest.mark.long)])
def test_database_unreachable(tmp_path, redis_url, fault_model_dir, fault_images, start_worker, outage_s):
    """PostgreSQL stopped mid-job for 30 s, and for 6 minutes: longer than a batch's retry window
    (5 minutes), after which the batch goes back to the queue and is tried again. Nothing is lost;
    the rows are written once the database is back."""
    pgdir, port = f"/tmp/melanoma-pg-fault-{uuid.uuid4().hex[:6]}", free_port()
    _lib(f'start_postgres "{pgdir}" {port}')
    url = f"postgresql+psycopg://melanoma@127.0.0.1:{port}/melanoma"
    try:
        env = service_env(tmp_path, url, redis_url, fault_model_dir, [fault_images], **fault_settings())
        worker = start_worker(env)
        job = submit(env, fault_images)
        wait_until(url, job, 40)
        _lib(f'stop_postgres "{pgdir}"')
        time.sleep(outage_s)
        bin_dir = subprocess.run(
            ["bash", "-c", f'source "{LIB}"; pg_bindir'], capture_output=True, text=True
        ).stdout.strip()
        run = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run(
            run
            + [
                f"{bin_dir}/pg_ctl",
                "-D",
                f"{pgdir}/data",
                "-l",
                f"{pgdir}/postgres.log",
                "-w",
                "-o",
                f"-c listen_addresses=127.0.0.1 -p {port} -k {pgdir} -c fsync=off",
                "start",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        back = time.monotonic()
        what = "30 s" if outage_s < 60 else f"{outage_s // 60} min (beyond the retry window)"
        assert_exactly_once(
            f"PostgreSQL down for {what} mid-job", url, job, n_images(fault_images), since=back, within=300
        )
        if outage_s > 300:
            assert "batch of" in worker.log() and "failed" in worker.log()  # went back to the queue
    finally:
        _lib(f'stop_postgres "{pgdir}"')
        shutil.rmtree(pgdir, ignore_errors=True)


def test_every_message_delivered_twice(tmp_path, redis_url, sqlite_url, fault_model_dir, fault_images, start_worker):
    from melanoma.pipeline.broker import broker_client, enqueue

    env = service_env(tmp_path, sqlite_url, redis_url, fault_model_dir, [fault_images], **fault_settings())
    job = submit(env, fault_images)
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        ids = c.execute(select(Prediction.id).where(Prediction.job_id == job)).scalars().all()
    enqueue(broker_client(redis_url), env["MELANOMA_QUEUE"], ids)  # re-queued by hand: each image is now queued twice
    assert sorted(queued_image_ids(redis_url, env["MELANOMA_QUEUE"])) == sorted(ids + ids)
    start_worker(env)
    assert_exactly_once("every message delivered twice", sqlite_url, job, n_images(fault_images))


def test_two_workers_on_one_queue(tmp_path, redis_url, sqlite_url, fault_model_dir, fault_images, start_worker):
    env = service_env(tmp_path, sqlite_url, redis_url, fault_model_dir, [fault_images], **fault_settings())
    start_worker(env, "alpha")
    start_worker(env, "beta")
    job = submit(env, fault_images)
    assert_exactly_once("two workers on one queue", sqlite_url, job, n_images(fault_images))
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        hosts = set(c.execute(select(Prediction.worker_host).where(Prediction.job_id == job)).scalars())
    assert {h.split("-")[0] for h in hosts} == {"alpha", "beta"}, hosts  # both took part


def test_trainer_killed_while_publishing(tmp_path, fault_model_dir):
    models = tmp_path / "models"
    shutil.copytree(fault_model_dir, models)
    reg = Registry(models)
    before = reg.current()
    big = tmp_path / "big.keras"  # large enough that the copy is still running when we kill it
    with open(big, "wb") as fh:
        fh.write(os.urandom(1 << 20) * 1536)
    code = (
        "import sys; from melanoma.versions.registry import Registry, ModelMeta\n"
        "Registry(sys.argv[1]).publish(sys.argv[2], ModelMeta(version='half-1', architecture='origin'), "
        "make_current=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(models), str(big)], cwd=REPO)
    deadline = time.monotonic() + 30

    def partial():
        return [p for p in models.iterdir() if p.name.startswith(".partial~") and "half-1" in p.name]

    while not partial():
        assert time.monotonic() < deadline and proc.poll() is None, "publishing never started"
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert reg.current() == before
    assert [m.version for m in reg.versions()] == [m.version for m in Registry(fault_model_dir).versions()]
    from melanoma.ml.predict import smoke_check

    smoke_check(reg, reg.current())
    assert partial()  # the dead publisher's leftovers, invisible to readers
    reg.publish(reg.path(before) / "model.keras", ModelMeta(version="next-1", architecture="origin"))
    assert not partial()  # cleared by the next publish


def test_broken_model_promoted_by_force_mid_job(
    tmp_path, redis_url, sqlite_url, fault_model_dir, fault_images, start_worker
):
    models = tmp_path / "models"
    shutil.copytree(fault_model_dir, models)
    reg = Registry(models)
    good = reg.current()
    env = service_env(tmp_path, sqlite_url, redis_url, models, [fault_images], **fault_settings())
    w = start_worker(env)
    broken = reg.path("broken-1")
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"\x00" * 1000)
    (broken / "metadata.json").write_text(json.dumps({"version": "broken-1", "architecture": "origin"}))
    job = submit(env, fault_images)
    wait_until(sqlite_url, job, 12)
    gate(reg, "broken-1", force=True)  # what `melanoma models promote broken-1 --force` does
    assert counts(sqlite_url, job)["pending"] > 0  # promoted mid-job
    assert_exactly_once("broken model promoted by force mid-job", sqlite_url, job, n_images(fault_images))
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        versions = set(c.execute(select(Prediction.model_version).where(Prediction.job_id == job)).scalars())
    assert versions == {good}
    assert f"broken-1 failed to load, still scoring with {good}" in w.log()
