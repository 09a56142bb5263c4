"""The hostile-input corpus through the real pipeline: unusual but valid images are scored,
everything else gets an error row with a clear reason, no worker crashes, the job completes."""

import csv
import io

import pytest
from sqlalchemy import create_engine

from melanoma.pipeline.broker import broker_client, enqueue
from melanoma.store import db, jobs
from tests.conftest import TEST_IMAGES, run_cli, service_env, submit, wait_complete
from tests.hostile import after_submit, make_corpus

pytestmark = pytest.mark.e2e


def test_hostile_corpus(tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker):
    root = tmp_path / "clinic"
    corpus = make_corpus(root, next((TEST_IMAGES / "nevus").glob("*.jpg")), tmp_path / "outside")
    assert len(corpus) >= 15
    env = service_env(tmp_path, sqlite_url, redis_url, shipped_model_dir, [root])
    job = submit(env, root)  # no worker yet
    after_submit(corpus)

    # A path with ".." that climbs out of the allowed roots, as a hand-crafted row would carry.
    climbing = str(root) + "/../outside/secret.jpg"
    engine = create_engine(sqlite_url)
    with db.session_scope(engine) as s:
        job2, ids2 = jobs.create_job(s, root, [climbing], name="climb")
    enqueue(broker_client(redis_url), env["MELANOMA_QUEUE"], ids2)

    w = start_worker(env, obey_file_modes=True)
    st = wait_complete(env, job)
    assert st["total"] == len(corpus)
    r = run_cli(["results", job, "--format", "csv"], env)
    rows = {row["image_path"]: row for row in csv.DictReader(io.StringIO(r.stdout))}
    assert set(rows) == set(corpus)
    for path, kind in corpus.items():
        row = rows[path]
        assert row["status"] == kind.expect, (kind.name, row["status"], row["error"])
        if kind.expect == "error":
            assert kind.reason in row["error"], (kind.name, row["error"])
            assert "\n" not in row["error"] and len(row["error"]) < 200
        else:
            assert row["predicted_class"] and abs(sum(float(row[c]) for c in row if c.startswith("p_")) - 1) < 1e-4

    wait_complete(env, job2)
    r = run_cli(["results", job2, "--format", "json"], env)
    assert '"status": "error"' in r.stdout and "outside the allowed roots" in r.stdout
    assert w.proc.poll() is None, "the worker died"
    assert "Traceback" not in w.log()
