"""End to end with real processes: producer CLI -> redis-server -> Celery worker -> SQLite / PostgreSQL."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import numpy as np
import pytest
from sqlalchemy import create_engine, func, select

from melanoma.core import images
from melanoma.core.decision import predicted_classes
from melanoma.core.labels import CLASS_NAMES, PROB_COLUMNS
from melanoma.store.schema import Prediction
from melanoma.versions.registry import Registry
from tests.conftest import (
    copy_images,
    queued_image_ids,
    results_csv,
    run_cli,
    service_env,
    submit,
    wait_complete,
)

pytestmark = pytest.mark.e2e


def add_bad_files(folder, outside):
    """Files that must each get an error row, with the reason we expect."""
    bad = folder / "bad"
    bad.mkdir()
    good = next(p for p in folder.rglob("*.jpg"))
    (bad / "random.jpg").write_bytes(os.urandom(3000))
    (bad / "notes.png").write_text("this is a text file\n")
    (bad / "empty.JPG").write_bytes(b"")
    (bad / "truncated.jpeg").write_bytes(good.read_bytes()[:2000])
    secret = outside / "secret.jpg"
    shutil.copyfile(good, secret)
    (bad / "escape.jpg").symlink_to(secret)
    return {
        "random.jpg": "not an image",
        "notes.png": "not an image",
        "empty.JPG": "empty file",
        "truncated.jpeg": "corrupt image",
        "escape.jpg": "outside the allowed roots",
    }


def check_rows(rows, expected_bad, version, threshold=None, weights=None):
    """Every image has its row: bad files an error with the reason, the others the class the
    version gives (its decision ``weights``), that class's probability and the flag at ``threshold``."""
    ok = [r for r in rows if r["status"] == "ok"]
    errors = {os.path.basename(r["image_path"]): r for r in rows if r["status"] == "error"}
    assert not [r for r in rows if r["status"] == "pending"]
    assert set(errors) == set(expected_bad)
    for name, reason in expected_bad.items():
        assert reason in errors[name]["error"], (name, errors[name]["error"])
        assert "\n" not in errors[name]["error"]
    for r in ok:
        probs = np.array([float(r[c]) for c in PROB_COLUMNS])
        assert r["predicted_class"] in CLASS_NAMES
        assert abs(probs.sum() - 1) < 1e-4
        given = int(predicted_classes(probs, weights))
        assert r["predicted_class"] == CLASS_NAMES[given]
        assert float(r["confidence"]) == pytest.approx(probs[given], abs=1e-6)
        assert r["model_version"] == version
        if threshold is None:
            assert r["melanoma_flag"] == ""
        else:
            assert r["melanoma_flag"] == ("1" if float(r["p_melanoma"]) >= threshold else "0")
    for r in errors.values():
        assert r["melanoma_flag"] == ""
    return ok


def test_500_real_images_and_bad_files_on_sqlite(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    folder, outside = tmp_path / "clinic", tmp_path / "elsewhere"
    outside.mkdir()
    copied = copy_images(folder, 56)
    for extra in copied[500:]:
        extra.unlink()
    expected_bad = add_bad_files(folder, outside)
    (folder / "README.txt").write_text("not an image extension: ignored")
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder])
    version = Registry(shipped_model_dir).current()
    threshold = Registry(shipped_model_dir).meta(version).melanoma_threshold

    start_worker(env)
    job = submit(env, folder, "--name", "five hundred", "--wait", "--timeout", "400")
    st = wait_complete(env, job)
    assert st["total"] == 500 + len(expected_bad)
    assert st["done"] == 500 and st["failed"] == len(expected_bad) and st["pending"] == 0
    assert sum(st["classes"].values()) == 500

    rows = results_csv(env, job)
    assert len(rows) == 505
    ok = check_rows(rows, expected_bad, version, threshold, Registry(shipped_model_dir).meta(version).decision_weights)
    assert len(ok) == 500

    # The worker gives what an in-process call of the model gives, image for image.
    from melanoma.ml.predict import Predictor

    predictor = Predictor(Registry(shipped_model_dir), batch_size=8)
    sample = ok[::25]
    expected = predictor.predict(np.stack([images.load(r["image_path"], predictor.input_size) for r in sample]))
    got = np.array([[float(r[c]) for c in PROB_COLUMNS] for r in sample])
    np.testing.assert_allclose(got, expected, atol=1e-5)

    # Filters: --class alone keeps the predicted class; with --min-prob, that class's probability.
    r = run_cli(["results", job, "--format", "json", "--class", "melanoma", "--min-prob", "0.5"], env)
    assert r.returncode == 0, r.stderr
    mel = json.loads(r.stdout)
    assert all(m["p_melanoma"] >= 0.5 for m in mel)
    assert len(mel) == sum(1 for x in ok if float(x["p_melanoma"]) >= 0.5)

    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        hosts = c.execute(select(Prediction.worker_host).where(Prediction.job_id == job).distinct()).scalars().all()
    assert hosts and all(hosts)

    # Re-submitting the folder makes a new job whose images reuse the earlier predictions.
    job2 = submit(env, folder, "--wait", "--timeout", "300")
    assert job2 != job
    rows2 = results_csv(env, job2)
    assert [r[c] for r in rows2 for c in PROB_COLUMNS] == [r[c] for r in rows for c in PROB_COLUMNS]
    with engine.connect() as c:
        reused = c.execute(select(func.count()).where(Prediction.job_id == job2, Prediction.reused)).scalar()
    assert reused == 500


