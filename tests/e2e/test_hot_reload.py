"""A running worker picks up a newly promoted version between batches, and survives a broken one."""

import json
import shutil

import pytest

from melanoma.versions.registry import Registry
from tests.conftest import copy_images, results_csv, run_cli, service_env, submit, wait_complete

pytestmark = pytest.mark.e2e


def test_worker_switches_to_promoted_version_and_keeps_it_when_next_is_broken(
    tmp_path, redis_url, sqlite_url, shipped_model_dir, start_worker
):
    models = tmp_path / "models"
    shutil.copytree(shipped_model_dir, models)
    reg = Registry(models)
    v1 = reg.current()
    folder = tmp_path / "imgs"
    copy_images(folder, 2, ["melanoma", "nevus", "vascular lesion"])
    env = service_env(tmp_path, sqlite_url, redis_url, models, [folder])
    w = start_worker(env)

    job_a = submit(env, folder, "--wait", "--timeout", "120")
    assert {r["model_version"] for r in results_csv(env, job_a)} == {v1}

    # v2: the same network with an operating point of 0, so every row is flagged
    v2 = "origin-v2-test"
    shutil.copytree(reg.path(v1), reg.path(v2))
    meta = json.loads((reg.path(v2) / "metadata.json").read_text())
    meta.update(version=v2, melanoma_threshold=0.0)
    (reg.path(v2) / "metadata.json").write_text(json.dumps(meta))
    r = run_cli(["models", "promote", v2], env)
    assert r.returncode == 0, r.stderr
    job_b = submit(env, folder, "--wait", "--timeout", "120")
    rows_b = results_csv(env, job_b)
    assert {r["model_version"] for r in rows_b} == {v2}
    assert {r["melanoma_flag"] for r in rows_b} == {"1"}

    # v3 is broken; promoting it needs --force, and the worker keeps v2
    broken = reg.path("broken-v3")
    broken.mkdir()
    (broken / "model.keras").write_bytes(b"garbage")
    (broken / "metadata.json").write_text(json.dumps({"version": "broken-v3", "architecture": "origin"}))
    r = run_cli(["models", "promote", "broken-v3"], env)
    assert r.returncode == 1 and "not promoted" in r.stderr and reg.current() == v2
    r = run_cli(["models", "promote", "broken-v3", "--force"], env)
    assert r.returncode == 0 and reg.current() == "broken-v3"
    job_c = submit(env, folder, "--wait", "--timeout", "120")
    assert {r["model_version"] for r in results_csv(env, job_c)} == {v2}
    assert wait_complete(env, job_c)["failed"] == 0
    assert "broken-v3 failed to load, still scoring with " + v2 in w.log()
