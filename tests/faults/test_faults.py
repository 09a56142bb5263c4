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

import pytest
import redis
from sqlalchemy import create_engine, select

from melanoma.promotion import gate
from melanoma.registry import ModelMeta, Registry
from melanoma.schema import Prediction
from tests.conftest import LIB, REPO, free_port, queued_image_ids, service_env
from tests.e2e.test_pipeline import submit
from tests.faults.conftest import assert_exactly_once, counts, fault_settings, wait_until

pytestmark = pytest.mark.e2e


def n_images(folder) -> int:
    return sum(1 for _ in folder.rglob("*.jpg"))


def test_worker_killed_mid_batch(tmp_path, redis_url, sqlite_url, shipped_model_dir, fault_images, start_worker):
    """kill -9 (OOM killer, node lost) with a replacement started at once: the dead worker's
    prefetched messages come back through the heartbeat reclaim, not after the one-hour visibility
    timeout. Done when every row is done within 2 minutes of the kill."""
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [fault_images], **fault_settings())
    first = start_worker(env, "victim")
    job = submit(env, fault_images)
    wait_until(sqlite_url, job, 12)
    os.killpg(first.proc.pid, signal.SIGKILL)  # the main process and its pool child, no goodbye
    killed = time.monotonic()
    first.proc.wait()
    assert counts(sqlite_url, job)["pending"] > 0
    replacement = start_worker(env, "replacement")
    assert_exactly_once("worker killed (kill -9), replacement started", sqlite_url, job, n_images(fault_images),
                        since=killed, within=120)
    assert "messages of dead workers back on queue" in replacement.log()


def test_worker_stopped_with_sigterm_mid_job(tmp_path, redis_url, sqlite_url, shipped_model_dir, fault_images,
                                             start_worker):
    """SIGTERM, as Kubernetes and compose stop a container: the worker hands its unacknowledged
    messages back as it stops (kombu restores them at shutdown), so a second worker finishes the
    job at once; nothing is reclaimed, nothing waits for a timeout."""
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [fault_images], **fault_settings())
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
    assert_exactly_once("worker stopped (SIGTERM) mid-job", sqlite_url, job, n_images(fault_images),
                        since=stopped, within=120)
    assert "messages of dead workers back on queue" not in second.log()


def _lib(call: str) -> None:
    subprocess.run(["bash", "-c", f'source "{LIB}"; {call}'], check=True)


def test_redis_restarted_mid_job(tmp_path, sqlite_url, shipped_model_dir, fault_images, start_worker):
    # As in docker-compose.yml: append-only file, fsync every second.
    rdir, port = tmp_path / "redis", free_port()
    rdir.mkdir()
    cmd = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--dir", str(rdir), "--appendonly", "yes",
           "--appendfsync", "everysec", "--save", "", "--daemonize", "yes", "--pidfile", str(rdir / "redis.pid")]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    for _ in range(50):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.1)
    try:
        env = service_env(tmp_path, sqlite_url, url, shipped_model_dir, [fault_images], **fault_settings())
        start_worker(env)
        job = submit(env, fault_images)
        wait_until(sqlite_url, job, 40)
        client.shutdown()  # writes the AOF and exits, as `docker compose restart redis` would
        time.sleep(2)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        assert_exactly_once("Redis restarted mid-job (AOF)", sqlite_url, job, n_images(fault_images))
    finally:
        try:
            redis.Redis.from_url(url).shutdown(nosave=True)
        except redis.RedisError:
            pass


@pytest.mark.postgres
def test_database_unreachable_for_30_seconds(tmp_path, redis_url, shipped_model_dir, fault_images, start_worker):
    pgdir, port = f"/tmp/melanoma-pg-fault-{uuid.uuid4().hex[:6]}", free_port()
    _lib(f'start_postgres "{pgdir}" {port}')
    url = f"postgresql+psycopg://melanoma@127.0.0.1:{port}/melanoma"
    try:
        env = service_env(tmp_path, url, redis_url, shipped_model_dir, [fault_images], **fault_settings())
        start_worker(env)
        job = submit(env, fault_images)
        wait_until(url, job, 40)
        _lib(f'stop_postgres "{pgdir}"')
        time.sleep(30)
        bin_dir = subprocess.run(["bash", "-c", f'source "{LIB}"; pg_bindir'], capture_output=True,
                                 text=True).stdout.strip()
        run = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
        subprocess.run(run + [f"{bin_dir}/pg_ctl", "-D", f"{pgdir}/data", "-l", f"{pgdir}/postgres.log", "-w",
                              "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {pgdir} -c fsync=off", "start"],
                       check=True, stdout=subprocess.DEVNULL)
        assert_exactly_once("PostgreSQL down for 30 s mid-job", url, job, n_images(fault_images))
    finally:
        _lib(f'stop_postgres "{pgdir}"')
        shutil.rmtree(pgdir, ignore_errors=True)


def test_every_message_delivered_twice(tmp_path, redis_url, sqlite_url, shipped_model_dir, fault_images,
                                       start_worker):
    from melanoma.queue import enqueue, make_celery
    from melanoma.settings import Settings

    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [fault_images], **fault_settings())
    job = submit(env, fault_images)
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        ids = c.execute(select(Prediction.id).where(Prediction.job_id == job)).scalars().all()
    enqueue(make_celery(Settings.from_env(env)), ids)  # re-queued by hand: each image is now queued twice
    assert sorted(queued_image_ids(redis_url, env["MELANOMA_QUEUE"])) == sorted(ids + ids)
    start_worker(env)
    assert_exactly_once("every message delivered twice", sqlite_url, job, n_images(fault_images))


def test_two_workers_on_one_queue(tmp_path, redis_url, sqlite_url, shipped_model_dir, fault_images, start_worker):
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [fault_images], **fault_settings())
    start_worker(env, "alpha")
    start_worker(env, "beta")
    job = submit(env, fault_images)
    assert_exactly_once("two workers on one queue", sqlite_url, job, n_images(fault_images))
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        hosts = set(c.execute(select(Prediction.worker_host).where(Prediction.job_id == job)).scalars())
    assert {h.split("-")[0] for h in hosts} == {"alpha", "beta"}, hosts  # both took part


def test_trainer_killed_while_publishing(tmp_path, shipped_model_dir):
    models = tmp_path / "models"
    shutil.copytree(shipped_model_dir, models)
    reg = Registry(models)
    before = reg.current()
    big = tmp_path / "big.keras"  # large enough that the copy is still running when we kill it
    with open(big, "wb") as fh:
        fh.write(os.urandom(1 << 20) * 1536)
    code = ("import sys; from melanoma.registry import Registry, ModelMeta\n"
            "Registry(sys.argv[1]).publish(sys.argv[2], ModelMeta(version='half-1', architecture='origin'), "
            "make_current=True)\n")
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
    assert [m.version for m in reg.versions()] == [m.version for m in Registry(shipped_model_dir).versions()]
    from melanoma.promotion import smoke_check

    smoke_check(reg, reg.current())
    assert partial()  # the dead publisher's leftovers, invisible to readers
    reg.publish(reg.path(before) / "model.keras", ModelMeta(version="next-1", architecture="origin"))
    assert not partial()  # cleared by the next publish


def test_broken_model_promoted_by_force_mid_job(tmp_path, redis_url, sqlite_url, shipped_model_dir, fault_images,
                                                start_worker):
    models = tmp_path / "models"
    shutil.copytree(shipped_model_dir, models)
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