def test_a_worker_scores_at_the_scales_it_is_given(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    """MELANOMA_TTA_SCALES reaches the worker's model: its rows are what the predictor gives at those
    scales and say so; a worker that scores plainly does not reuse them, and reuses its own."""
    from melanoma.ml.predict import Predictor

    reg = Registry(shipped_model_dir)
    if reg.meta(reg.current()).architecture == "origin":
        pytest.skip("the current version's network takes one input size")
    folder = tmp_path / "imgs"
    copy_images(folder, 2, ["melanoma", "nevus", "basal cell carcinoma"])
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder])
    worker = start_worker({**env, "MELANOMA_TTA_SCALES": "1,1.18"})
    assert "test-time augmentation: views 1, scales 1,1.18" in worker.log()
    first = submit(env, folder, "--wait", "--timeout", "300")
    worker.stop()
    start_worker(env, name="plain")
    second = submit(env, folder, "--wait", "--timeout", "300")
    third = submit(env, folder, "--wait", "--timeout", "300")

    two, one = Predictor(reg, batch_size=8, scales=(1, 1.18)), Predictor(reg, batch_size=8)
    engine = create_engine(sqlite_url)
    for job, predictor, test_time, reused in (
        (first, two, "views 1, scales 1,1.18", False),
        (second, one, None, False),  # scored again: the first job's rows were scored another way
        (third, one, None, True),
    ):
        rows = results_csv(env, job)
        assert len(rows) == 6 and all(r["status"] == "ok" for r in rows)
        got = np.array([[float(r[c]) for c in PROB_COLUMNS] for r in rows])
        x = np.stack([images.load(r["image_path"], predictor.input_size) for r in rows])
        np.testing.assert_allclose(got, predictor.predict(x), atol=1e-5)
        with engine.connect() as c:
            stored = c.execute(select(Prediction.test_time, Prediction.reused).where(Prediction.job_id == job)).all()
        assert set(stored) == {(test_time, reused)}, job
    assert np.abs(two.predict(x) - one.predict(x)).max() > 1e-3  # the second scale really counted


def test_message_delivered_twice_leaves_one_row(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    from melanoma.pipeline.broker import broker_client, enqueue

    folder = tmp_path / "imgs"
    copy_images(folder, 3)
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder])
    job = submit(env, folder)  # no worker yet: the messages wait in Redis
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        ids = c.execute(select(Prediction.id).where(Prediction.job_id == job)).scalars().all()
    client = broker_client(redis_url)
    assert enqueue(client, env["MELANOMA_QUEUE"], ids) == len(ids)  # every message now sits in the queue twice

    w = start_worker(env)
    st = wait_complete(env, job)
    assert st["total"] == len(ids) and st["done"] == len(ids)
    with engine.connect() as c:
        n = c.execute(select(func.count()).select_from(Prediction).where(Prediction.job_id == job)).scalar()
        first = c.execute(select(Prediction.id, Prediction.scored_at).order_by(Prediction.id)).all()
        writes = c.execute(select(Prediction.writes).where(Prediction.job_id == job)).scalars().all()
    assert n == len(ids)
    # Each image scored and written once, though its message came twice.
    assert sorted(writes) == [1] * len(ids)

    # Deliver them all once more after scoring: the worker sees them and changes nothing.
    def skipped() -> int:
        return sum(int(n) for n in re.findall(r"(\d+) already done", w.log()))

    before = skipped()
    enqueue(client, env["MELANOMA_QUEUE"], ids)
    deadline = time.monotonic() + 60
    while skipped() < before + len(ids):
        assert time.monotonic() < deadline, w.log()[-2000:]
        time.sleep(0.3)
    with engine.connect() as c:
        again = c.execute(select(Prediction.id, Prediction.scored_at).order_by(Prediction.id)).all()
        writes = c.execute(select(Prediction.writes).where(Prediction.job_id == job)).scalars().all()
    assert again == first
    assert sorted(writes) == [1] * len(ids)


@pytest.mark.postgres
def test_real_images_on_postgresql(tmp_path, redis_url, pg_database, shipped_model_dir, start_worker):
    folder, outside = tmp_path / "clinic", tmp_path / "elsewhere"
    outside.mkdir()
    copy_images(folder, 3)
    expected_bad = add_bad_files(folder, outside)
    n_good = len(list(folder.rglob("*.jpg"))) - 2  # random.jpg and escape.jpg are not good
    env = service_env(tmp_path, pg_database, redis_url, shipped_model_dir, [folder])
    start_worker(env)
    job = submit(env, folder, "--wait", "--timeout", "300")
    rows = results_csv(env, job)
    reg = Registry(shipped_model_dir)
    meta = reg.meta(reg.current())
    ok = check_rows(rows, expected_bad, meta.version, meta.melanoma_threshold, meta.decision_weights)
    assert len(ok) == n_good


def test_requeue_after_the_broker_lost_the_messages(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    import redis

    folder = tmp_path / "imgs"
    copy_images(folder, 2)
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder])
    job = submit(env, folder)
    queue = redis.Redis.from_url(redis_url)
    assert len(queued_image_ids(redis_url, env["MELANOMA_QUEUE"])) == 18  # two images of nine classes
    queue.delete(env["MELANOMA_QUEUE"])  # a Redis without persistence restarted
    gone = sorted(folder.rglob("*.jpg"))[0]
    gone.unlink()  # and a file disappeared between submit and scoring
    start_worker(env)
    r = run_cli(["requeue", job], env)
    assert r.returncode == 0, r.stderr
    assert "18 pending images queued again" in r.stderr
    st = wait_complete(env, job, timeout=120)
    assert st["done"] == 17 and st["failed"] == 1
    rows = {r["image_path"]: r for r in results_csv(env, job)}
    assert rows[str(gone)]["status"] == "error" and rows[str(gone)]["error"] == "file not found"


def test_rescore_makes_a_new_job_and_reuses_same_version_predictions(
    tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker
):
    folder = tmp_path / "imgs"
    copy_images(folder, 2, ["melanoma", "nevus", "vascular lesion"])
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder])
    start_worker(env)
    first = submit(env, folder)
    wait_complete(env, first, timeout=120)
    r = run_cli(["rescore", first[:8]], env)
    assert r.returncode == 0, r.stderr
    second = r.stdout.strip().splitlines()[-1]
    assert second != first
    wait_complete(env, second, timeout=120)
    engine = create_engine(sqlite_url)
    with engine.connect() as c:
        rows = c.execute(select(Prediction.image_path, Prediction.reused).where(Prediction.job_id == second)).all()
    assert len(rows) == 6 and all(reused for _, reused in rows)  # same content, same version: no model run
    listed = json.loads(run_cli(["jobs", "--format", "json"], env).stdout)
    assert [j["id"] for j in listed] == [second, first]
    assert listed[0]["name"] == f"rescore of {first[:12]}" and listed[0]["done"] == 6


def test_worker_metrics_match_the_rows(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    """A worker with MELANOMA_METRICS_PORT serves Prometheus metrics whose counters match the rows
    it wrote (scored, reused, errors), with its model version and the queue depth; the temporary
    folder behind them goes when the worker stops."""
    import re
    import urllib.request

    from tests.conftest import free_port

    folder = tmp_path / "imgs"
    copy_images(folder, 3, ["melanoma", "nevus"])
    (folder / "nevus" / "broken.jpg").write_bytes(b"not an image")
    port = free_port()
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = service_env(
        tmp_path, sqlite_url, redis_url, shipped_model_dir, [folder], MELANOMA_METRICS_PORT=str(port), TMPDIR=str(temp)
    )
    worker = start_worker(env)
    wait_complete(env, submit(env, folder), timeout=120)
    wait_complete(env, submit(env, folder), timeout=120)  # the same images again: reused
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()

    def value(pattern: str) -> float:
        found = re.search(pattern + r" ([0-9.e+]+)$", text, flags=re.M)
        assert found, pattern
        return float(found.group(1))

    assert value(r'melanoma_images_scored_total\{status="ok"\}') == 6
    assert value(r'melanoma_images_scored_total\{status="reused"\}') == 6
    assert value(r'melanoma_images_scored_total\{status="error"\}') == 2
    assert value(r"melanoma_batch_size_sum") == 14
    assert value(r"melanoma_queue_messages") == 0
    version = Registry(shipped_model_dir).current()
    assert re.search(rf'melanoma_model_info\{{[^}}]*version="{re.escape(version)}"[^}}]*\}} 1\.0', text)
    assert value(r"melanoma_last_batch_success_timestamp_seconds") > time.time() - 300
    assert [p.name for p in temp.glob("melanoma-metrics-*/*.db")], "the samples are not in the temporary folder"
    worker.stop()
    assert list(temp.glob("melanoma-metrics-*")) == []
